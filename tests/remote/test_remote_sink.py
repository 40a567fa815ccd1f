"""The HTTP sink against a scripted server on a virtual clock (RELIABILITY.md A5-A9, A12, A15)."""

from __future__ import annotations

import email.utils
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import h11
import httpx
import pytest
from fake_server import (
    API_KEY,
    INGEST,
    ScriptedServer,
    VirtualClock,
    respond,
    span_record,
    trace_record,
)
from remote_helpers import log_text

import bitfab
from bitfab.exceptions import ConfigError
from bitfab.export.http import MAX_REQUEST_BYTES, HttpSink, parse_retry_after

SinkFactory = Callable[..., HttpSink]


def spans(count: int, start: int = 0, pad: int = 0) -> list[dict[str, Any]]:
    return [span_record(n, pad=pad) for n in range(start, start + count)]


def outcome(sink: HttpSink, records: list[dict[str, Any]]) -> tuple[int, dict[str, int]]:
    result = sink.export(records, [])
    assert result.exported + sum(result.dropped.values()) == len(records)
    return result.exported, result.dropped


# ---- the request ------------------------------------------------------------------------------


def test_a_batch_is_one_json_post_with_the_key_and_user_agent(
    make_sink: SinkFactory, scripted: ScriptedServer
) -> None:
    """Spans and traces go in one ``{"spans", "traces"}`` body with the contract's headers."""
    records = spans(3)
    result = make_sink().export(records, [trace_record("t0")])

    assert (result.exported, result.dropped) == (3, {})
    [seen] = scripted.requests
    assert (seen.method, seen.path) == ("POST", INGEST)
    assert seen.headers["authorization"] == f"Bearer {API_KEY}"
    assert seen.headers["user-agent"] == f"bitfab-python/{bitfab.__version__}"
    assert seen.headers["content-type"] == "application/json"
    assert "content-encoding" not in seen.headers
    assert seen.body == {"spans": records, "traces": [trace_record("t0")]}


def test_bodies_over_a_few_kib_are_gzipped(
    make_sink: SinkFactory, scripted: ScriptedServer
) -> None:
    """A 20 KB batch travels gzipped and much smaller."""
    records = spans(4, pad=5000)
    make_sink().export(records, [])

    [seen] = scripted.requests
    assert seen.headers["content-encoding"] == "gzip"
    assert seen.body["spans"] == records
    assert seen.wire_bytes < 2000


def test_batches_are_split_by_count(make_sink: SinkFactory, scripted: ScriptedServer) -> None:
    """Five spans with two records a request go in three requests, in order."""
    assert outcome(make_sink(max_request_records=2), spans(5)) == (5, {})
    assert [len(seen.body["spans"]) for seen in scripted.requests] == [2, 2, 1]
    assert scripted.ingested() == [f"s{n}" for n in range(5)]


def test_batches_are_split_by_bytes_under_4_mib(
    make_sink: SinkFactory, scripted: ScriptedServer
) -> None:
    """Five 1.5 MB spans never share a request beyond 4 MiB of JSON."""
    records = spans(5, pad=1_500_000)
    assert outcome(make_sink(), records) == (5, {})

    sizes = [len(json.dumps(seen.body, separators=(",", ":"))) for seen in scripted.requests]
    assert [len(seen.body["spans"]) for seen in scripted.requests] == [2, 2, 1]
    assert max(sizes) <= MAX_REQUEST_BYTES


def test_a_single_span_over_the_limit_is_dropped_and_never_sent(
    make_sink: SinkFactory, scripted: ScriptedServer
) -> None:
    """A12: a 10 MB span is counted ``too_large``; its neighbours still go."""
    records = [span_record(0), span_record(1, pad=10_000_000), span_record(2)]
    assert outcome(make_sink(), records) == (2, {"too_large": 1})
    assert scripted.ingested() == ["s0", "s2"]


def test_a_record_that_cannot_be_encoded_is_dropped_alone(
    make_sink: SinkFactory, scripted: ScriptedServer
) -> None:
    """A record holding a value JSON has no form for is ``encode_error``; the rest is sent."""
    bad = span_record(1)
    bad["rawSpan"]["span_data"]["output"] = object()
    assert outcome(make_sink(), [span_record(0), bad]) == (1, {"encode_error": 1})
    assert scripted.ingested() == ["s0"]


