"""Bad requests (RELIABILITY.md E1-E5, E11): 4xx with a field or a reason, never a 500 or a leak."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from server_helpers import Api, span_record

from bitfab.server import Limits
from bitfab.store import SQLiteStore

INGEST = "/api/bitfab/v1/ingest"
JSON = {"Content-Type": "application/json"}
MIB = 1024 * 1024


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b'{"spans": [',
        b"",
        b"nul",
        b'{"a": NaN}',
        b'{"a": -Infinity}',
        b"\xff\xfe{}",
        b"[" * 100_000,
    ],
    ids=["brace", "truncated", "empty", "garbage", "nan", "infinity", "not-utf8", "deep"],
)
def test_malformed_json_is_400_and_stores_nothing(
    api: Api, store: SQLiteStore, body: bytes
) -> None:
    """E1: the parser's message with its position; nothing stored."""
    answer = api.post(INGEST, content=body, headers=JSON)
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_json")
    assert store.count_spans() == 0


def test_the_json_error_names_the_position(api: Api) -> None:
    """E1: the detail says where the JSON broke."""
    answer = api.post(INGEST, content=b'{"spans": [1,]}', headers=JSON)
    # The column differs between Python versions (3.13 points at the comma, not after it).
    assert re.search(r"line 1 column 1[34]\b", answer.json()["detail"])


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda r: r.pop("id"), "id"),
        (lambda r: r.update(traceId=12), "traceId"),
        (lambda r: r["rawSpan"].pop("id"), "rawSpan.id"),
        (lambda r: r["rawSpan"].update(id="other"), "rawSpan.id"),
        (lambda r: r["rawSpan"].pop("trace_id"), "rawSpan.trace_id"),
        (lambda r: r["rawSpan"].update(started_at="99999-01-01T00:00:00Z"), "rawSpan.started_at"),
        (lambda r: r["rawSpan"].update(ended_at="2026-11-27T09:59:59Z"), "rawSpan.ended_at"),
        (lambda r: r["rawSpan"].update(parent_id=["x"]), "rawSpan.parent_id"),
        (lambda r: r["rawSpan"].update(span_data="text"), "rawSpan.span_data"),
        (lambda r: r.update(rawSpan=None), "rawSpan"),
        (lambda r: r.update(testRunId="r" * 201), "testRunId"),
        (lambda r: r.update(traceFunctionKey={"k": 1}), "traceFunctionKey"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_invalid_records_are_rejected_with_the_field_path(
    api: Api, store: SQLiteStore, change: Any, path: str
) -> None:
    """E2: 422 naming the field for one record; per-record rejection in a batch."""
    record = span_record("s", "t")
    change(record)
    single = api.post("/api/sdk/externalSpans", json=record)
    assert single.status_code == 422
    assert single.json()["fields"][0]["path"] == f"body.{path}"
    batch = api.post(INGEST, json={"spans": [record, span_record("ok", "tok")]}).json()
    assert batch["accepted"] == 1
    assert [(r["index"], r["reason"].split(":")[0]) for r in batch["rejected"]] == [(0, path)]
    assert store.count_spans() == 1


@pytest.mark.parametrize(
    "body",
    [[], "text", 3, None, {"spans": {}}, {"traces": "x"}],
    ids=["array", "string", "number", "null", "spans-object", "traces-string"],
)
def test_a_body_of_the_wrong_shape_is_422(api: Api, body: Any) -> None:
    """E2: the envelope itself must be an object of arrays."""
    answer = api.post(INGEST, content=json.dumps(body), headers=JSON)
    assert (answer.status_code, answer.json()["error"]) == (422, "invalid")


@pytest.mark.parametrize(
    "body",
    [
        {"traceFunctionKey": 3},
        {},
        {"traceFunctionKey": "k", "limit": 0},
        {"traceFunctionKey": "k", "limit": "5"},
        {"traceFunctionKey": "k", "limit": 10**9},
        {"traceFunctionKey": "k", "traceIds": "t1"},
        {"traceFunctionKey": "k", "traceIds": [1]},
        {"traceFunctionKey": "k", "metadata": []},
        {"traceFunctionKey": "k", "dryRun": "yes"},
    ],
)
def test_replay_start_checks_its_fields(api: Api, body: Any) -> None:
    """E2 on the replay endpoints: 422 with the field path."""
    answer = api.post("/api/sdk/replay/start", json=body)
    assert answer.status_code == 422
    assert answer.json()["fields"][0]["path"].startswith("body.")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("complete", {}),
        ("complete", {"testRunId": "r", "items": {}}),
        ("complete", {"testRunId": "r", "items": [{"verdict": 3}]}),
        ("complete", {"testRunId": "r", "status": "exploded"}),
        ("status", {"expectedSpanCounts": {"t": -1}}),
        ("status", {"expectedSpanCounts": []}),
        ("heartbeat", {"testRunId": 5}),
    ],
)
def test_replay_calls_check_their_fields(api: Api, path: str, body: Any) -> None:
    """E2: wrong types in complete/status/heartbeat are 422, not 500."""
    answer = api.post(f"/api/sdk/replay/{path}", json=body)
    assert answer.status_code == 422


