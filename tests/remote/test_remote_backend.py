"""The replay client against scripted answers: the protocol, retries, garbage and bombs (D8, D9)."""

from __future__ import annotations

import gzip
import itertools
import tracemalloc
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fake_server import API_KEY, ScriptedServer, respond

from bitfab.exceptions import ConfigError, ReplayError
from bitfab.playback.remote import MAX_RESPONSE_BYTES, RemoteBackend
from bitfab.playback.service import ItemRef

URL = "https://bitfab.example"
START = "/api/sdk/replay/start"
SPAN = "/api/sdk/externalSpans/s1"
TREE = "/api/sdk/replay/spanTree/s1"


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def backend(scripted: ScriptedServer, sleeps: list[float]) -> Iterator[RemoteBackend]:
    remote = RemoteBackend(URL, API_KEY, transport=scripted.transport, sleep=sleeps.append)
    yield remote
    remote.close()


def start(backend: RemoteBackend, **overrides: Any) -> Any:
    options: dict[str, Any] = {
        "limit": 5,
        "trace_ids": None,
        "name": "nightly",
        "options": {"mock": "marked"},
        "code_version": "abc123",
        "dry_run": False,
    }
    options.update(overrides)
    return backend.start_run("triage", **options)


# ---- the protocol -----------------------------------------------------------------------------


def test_start_sends_the_contract_and_reads_items_in_both_namings(
    backend: RemoteBackend, scripted: ScriptedServer
) -> None:
    """``replay/start`` gets key, limit, name, metadata and dryRun; items are read from the new
    names or, failing those, the legacy ones; the run URL is made absolute."""
    scripted.script(
        START,
        respond(
            200,
            {
                "experimentId": "exp-1",
                "testRunId": "run-1",
                "experimentUrl": "/runs/run-1",
                "testRunUrl": "/runs/run-1",
                "items": [
                    {
                        "originalTraceId": "t1",
                        "originalSpanId": "s1",
                        "originalDurationMs": 12.5,
                        "originalTokens": {"input": 3, "output": 4, "cached": 0, "total": 7},
                        "originalModel": "gpt-x",
                    },
                    {"sourceTraceId": "t2", "externalSpanId": "s2", "durationMs": 3, "model": "m"},
                ],
                "unknownTraceIds": ["nope"],
            },
        ),
    )
    started = start(backend)

    assert scripted.requests[0].body == {
        "traceFunctionKey": "triage",
        "limit": 5,
        "name": "nightly",
        "metadata": {"options": {"mock": "marked"}, "codeVersion": "abc123"},
        "dryRun": False,
    }
    assert started.test_run_id == "run-1"
    assert started.test_run_url == f"{URL}/runs/run-1"
    assert started.unknown_trace_ids == ["nope"]
    assert started.items == [
        ItemRef("t1", "s1", 12.5, {"input": 3, "output": 4, "cached": 0, "total": 7}, "gpt-x"),
        ItemRef("t2", "s2", 3.0, {}, "m"),
    ]


def test_start_with_trace_ids_and_a_dry_run(
    backend: RemoteBackend, scripted: ScriptedServer
) -> None:
    """``traceIds`` replace ``limit``; a dry run's null ids mean no test run."""
    scripted.script(START, respond(200, {"experimentId": None, "testRunId": None, "items": []}))
    started = start(backend, limit=None, trace_ids=["t1", "t2"], dry_run=True)

    body = scripted.requests[0].body
    assert (body["traceIds"], "limit" in body, body["dryRun"]) == (["t1", "t2"], False, True)
    assert (started.test_run_id, started.test_run_url, started.items) == (None, None, [])


