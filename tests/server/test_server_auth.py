"""API keys (RELIABILITY.md E6): scopes, the same 401 for every bad key, hashing."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import sqlite3
import time
from typing import Any

import pytest
from server_helpers import Api, span_record

from bitfab.exceptions import StoreError
from bitfab.store import SQLiteStore
from bitfab.store.keys import hash_secret, new_api_key

RECORDING = [
    ("POST", "/api/sdk/otel/v1/traces", {"resourceSpans": []}),
    ("POST", "/api/sdk/externalSpans", span_record("s", "t")),
    ("POST", "/api/sdk/externalTraces", {"id": "t"}),
    ("POST", "/api/bitfab/v1/ingest", {"spans": []}),
]
READING = [
    ("POST", "/api/sdk/replay/start", {"traceFunctionKey": "triage", "dryRun": True}),
    ("POST", "/api/sdk/replay/status", {"expectedSpanCounts": {}}),
    ("GET", "/api/sdk/replay/spanTree/s", None),
    ("GET", "/api/sdk/externalSpans/s?view=replay", None),
    ("GET", "/api/v1/functions", None),
    ("GET", "/api/v1/traces", None),
    ("GET", "/api/v1/runs", None),
]


def call(api: Api, method: str, path: str, body: Any) -> int:
    return api.request(method, path, json=body).status_code


@pytest.mark.parametrize(
    ("key", "recording", "reading"),
    [
        (None, 401, 401),
        ("bfk_wrong", 401, 401),
        ("not-even-a-bitfab-key", 401, 401),
        ("revoked", 401, 401),
        ("read", 403, None),
        ("ingest", None, 403),
        ("all", None, None),
    ],
    ids=["none", "wrong", "malformed", "revoked", "read-key", "ingest-key", "all-key"],
)
def test_the_key_matrix(
    make_api: Any, key: str | None, recording: int | None, reading: int | None
) -> None:
    """E6: no/wrong/revoked key 401 everywhere; a read key can't record, an ingest key can't read."""
    api = make_api(key)
    for method, path, body in RECORDING:
        status = call(api, method, path, body)
        assert status == recording if recording else status < 400, (path, status)
    for method, path, body in READING:
        status = call(api, method, path, body)
        assert status == reading if reading else status in (200, 404), (path, status)


def test_a_401_never_tells_which_keys_exist(make_api: Any) -> None:
    """E6: missing, unknown and revoked keys get the very same answer."""
    bodies = []
    for key in (None, "bfk_wrong", "revoked"):
        answer = make_api(key).get("/api/v1/functions")
        assert answer.headers["www-authenticate"] == "Bearer"
        body = answer.json()
        del body["requestId"]
        bodies.append(body)
    assert bodies[0] == bodies[1] == bodies[2]


def test_health_and_the_api_description_need_no_key(make_api: Any) -> None:
    """/healthz and /api/v1/openapi.json are public; nothing else is."""
    api = make_api(None)
    assert api.get("/healthz").json() == {"ok": True}
    assert api.get("/api/v1/openapi.json").json()["openapi"].startswith("3.")


def test_without_auth_no_key_is_needed(make_api: Any) -> None:
    """create_app(auth=False): every endpoint answers without a key."""
    api = make_api(None, auth=False)
    for method, path, body in RECORDING + READING:
        assert call(api, method, path, body) in (200, 404)


def test_only_a_hash_of_the_key_is_stored(store: SQLiteStore, keys: dict[str, str]) -> None:
    """The secret appears nowhere in the database file; its SHA-256 does."""
    secret = keys["all"]
    assert secret.startswith("bfk_") and len(secret) == 4 + 43
    with contextlib.closing(sqlite3.connect(store.path)) as conn:
        dump = "\n".join(conn.iterdump())
    assert secret not in dump
    assert hashlib.sha256(secret.encode()).hexdigest() in dump


def test_using_a_key_records_when(make_api: Any, store: SQLiteStore) -> None:
    """last_used_at is written (in the background) on first use."""
    api = make_api("read")
    api.get("/api/v1/functions")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        used = {k.name: k.last_used_at for k in store.api_keys()}
        if used["read"] is not None:
            break
        time.sleep(0.02)
    assert used["read"] is not None and used["all"] is None


def test_the_store_keeps_keys_by_hash_and_revokes_once(store: SQLiteStore) -> None:
    """create/find/list/revoke/touch: a hash finds its key; revoking twice keeps the first time;
    the same secret or id twice is refused."""
    key, secret = new_api_key(name="k", scope="read", created_at="2026-01-01T00:00:00.000000Z")
    store.create_api_key(key)
    assert store.find_api_key(hash_secret(secret)) == key
    assert store.find_api_key(hash_secret(secret + "x")) is None
    with pytest.raises(StoreError, match="already exists"):
        store.create_api_key(key)
    first = store.revoke_api_key(key.id, revoked_at="2026-02-01T00:00:00.000000Z")
    again = store.revoke_api_key(key.id, revoked_at="2026-03-01T00:00:00.000000Z")
    assert first == again == dataclasses.replace(key, revoked_at="2026-02-01T00:00:00.000000Z")
    assert first is not None and not first.active
    assert store.revoke_api_key("nope") is None
    store.touch_api_key(key.id, used_at="2026-02-02T00:00:00.000000Z")
    assert [k.last_used_at for k in store.api_keys()] == ["2026-02-02T00:00:00.000000Z"]
    with pytest.raises(ValueError, match="scope must be one of ingest, read, all"):
        new_api_key(scope="admin")