@pytest.mark.parametrize(
    ("headers", "content"),
    [
        ({"Content-Type": "text/plain"}, b"{}"),
        ({"Content-Type": "application/x-protobuf"}, b"\x0a\x00"),
        ({}, b"{}"),
        ({"Content-Type": "application/json; charset=latin-1"}, b"{}"),
        ({"Content-Type": "application/json", "Content-Encoding": "br"}, b"{}"),
        ({"Content-Type": "application/json", "Content-Encoding": "deflate"}, b"{}"),
    ],
    ids=["text", "protobuf", "missing", "latin1", "brotli", "deflate"],
)
def test_wrong_content_type_or_encoding_is_415(
    api: Api, headers: dict[str, str], content: bytes
) -> None:
    """E3: 415 naming what is supported."""
    answer = api.post("/api/sdk/otel/v1/traces", content=content, headers=headers)
    assert answer.status_code == 415
    assert "application/json" in answer.json()["detail"] or "gzip" in answer.json()["detail"]


def test_protobuf_is_refused_with_a_hint(api: Api) -> None:
    """E3: an OTLP/protobuf client learns that this server speaks OTLP/JSON."""
    answer = api.post(
        "/api/sdk/otel/v1/traces",
        content=b"\x0a",
        headers={"Content-Type": "application/x-protobuf"},
    )
    assert "OTLP/JSON" in answer.json()["detail"]


def test_a_declared_length_over_the_limit_is_413_before_reading(api: Api) -> None:
    """E4: Content-Length over the wire limit is refused at once."""
    body = b'{"spans": []}'.ljust(5 * MIB)
    answer = api.post(INGEST, content=body, headers=JSON)
    assert (answer.status_code, answer.json()["error"]) == (413, "too_large")
    assert answer.headers["connection"] == "close"


def test_a_chunked_body_is_cut_off_once_past_the_limit(api: Api) -> None:
    """E4: 50 MB sent chunked (no length): 413 after about the limit, the rest never read."""
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(800):
            sent += 64 * 1024
            yield b" " * (64 * 1024)

    answer = api.post(INGEST, content=chunks(), headers=JSON)
    assert answer.status_code == 413
    assert sent <= 5 * MIB


def test_a_raw_body_over_the_decompressed_limit_is_413(make_api: Any) -> None:
    """E4: without gzip, the body limit applies too (here lower than the wire limit)."""
    api = make_api(limits=Limits(max_body_bytes=1000, max_wire_bytes=4 * MIB))
    answer = api.post(INGEST, content=b" " * 2000 + b"{}", headers=JSON)
    assert answer.status_code == 413


def bomb(megabytes: int) -> bytes:
    """A gzip stream of ``megabytes`` MiB of zeros, about 1 KB per MiB, built without
    compressing them all: after a full flush every MiB of zeros compresses to the same bytes.
    (Its trailer is wrong; the server must stop long before it.)"""
    zeros = bytes(MIB)
    deflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    head = deflater.compress(zeros) + deflater.flush(zlib.Z_FULL_FLUSH)
    block = deflater.compress(zeros) + deflater.flush(zlib.Z_FULL_FLUSH)
    assert deflater.compress(zeros) + deflater.flush(zlib.Z_FULL_FLUSH) == block
    return head + block * (megabytes - 1) + deflater.flush()