def test_complete_and_interrupt_carry_the_experiment_id(
    backend: RemoteBackend, scripted: ScriptedServer
) -> None:
    """The run's experiment id from ``start`` goes with ``complete`` and ``interrupt``."""
    scripted.script(
        START, respond(200, {"experimentId": "exp-1", "testRunId": "run-1", "items": []})
    )
    scripted.script(
        "/api/sdk/replay/complete", respond(200, {"traceIds": {}, "tokens": {}, "traceCount": 0})
    )
    scripted.script("/api/sdk/replay/interrupt", respond(200, {}))
    start(backend)
    backend.complete_run(
        "run-1", items=[{"index": 0, "verdict": "same"}], summary={"same": 1}, status="completed"
    )
    backend.interrupt_run("run-1")

    assert [seen.body for seen in scripted.requests[1:]] == [
        {
            "experimentId": "exp-1",
            "testRunId": "run-1",
            "items": [{"index": 0, "verdict": "same"}],
            "summary": {"same": 1},
            "status": "completed",
        },
        {"experimentId": "exp-1", "testRunId": "run-1"},
    ]


def test_fetch_span_uses_the_whole_record_when_given(
    backend: RemoteBackend, scripted: ScriptedServer
) -> None:
    """``record`` wins; without it a record is built from ``rawData.span_data``."""
    record = {"id": "s1", "traceId": "t1", "rawSpan": {"id": "s1", "span_data": {"input": [1]}}}
    scripted.script(
        SPAN,
        respond(200, {"id": "s1", "externalTraceId": "t1", "rawData": {}, "record": record}),
        respond(
            200, {"id": "s1", "externalTraceId": "t1", "rawData": {"span_data": {"input": [2]}}}
        ),
    )

    assert backend.fetch_span("s1") == record
    assert backend.fetch_span("s1") == {
        "id": "s1",
        "traceId": "t1",
        "rawSpan": {"id": "s1", "span_data": {"input": [2]}},
    }
    assert [str(seen.path) for seen in scripted.requests] == [SPAN, SPAN]


def test_unknown_spans_and_trees_are_none(backend: RemoteBackend, scripted: ScriptedServer) -> None:
    """A 404 on a span or a tree is "not found", not an error; ids are quoted in the path."""
    assert backend.fetch_span("a/b c") is None
    assert backend.span_tree("s1") is None
    scripted.script(TREE, respond(200, {"root": {"sourceSpanId": "s1", "children": []}}))
    assert backend.span_tree("s1") == {"sourceSpanId": "s1", "children": []}
    assert scripted.requests[0].target == "/api/sdk/externalSpans/a%2Fb%20c?view=replay"


# ---- retries ----------------------------------------------------------------------------------


def test_gets_are_retried_twice_on_connection_errors(
    backend: RemoteBackend, scripted: ScriptedServer, sleeps: list[float]
) -> None:
    """Two connection errors then an answer: the span arrives after waits of 0.5 and 1 s."""
    scripted.script(SPAN, httpx.ConnectError("refused"), httpx.ReadTimeout("slow"))
    scripted.script(SPAN, respond(200, {"id": "s1", "externalTraceId": "t1", "rawData": {}}))

    assert backend.fetch_span("s1") is not None
    assert sleeps == [0.5, 1.0]


def test_a_get_that_keeps_failing_is_a_replay_error(
    backend: RemoteBackend, scripted: ScriptedServer
) -> None:
    """Three failures: a ReplayError naming the server."""
    scripted.script(SPAN, *[httpx.ConnectError("refused")] * 3)
    with pytest.raises(ReplayError, match=r"cannot reach the server at https://bitfab\.example"):
        backend.fetch_span("s1")
    assert len(scripted.requests) == 3


def test_a_503_get_waits_for_retry_after(
    backend: RemoteBackend, scripted: ScriptedServer, sleeps: list[float]
) -> None:
    """A 503 with ``Retry-After: 2`` is retried after 2 s."""
    scripted.script(TREE, respond(503, {"error": "busy"}, headers={"Retry-After": "2"}))
    scripted.script(TREE, respond(200, {"root": None}))
    assert backend.span_tree("s1") is None
    assert sleeps == [2.0]


def test_posts_are_not_retried(backend: RemoteBackend, scripted: ScriptedServer) -> None:
    """Starting a run twice would make two runs: one request, then the error."""
    scripted.script(START, httpx.ConnectError("refused"))
    with pytest.raises(ReplayError, match="cannot reach"):
        start(backend)
    assert len(scripted.requests) == 1