# ---- statuses that are not retried ------------------------------------------------------------


def test_a_500_is_not_retried_and_counted(make_sink: SinkFactory, scripted: ScriptedServer) -> None:
    """A5: a 500 drops its batch as ``non_retryable:500`` after one request; the next batch goes."""
    scripted.script(INGEST, respond(500, {"error": "internal", "detail": "boom"}))
    sink = make_sink()

    assert outcome(sink, spans(3)) == (0, {"non_retryable:500": 3})
    assert outcome(sink, spans(2, start=3)) == (2, {})
    assert scripted.ingested() == ["s0", "s1", "s2", "s3", "s4"]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 415, 422, 501, 507])
def test_client_errors_and_other_5xx_are_dropped_by_status(
    make_sink: SinkFactory, scripted: ScriptedServer, vclock: VirtualClock, status: int
) -> None:
    """A8: 4xx, 507 and other 5xx are one request each, counted by status, never retried."""
    scripted.script(INGEST, respond(status, {"error": "nope", "detail": "no"}))
    reason = f"http_{status}" if status < 500 or status == 507 else f"non_retryable:{status}"

    assert outcome(make_sink(), spans(2)) == (0, {reason: 2})
    assert len(scripted.requests) == 1
    assert vclock.sleeps == []


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_is_logged_once_and_never_shown(
    make_sink: SinkFactory,
    scripted: ScriptedServer,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    """A8: 401/403 give one warning over many batches, and the key appears nowhere."""
    scripted.script(
        INGEST,
        *[respond(status, {"error": "unauthorized", "detail": f"bad key {API_KEY}"})] * 3,
    )
    sink = make_sink()
    with caplog.at_level(logging.DEBUG):
        for start in range(3):
            assert outcome(sink, spans(1, start=start)) == (0, {f"http_{status}": 1})
        sink.shutdown()

    refusals = [r for r in caplog.records if "refused the API key" in r.getMessage()]
    assert len(refusals) == 1
    assert API_KEY not in log_text(caplog.records)
    assert API_KEY not in repr(sink)


def test_a_redirect_is_not_followed(make_sink: SinkFactory, scripted: ScriptedServer) -> None:
    """D9 for export: a 3xx is counted and nothing goes to the other host."""
    scripted.script(
        INGEST, respond(307, {}, headers={"location": "https://evil.example/api/bitfab/v1/ingest"})
    )
    assert outcome(make_sink(), spans(2)) == (0, {"http_307": 2})
    assert [str(seen.headers.get("host")) for seen in scripted.requests] == ["bitfab.example"]


@pytest.mark.parametrize(
    "answer",
    [
        respond(200, content=b"<html>oops</html>", headers={"content-type": "text/html"}),
        respond(200, {"error": "internal", "detail": "half written"}),
        respond(200, [1, 2]),
        respond(200, content=b'{"accepted": 2', headers={"content-type": "application/json"}),
    ],
    ids=["html", "error-key", "not-an-object", "truncated"],
)
def test_an_unreadable_2xx_is_a_counted_failure(
    make_sink: SinkFactory, scripted: ScriptedServer, answer: httpx.Response
) -> None:
    """A 2xx that isn't a JSON object without ``error`` is ``bad_response``, not a success."""
    scripted.script(INGEST, answer)
    assert outcome(make_sink(), spans(2)) == (0, {"bad_response": 2})
    assert len(scripted.requests) == 1


# ---- 413 and partial acceptance -------------------------------------------------------------


def test_a_413_batch_is_split_in_halves_and_resent(
    make_sink: SinkFactory, scripted: ScriptedServer
) -> None:
    """A8: a 413 of four spans is resent as two requests of two."""
    scripted.script(INGEST, respond(413, {"error": "too_large", "detail": "body over limit"}))
    assert outcome(make_sink(), spans(4)) == (4, {})
    assert [len(seen.body["spans"]) for seen in scripted.requests] == [4, 2, 2]


def test_a_413_down_to_single_spans_drops_them_as_too_large(
    make_sink: SinkFactory, scripted: ScriptedServer
) -> None:
    """Halving stops at one span, which is dropped as ``too_large`` (seven requests for four)."""
    scripted.script(INGEST, *[respond(413, {"error": "too_large"}) for _ in range(7)])
    assert outcome(make_sink(), spans(4)) == (0, {"too_large": 4})
    assert [len(seen.body["spans"]) for seen in scripted.requests] == [4, 2, 1, 1, 2, 1, 1]


def test_partial_acceptance_counts_rejections_and_resends_nothing(
    make_sink: SinkFactory, scripted: ScriptedServer
) -> None:
    """A9: rejected spans are counted per reason; accepted ones are not sent again."""
    scripted.script(
        INGEST,
        respond(
            200,
            {
                "accepted": 2,
                "duplicates": 0,
                "rejected": [
                    {"kind": "span", "index": 1, "id": "s1", "reason": "invalid_record"},
                    {"kind": "span", "id": "s3", "reason": "Missing traceId!"},
                    {"kind": "trace", "index": 0, "id": "t0", "reason": "invalid_record"},
                ],
            },
        ),
    )
    result = make_sink().export(spans(4), [trace_record("t0")])

    assert (result.exported, result.dropped) == (
        2,
        {"rejected:invalid_record": 1, "rejected:missing_traceid": 1},
    )
    assert len(scripted.requests) == 1


# ---- retries ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [502, 503, 504, 429])
def test_retryable_statuses_back_off_exponentially_until_the_deadline(
    make_sink: SinkFactory, scripted: ScriptedServer, vclock: VirtualClock, status: int
) -> None:
    """A6: waits of 1, 2, 4, 8 s; the next (16 s) would pass the 30 s deadline, so give up."""
    scripted.script(INGEST, *[respond(status, {"error": "busy"}) for _ in range(10)])
    assert outcome(make_sink(timeout=30.0), spans(3)) == (0, {"retries_exhausted": 3})
    assert vclock.sleeps == [1.0, 2.0, 4.0, 8.0]
    assert len(scripted.requests) == 5


def test_the_attempt_cap_bounds_retries_under_a_long_deadline(
    make_sink: SinkFactory, scripted: ScriptedServer, vclock: VirtualClock
) -> None:
    """Six attempts at most, whatever the deadline."""
    scripted.script(INGEST, *[respond(503, {"error": "busy"}) for _ in range(10)])
    assert outcome(make_sink(timeout=1000.0), spans(1)) == (0, {"retries_exhausted": 1})
    assert vclock.sleeps == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert len(scripted.requests) == 6


def test_backoff_jitter_stays_within_twenty_percent(
    make_sink: SinkFactory, scripted: ScriptedServer, vclock: VirtualClock
) -> None:
    """With the default jitter each wait is its base times U(0.8, 1.2)."""
    scripted.script(INGEST, *[respond(502, {}) for _ in range(10)])
    outcome(make_sink(timeout=1000.0, jitter=None), spans(1))

    ratios = [wait / base for wait, base in zip(vclock.sleeps, [1, 2, 4, 8, 16], strict=True)]
    assert all(0.8 <= ratio <= 1.2 for ratio in ratios), ratios


def test_a_retry_that_succeeds_exports_once(
    make_sink: SinkFactory, scripted: ScriptedServer, vclock: VirtualClock
) -> None:
    """503, 503, then 200: exported, after waits of 1 and 2 s."""
    scripted.script(INGEST, respond(503, {}), respond(503, {}))
    assert outcome(make_sink(), spans(2)) == (2, {})
    assert vclock.sleeps == [1.0, 2.0]
    assert scripted.ingested() == ["s0", "s1"] * 3


def _http_date(when: float) -> str:
    return email.utils.formatdate(when, usegmt=True)


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize(
    ("header", "sleeps", "requests", "exported"),
    [
        ("7", [7.0], 2, 2),
        ("date+10", [10.0], 2, 2),
        ("date-100", [], 2, 2),
        ("soon, I promise", [1.0], 2, 2),
        ("3600", [], 1, 0),
    ],
    ids=["seconds", "http-date", "past-date", "garbage", "beyond-deadline"],
)
def test_retry_after_is_honoured(
    make_sink: SinkFactory,
    scripted: ScriptedServer,
    vclock: VirtualClock,
    status: int,
    header: str,
    sleeps: list[float],
    requests: int,
    exported: int,
) -> None:
    """A7: seconds and dates are waited, a past date retries now, garbage falls back on the
    backoff, and a wait past the deadline gives up at once."""
    if header.startswith("date"):
        header = _http_date(vclock.time() + float(header[4:]))
    scripted.script(
        INGEST, respond(status, {"error": "slow down"}, headers={"Retry-After": header})
    )

    result = make_sink(timeout=30.0).export(spans(2), [])

    assert vclock.sleeps == sleeps
    assert len(scripted.requests) == requests
    assert result.exported == exported
    assert result.dropped == ({} if exported else {"retries_exhausted": 2})


def test_a_rate_limit_pauses_the_following_batches(
    make_sink: SinkFactory, scripted: ScriptedServer, vclock: VirtualClock
) -> None:
    """A7: after a 429 with Retry-After, later batches wait out the pause, or are dropped as
    ``rate_limited`` without a request when it outlasts their deadline."""
    scripted.script(INGEST, respond(429, {}, headers={"Retry-After": "100"}))
    sink = make_sink(timeout=30.0)

    assert outcome(sink, spans(1, start=0)) == (0, {"retries_exhausted": 1})
    assert outcome(sink, spans(1, start=1)) == (0, {"rate_limited": 1})
    assert len(scripted.requests) == 1
    vclock.advance(80)
    assert outcome(sink, spans(1, start=2)) == (1, {})
    assert vclock.sleeps == [20.0]
    assert scripted.ingested() == ["s0", "s2"]


def test_a_stale_connection_gets_one_immediate_retry(
    make_sink: SinkFactory, scripted: ScriptedServer, vclock: VirtualClock
) -> None:
    """A11: a dropped keep-alive connection is retried at once, without a backoff wait."""
    scripted.script(INGEST, httpx.RemoteProtocolError("Server disconnected"))
    assert outcome(make_sink(), spans(2)) == (2, {})
    assert vclock.sleeps == []
    assert len(scripted.requests) == 2


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.ReadError("reset"),
        ssl.SSLError("bad handshake"),
        h11.RemoteProtocolError("illegal status line"),
        h11.LocalProtocolError("bad header"),
        ConnectionResetError(104, "Connection reset by peer"),
        RuntimeError("a transport bug"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_transport_errors_of_any_type_are_retried_and_never_escape(
    make_sink: SinkFactory, scripted: ScriptedServer, vclock: VirtualClock, error: Exception
) -> None:
    """A15: every exception from the transport is a connection error: retried with backoff,
    then ``retries_exhausted``; none reaches the exporter."""
    scripted.script(INGEST, *[error] * 10)
    assert outcome(make_sink(timeout=30.0), spans(2)) == (0, {"retries_exhausted": 2})
    assert len(scripted.requests) >= 5
    assert sum(vclock.sleeps) <= 30.0


def test_a_connection_error_then_success_delivers(
    make_sink: SinkFactory, scripted: ScriptedServer, vclock: VirtualClock
) -> None:
    """A1: refused twice, then the server is back: delivered after waits of 1 and 2 s."""
    scripted.script(INGEST, httpx.ConnectError("refused"), httpx.ConnectError("refused"))
    assert outcome(make_sink(), spans(3)) == (3, {})
    assert vclock.sleeps == [1.0, 2.0]


def test_one_warning_per_interval_while_the_server_is_down(
    make_sink: SinkFactory,
    scripted: ScriptedServer,
    vclock: VirtualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A1: one "unreachable" warning per 60 s however many batches fail, with the running count."""
    scripted.script(INGEST, *[httpx.ConnectError("refused")] * 100)
    sink = make_sink(timeout=2.5)
    with caplog.at_level(logging.WARNING, logger="bitfab"):
        for batch in range(10):
            outcome(sink, spans(2, start=2 * batch))
            vclock.advance(10)

    warnings = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 2
    assert warnings[0].startswith("bitfab: server unreachable at https://bitfab.example")
    assert warnings[0].endswith(", 2 spans dropped so far")
    # Each batch fails for 1 s (a wait of 1 s, then 2 s would pass its 2.5 s deadline), then
    # 10 s go by: the seventh batch is the first more than 60 s after the first warning.
    assert warnings[1].endswith(", 14 spans dropped so far")


# ---- shutdown ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "dropped", "requests"),
    [(502, "retries_exhausted", 2), (503, "rate_limited", 1)],
)
def test_shutdown_interrupts_a_backoff_wait_at_once(
    scripted: ScriptedServer, status: int, dropped: str, requests: int
) -> None:
    """A 30 s Retry-After wait ends as soon as shutdown begins. After a 502 the batch gets one
    last try; a 503's pause is respected (no request) and the batch counted ``rate_limited``."""
    scripted.script(INGEST, *[respond(status, {}, headers={"Retry-After": "30"}) for _ in range(5)])
    sink = HttpSink("https://bitfab.example", API_KEY, transport=scripted.transport, timeout=60)
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(sink.export(spans(2), [])))
    started = time.monotonic()
    worker.start()
    time.sleep(0.2)
    sink.begin_shutdown(1.0)
    worker.join(5)
    elapsed = time.monotonic() - started
    sink.shutdown()

    assert elapsed < 1.0
    assert results[0].dropped == {dropped: 2}
    assert len(scripted.requests) == requests


def test_batches_after_the_shutdown_budget_are_not_sent(
    make_sink: SinkFactory, scripted: ScriptedServer, vclock: VirtualClock
) -> None:
    """Once the shutdown budget is spent, what is left is counted ``shutdown_timeout``."""
    sink = make_sink()
    sink.begin_shutdown(1.0)
    vclock.advance(2)
    assert outcome(sink, spans(3)) == (0, {"shutdown_timeout": 3})
    assert scripted.requests == []


def test_shutdown_logs_one_summary_of_the_drops(
    make_sink: SinkFactory, scripted: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    """B2: one line at shutdown says how many spans were dropped and why."""
    scripted.script(INGEST, respond(400, {"error": "invalid"}), *[httpx.ConnectError("x")] * 20)
    sink = make_sink(timeout=2.0)
    outcome(sink, spans(1))
    outcome(sink, spans(2, start=1))
    with caplog.at_level(logging.WARNING, logger="bitfab"):
        caplog.clear()
        sink.shutdown()
    assert [r.getMessage() for r in caplog.records] == [
        "bitfab: dropped 3 spans that could not be sent to https://bitfab.example "
        "(http_400: 1, retries_exhausted: 2)"
    ]


# ---- configuration and fork -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://bitfab.example", False),
        ("http://10.0.0.5:8080", False),
        ("https://bitfab.example", True),
        ("http://127.0.0.1:9", True),
        ("http://localhost:9", True),
        ("http://[::1]:9", True),
    ],
)
def test_plain_http_to_another_host_is_refused(url: str, allowed: bool) -> None:
    """The key must not travel in clear text to another machine unless allowed explicitly."""
    if allowed:
        HttpSink(url, API_KEY).shutdown()
    else:
        with pytest.raises(ConfigError, match="allow_insecure_http"):
            HttpSink(url, API_KEY)
        HttpSink(url, API_KEY, allow_insecure_http=True).shutdown()


def test_after_fork_the_sink_makes_a_new_client(make_sink: SinkFactory) -> None:
    """B5/B6: the child's first request uses a new httpx client; the parent's is left alone."""
    sink = make_sink()
    parent_client = sink._http()
    sink.after_fork()
    child_client = sink._http()

    assert child_client is not parent_client
    assert not parent_client.is_closed
    parent_client.close()


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("0", 0.0),
        ("12", 12.0),
        ("1.5", 1.5),
        ("Thu, 01 Jan 2026 00:00:30 GMT", 30.0),
        ("Wed, 31 Dec 2025 00:00:00 GMT", 0.0),
        ("-3", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("1e9999", None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    """Seconds or an HTTP-date (past: 0); anything else is ignored (None)."""
    assert parse_retry_after(header, now=1_767_225_600.0) == seconds