def test_a_gzip_bomb_is_413_quickly_with_bounded_memory(api: Api, store: SQLiteStore) -> None:
    """E5: 1 MB on the wire inflating to 1 GiB: 413 once past 8 MiB, in well under a second,
    without holding more than the limit (plus the body) in memory."""
    payload = bomb(1024)
    assert len(payload) < 1.5 * MIB
    tracemalloc.start()
    try:
        started = time.perf_counter()
        answer = api.post(INGEST, content=payload, headers={**JSON, "Content-Encoding": "gzip"})
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (answer.status_code, answer.json()["error"]) == (413, "too_large")
    assert "after gunzip" in answer.json()["detail"]
    assert elapsed < 2.0
    assert peak < 48 * MIB
    assert store.count_spans() == 0


def test_a_ten_gigabyte_bomb_is_413_on_the_wire(api: Api) -> None:
    """E5: the 10 GiB variant is ~10 MB compressed, so the wire limit stops it first."""
    answer = api.post(INGEST, content=bomb(10 * 1024), headers={**JSON, "Content-Encoding": "gzip"})
    assert answer.status_code == 413
    assert "on the wire" in answer.json()["detail"]


@pytest.mark.parametrize(
    "payload",
    [b"\x1f\x8b\x08\x00garbage", gzip.compress(b'{"spans": []}')[:-12], b"not gzip at all"],
    ids=["corrupt", "truncated", "plain"],
)
def test_broken_gzip_is_400(api: Api, payload: bytes) -> None:
    """A gzip body that doesn't inflate is a 400, not a 500."""
    answer = api.post(INGEST, content=payload, headers={**JSON, "Content-Encoding": "gzip"})
    assert (answer.status_code, answer.json()["error"]) == (400, "invalid_gzip")


def test_a_body_that_arrives_too_slowly_is_408(make_api: Any) -> None:
    """A body trickling in past body_timeout is cut off with 408."""
    api = make_api(limits=Limits(body_timeout=0.2))

    async def slow() -> AsyncIterator[bytes]:
        yield b"{"
        await asyncio.sleep(2)
        yield b"}"

    started = time.perf_counter()
    answer = api.post(INGEST, content=slow(), headers=JSON)
    assert (answer.status_code, answer.json()["error"]) == (408, "request_timeout")
    assert time.perf_counter() - started < 1.5


def test_unknown_routes_and_methods_answer_in_the_error_shape(api: Api) -> None:
    """404 and 405 come as JSON like every other error."""
    assert api.get("/api/nope").status_code == 404
    answer = api.get(INGEST)
    assert (answer.status_code, answer.json()["error"]) == (405, "method_not_allowed")


def test_an_unexpected_exception_is_a_500_whose_traceback_only_reaches_the_log(
    api: Api, store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """E11: 500 {"error": "internal", "detail": "see the server log"}; the message stays in the log."""

    def broken() -> None:
        raise RuntimeError(f"boom in {store.path} with SELECT * FROM spans")

    monkeypatch.setattr(store, "functions", broken)
    with caplog.at_level(logging.INFO, logger="bitfab.server"):
        answer = api.get("/api/v1/functions")
    body = answer.json()
    assert (answer.status_code, body["error"], body["detail"]) == (
        500,
        "internal",
        "see the server log",
    )
    assert "boom in" in caplog.text and "Traceback" in caplog.text
    assert body["requestId"] in caplog.text


def test_every_request_logs_one_line_with_its_id(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """One INFO line per request: method, path, status, milliseconds, request id."""
    with caplog.at_level(logging.INFO, logger="bitfab.server"):
        answer = api.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert answer.headers["x-request-id"] == "abc-123"
    lines = [r.getMessage() for r in caplog.records if r.name == "bitfab.server"]
    assert len(lines) == 1
    method, path, status, ms, request_id = lines[0].split()
    assert (method, path, status, request_id) == ("GET", "/healthz", "200", "abc-123")
    assert ms.endswith("ms")