def test_a_refused_key_says_so_without_showing_it(
    backend: RemoteBackend, scripted: ScriptedServer
) -> None:
    """401: the message points at the key; a server echoing the key has it masked."""
    scripted.script(START, respond(401, {"error": "unauthorized", "detail": f"key {API_KEY}"}))
    with pytest.raises(ReplayError) as caught:
        start(backend)
    message = str(caught.value)
    assert "HTTP 401" in message and "BITFAB_API_KEY" in message
    assert API_KEY not in message
    assert API_KEY not in repr(backend)


def test_plain_http_to_another_host_is_refused() -> None:
    with pytest.raises(ConfigError, match="clear text"):
        RemoteBackend("http://bitfab.example", API_KEY)


# ---- D9: garbage ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            respond(
                502,
                content=b"<html><h1>502 Bad Gateway</h1></html>",
                headers={"content-type": "text/html"},
            ),
            r"HTTP 502: a text/html body: <html><h1>502 Bad Gateway",
        ),
        (
            respond(200, content=b"<html>login</html>", headers={"content-type": "text/html"}),
            r"HTTP 200 with Content-Type 'text/html' instead of JSON",
        ),
        (
            respond(200, content=b'{"items": [', headers={"content-type": "application/json"}),
            r"HTTP 200 with invalid JSON",
        ),
        (
            respond(
                200,
                content=b'{"items": [], "x": NaN}',
                headers={"content-type": "application/json"},
            ),
            r"HTTP 200 with invalid JSON",
        ),
        (
            respond(200, content=b'{"items": []}', headers={"content-type": "text/plain"}),
            r"Content-Type 'text/plain' instead of JSON",
        ),
        (
            respond(200, {"error": "internal", "detail": "db down"}),
            r"with an error: internal: db down",
        ),
        (respond(200, [1, 2, 3]), r"JSON that is not an object"),
        (respond(200, {"items": "all of them"}), r"`items` is not a list"),
        (respond(200, {"items": [{"originalTraceId": "t1"}]}), r"item 0 has no originalTraceId"),
        (respond(500, content=b""), r"HTTP 500: an empty body"),
        (
            respond(302, content=b"", headers={"location": "https://evil.example/steal"}),
            r"HTTP 302, a redirect to https://evil.example/steal; bitfab does not follow",
        ),
    ],
    ids=[
        "html-502",
        "html-200",
        "truncated",
        "nan",
        "wrong-type",
        "error-key",
        "not-object",
        "bad-items",
        "bad-item",
        "empty-500",
        "redirect",
    ],
)
def test_garbage_answers_are_clear_errors(
    backend: RemoteBackend, scripted: ScriptedServer, answer: httpx.Response, expected: str
) -> None:
    """D9: the message names the server, the request and the status; nothing else is fetched."""
    scripted.script(START, answer)
    with pytest.raises(ReplayError, match=expected) as caught:
        start(backend)
    assert str(caught.value).startswith(
        "the server at https://bitfab.example (POST /api/sdk/replay/start)"
    ) or "the server at https://bitfab.example answered POST" in str(caught.value)
    assert [str(seen.headers["host"]) for seen in scripted.requests] == ["bitfab.example"]


# ---- D8: bombs --------------------------------------------------------------------------------


def _stream(chunks: Iterator[bytes], **headers: str) -> httpx.Response:
    return httpx.Response(
        200, headers={"content-type": "application/json", **headers}, content=chunks
    )


def _repeat(chunk: bytes, count: int, counter: list[int]) -> Iterator[bytes]:
    for _ in range(count):
        counter[0] += 1
        yield chunk


def _peak_of(call: Any) -> tuple[BaseException | None, int]:
    tracemalloc.start()
    error: BaseException | None = None
    try:
        call()
    except Exception as exc:
        error = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return error, peak


def test_the_default_response_limit_is_64_mib() -> None:
    assert MAX_RESPONSE_BYTES == 64 * 1024 * 1024


def test_an_announced_oversize_body_is_refused_before_reading(scripted: ScriptedServer) -> None:
    """A Content-Length of 500 MB is refused without reading a byte of the body."""
    pulled = [0]
    scripted.script(
        SPAN, _stream(_repeat(b"a" * 1024, 10, pulled), **{"content-length": str(500 * 2**20)})
    )
    remote = RemoteBackend(URL, API_KEY, transport=scripted.transport, max_response_bytes=2**20)
    with pytest.raises(ReplayError, match="announces 524288000 bytes, over the 1048576-byte limit"):
        remote.fetch_span("s1")
    remote.close()
    assert pulled == [0]


