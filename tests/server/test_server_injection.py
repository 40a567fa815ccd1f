"""E7 over HTTP: hostile strings in every read-API filter and path match literally, change
nothing, and never cause a 500; ``limit`` is capped with a 422."""

from __future__ import annotations

import contextlib
import re
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from server_helpers import Api, span_record

from bitfab.store import SQLiteStore, Store, open_store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import pg

PAYLOADS = [
    "' OR 1=1 --",
    '"; DROP TABLE spans; --',
    "%",
    "_",
    "\\",
    "\x00",
    "\u2019\u201c\u201d\u2018",
    "$.rawSpan['a\"b']",
    "x" * 10_000,
    "1; DELETE FROM spans",
    "-1",
    "9" * 30,
]
QUERIES = [
    ("/api/v1/traces", "key"),
    ("/api/v1/traces", "search"),
    ("/api/v1/traces", "limit"),
    ("/api/v1/traces", "before_us"),
    ("/api/v1/traces", "errors"),
    ("/api/v1/traces", "include_replays"),
    ("/api/v1/runs", "key"),
    ("/api/v1/runs", "limit"),
    ("/api/sdk/replay/spanTree/base-1", "includeOutputs"),
]
PATHS = [
    "/api/v1/traces/{}",
    "/api/v1/spans/{}",
    "/api/v1/runs/{}",
    "/api/sdk/externalSpans/{}",
    "/api/sdk/replay/spanTree/{}",
]


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgres", marks=pytest.mark.skipif(pg.PG_URL is None, reason=pg.SKIP_REASON)
        ),
    ]
)
def store(request: pytest.FixtureRequest, db: Path) -> Iterator[Store]:
    """This module's server runs on each backend (the other server tests use SQLite)."""
    if request.param == "sqlite":
        opened: Store = SQLiteStore(db, busy_timeout=0.3)
        yield opened
        opened.close()
        return
    with pg.fresh_schema() as (url, _):
        opened = open_store(url)
        yield opened
        opened.close()


def catalog(store: Store) -> list[tuple[Any, ...]]:
    if isinstance(store, SQLiteStore):
        with contextlib.closing(sqlite3.connect(store.path)) as conn:
            return conn.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name"
            ).fetchall()
    return pg.catalog(store.schema)  # type: ignore[attr-defined]


@pytest.fixture
def seeded(api: Api, store: Store) -> Api:
    hostile = [
        span_record(f"h{n}", f"th{n}", key=p[:400], input=[p]) for n, p in enumerate(PAYLOADS)
    ]
    base = [
        span_record("base-1", "tb1", input=["alpha 100%"]),
        span_record("base-2", "tb2", input=["beta"]),
    ]
    api.post("/api/bitfab/v1/ingest", json={"spans": base + hostile})
    api.post("/api/sdk/replay/start", json={"traceFunctionKey": "triage"})
    return api


def test_hostile_filters_and_ids_change_nothing_and_never_500(seeded: Api, store: Store) -> None:
    """Every payload in every query parameter and path id: 2xx/404/422, schema and rows intact."""
    schema = catalog(store)
    rows = store.count_spans()
    statuses = set()
    for payload in PAYLOADS:
        for path, name in QUERIES:
            answer = seeded.get(path, params={name: payload})
            statuses.add(answer.status_code)
            assert answer.status_code in (200, 422), (path, name, payload[:20], answer.text)
        for template in PATHS:
            answer = seeded.get(template.format(quote(payload, safe="")))
            assert answer.status_code in (200, 404), (template, payload[:20], answer.text)
    assert catalog(store) == schema
    assert store.count_spans() == rows
    assert statuses == {200, 422}


@pytest.mark.parametrize("payload", [p for p in PAYLOADS if len(p) <= 1000], ids=repr)
def test_search_and_key_match_literally(seeded: Api, payload: str) -> None:
    """A payload as search term or key finds exactly the trace that holds it."""
    index = PAYLOADS.index(payload)
    for name, value in (("search", payload), ("key", payload[:400])):
        answer = seeded.get("/api/v1/traces", params={name: value})
        found = [t["span_id"] for t in answer.json()["traces"]]
        if payload == "%" and name == "search":
            assert sorted(found) == sorted([f"h{index}", "base-1"])
        else:
            assert found == [f"h{index}"], (name, payload, found)


def test_limit_is_capped_with_a_422(seeded: Api) -> None:
    """limit above the maximum (1000), zero, negative or not a number: 422 naming query.limit."""
    for value in ("1001", "0", "-5", "ten", "1e3", "99999999999999999999999"):
        answer = seeded.get("/api/v1/traces", params={"limit": value})
        assert answer.status_code == 422
        assert answer.json()["fields"][0]["path"] == "query.limit"
    assert seeded.get("/api/v1/traces", params={"limit": "1000"}).status_code == 200


def test_paging_with_before_us(seeded: Api) -> None:
    """next_before_us pages through traces without repeats."""
    seen: list[str] = []
    before = None
    while True:
        params: dict[str, Any] = {"limit": 4}
        if before is not None:
            params["before_us"] = before
        page = seeded.get("/api/v1/traces", params=params).json()
        seen += [t["trace_id"] for t in page["traces"]]
        before = page["next_before_us"]
        if before is None:
            break
    assert len(seen) == len(set(seen))


def test_no_server_module_builds_sql() -> None:
    """The server never writes SQL: every statement lives in the store's constant strings."""
    root = Path(__file__).resolve().parents[2] / "bitfab" / "server"
    sql = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|DROP)\b\s+\w")
    for path in root.glob("*.py"):
        assert not sql.search(path.read_text()), path