def test_a_500_mb_stream_stops_at_the_limit(scripted: ScriptedServer) -> None:
    """D8: a body without a length is read only up to the limit; memory stays near it."""
    pulled = [0]
    scripted.script(SPAN, _stream(_repeat(b"a" * 2**20, 500, pulled)))
    remote = RemoteBackend(URL, API_KEY, transport=scripted.transport, max_response_bytes=4 * 2**20)

    error, peak = _peak_of(lambda: remote.fetch_span("s1"))
    remote.close()

    assert isinstance(error, ReplayError)
    assert "over the 4194304-byte limit" in str(error)
    assert pulled[0] <= 6
    assert peak < 20 * 2**20


def test_a_gzip_bomb_stops_at_the_decoded_limit(scripted: ScriptedServer) -> None:
    """D8: 200 MB of zeros in ~200 KB of gzip: decoding stops at the limit."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"\0" * 2**20
    bomb = b"".join(packer.compress(zeros) for _ in range(200)) + packer.flush()
    assert len(bomb) < 400_000
    scripted.script(SPAN, _stream(iter([bomb]), **{"content-encoding": "gzip"}))
    remote = RemoteBackend(URL, API_KEY, transport=scripted.transport, max_response_bytes=4 * 2**20)

    error, peak = _peak_of(lambda: remote.fetch_span("s1"))
    remote.close()

    assert isinstance(error, ReplayError)
    assert "over the 4194304-byte limit" in str(error)
    assert peak < 20 * 2**20


def test_a_gzipped_answer_is_read(scripted: ScriptedServer) -> None:
    """An honest gzip answer decodes to the JSON it holds."""
    body = b'{"id": "s1", "externalTraceId": "t1", "rawData": {"span_data": {"input": []}}}'
    scripted.script(SPAN, _stream(iter([gzip.compress(body)]), **{"content-encoding": "gzip"}))
    remote = RemoteBackend(URL, API_KEY, transport=scripted.transport)
    assert remote.fetch_span("s1") == {
        "id": "s1",
        "traceId": "t1",
        "rawSpan": {"id": "s1", "span_data": {"input": []}},
    }
    remote.close()


def test_a_depth_bomb_is_a_clear_error(backend: RemoteBackend, scripted: ScriptedServer) -> None:
    """D8: 100 000 nested lists are refused by the parser's depth limit, not a RecursionError."""
    scripted.script(SPAN, _stream(iter([b"[" * 100_000 + b"]" * 100_000])))
    with pytest.raises(ReplayError, match=r"invalid JSON.*depth"):
        backend.fetch_span("s1")


def test_a_hundred_million_character_string_is_refused(scripted: ScriptedServer) -> None:
    """D8: a string of 1e8 characters is over the byte limit before it is ever parsed."""
    pulled = [0]
    chunks = itertools.chain([b'{"id": "'], _repeat(b"a" * 2**20, 96, pulled), [b'"}'])
    scripted.script(SPAN, _stream(chunks))
    remote = RemoteBackend(URL, API_KEY, transport=scripted.transport, max_response_bytes=8 * 2**20)
    error, peak = _peak_of(lambda: remote.fetch_span("s1"))
    remote.close()
    assert isinstance(error, ReplayError) and "over the 8388608-byte limit" in str(error)
    assert pulled[0] <= 10
    assert peak < 40 * 2**20


def test_ten_million_elements_are_refused_before_parsing(
    backend: RemoteBackend, scripted: ScriptedServer
) -> None:
    """D8: a 20 MB list of 1e7 zeros passes the byte limit but not the value count."""
    body = b'{"id": [' + b"0," * (10**7 - 1) + b"0]}"
    scripted.script(SPAN, _stream(iter([body])))
    with pytest.raises(ReplayError, match="more than 8000000 JSON values"):
        backend.fetch_span("s1")
