"""Exporter faults over real loopback sockets (RELIABILITY.md A1-A4, A10, A11, A13, A14)."""

from __future__ import annotations

import logging
import statistics
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_server import API_KEY, FakeBitfabServer, FaultProxy, closed_port, span_record
from remote_helpers import assert_accounted

from bitfab import Bitfab
from bitfab.export.http import HttpSink
from bitfab.testing import MemorySink


def _latencies(client: Bitfab, calls: int) -> list[float]:
    @client.trace(key="hot")
    def hot(n: int) -> int:
        return n + 1

    times = []
    for n in range(calls):
        started = time.perf_counter()
        hot(n)
        times.append(time.perf_counter() - started)
    return times


def test_a_down_server_does_not_slow_decorated_calls() -> None:
    """A1: with the server refusing connections, call latency matches recording into memory."""
    healthy = Bitfab(sink=MemorySink(), max_queue_size=100_000)
    down = Bitfab(
        url=f"http://127.0.0.1:{closed_port()}",
        api_key=API_KEY,
        max_queue_size=100_000,
        schedule_delay=0.01,
        max_batch_size=100,
    )
    try:
        _latencies(healthy, 200)  # warm up both paths
        _latencies(down, 200)
        base = _latencies(healthy, 3000)
        slow = _latencies(down, 3000)
        p99 = statistics.quantiles(slow, n=100)[98]
        base_p99 = statistics.quantiles(base, n=100)[98]
        assert p99 < base_p99 * 3 + 0.001, (p99, base_p99)
        assert statistics.median(slow) < statistics.median(base) * 3 + 0.0002
        assert_accounted(down.stats())
    finally:
        healthy.shutdown(timeout=1)
        down.shutdown(timeout=1)


def test_a_blackhole_server_costs_at_most_the_export_deadline(server: FakeBitfabServer) -> None:
    """A2: each attempt ends at the read timeout, and the batch gives up within its deadline."""
    server.mode = "blackhole"
    sink = HttpSink(
        server.url,
        API_KEY,
        timeout=1.5,
        request_timeout=httpx.Timeout(connect=1.0, read=0.4, write=1.0, pool=1.0),
    )
    started = time.monotonic()
    result = sink.export([span_record(n) for n in range(3)], [])
    elapsed = time.monotonic() - started
    sink.shutdown()

    assert result.dropped == {"retries_exhausted": 3}
    assert 0.4 <= elapsed <= 1.5 + 0.5
    assert len(server.received) >= 2


def test_a_slow_server_fills_the_queue_then_the_newest_spans_are_dropped(
    server: FakeBitfabServer,
) -> None:
    """A3: the queue absorbs a burst; past its capacity the newest spans are dropped (counted),
    so the oldest ones are those that arrive."""
    server.mode, server.delay = "slow", 0.3
    client = Bitfab(
        url=server.url, api_key=API_KEY, max_queue_size=20, max_batch_size=5, schedule_delay=0.05
    )

    @client.trace(key="burst")
    def burst(n: int) -> int:
        return n

    try:
        for n in range(200):
            burst(n)
        stats = client.stats()
        assert_accounted(stats)
        assert stats.queued <= 20
        assert stats.dropped["queue_full"] >= 200 - 20 - stats.in_flight - stats.exported
        assert client.flush(timeout=10)
    finally:
        client.shutdown(timeout=5)
    stats = client.stats()
    assert_accounted(stats)
    assert stats.exported + stats.dropped["queue_full"] == 200
    # Drops are of the newest: the first spans to fill the queue all arrive (drop-oldest would
    # have evicted them).
    inputs = set(_inputs(server))
    assert set(range(20)) <= inputs
    assert len(inputs) == stats.exported


def _inputs(server: FakeBitfabServer) -> list[Any]:
    return [
        record["rawSpan"]["span_data"]["input"][0]
        for span_id in server.stored_ids()
        if (record := server.store.get_span(span_id)) is not None
    ]


def test_a_long_outage_keeps_memory_and_threads_bounded() -> None:
    """A4: 50 spans/s for 3 s against a closed port: the queue stays at its cap, memory and the
    thread count stay flat, every span is accounted for."""
    client = Bitfab(
        url=f"http://127.0.0.1:{closed_port()}",
        api_key=API_KEY,
        max_queue_size=40,
        max_batch_size=10,
        schedule_delay=0.05,
        export_timeout=0.5,
    )

    @client.trace(key="outage")
    def step(n: int) -> dict[str, Any]:
        return {"n": n, "payload": "x" * 2000}

    tracemalloc.start()
    try:
        threads_before = threading.active_count()
        samples: list[int] = []
        thread_counts: list[int] = []
        for n in range(150):
            step(n)
            time.sleep(0.02)
            if n % 25 == 24:
                samples.append(tracemalloc.get_traced_memory()[0])
                thread_counts.append(threading.active_count())
        stats = client.stats()
    finally:
        tracemalloc.stop()
        client.shutdown(timeout=1)

    assert_accounted(stats)
    assert stats.queued <= 40
    assert stats.dropped.get("retries_exhausted", 0) + stats.dropped.get("queue_full", 0) > 0
    assert max(samples[1:]) - samples[1] < 512 * 1024, samples
    assert max(thread_counts) <= threads_before + 1
    assert thread_counts[-1] == thread_counts[1]


@pytest.mark.parametrize(
    "fault", [{"drop_answer": True}, {"cut_after": 120}], ids=["answer-lost", "request-cut"]
)
def test_a_broken_connection_is_retried_and_stored_once(
    server: FakeBitfabServer, fault: dict[str, Any]
) -> None:
    """A10: the proxy breaks the first connection (after the server committed, or mid-request);
    the batch is sent again and the server keeps exactly one row per span id."""
    proxy = FaultProxy(server.port, **fault)
    client = Bitfab(url=proxy.url, api_key=API_KEY, schedule_delay=0.05)

    @client.trace(key="cut")
    def work(n: int) -> int:
        return n

    try:
        for n in range(10):
            work(n)
        assert client.flush(timeout=10)
    finally:
        client.shutdown(timeout=5)
        proxy.close()

    stored = server.stored_ids()
    assert len(stored) == len(set(stored)) == 10
    assert client.stats().exported == 10
    assert_accounted(client.stats())
    if "drop_answer" in fault:
        assert Counter(Counter(server.received).values()) == Counter({2: 10})


def test_a_server_restart_on_the_same_port_loses_nothing(tmp_path: Path) -> None:
    """A11: spans recorded while the server restarts arrive once it is back (outage < deadline)."""
    server = FakeBitfabServer(tmp_path / "s.db").start()
    client = Bitfab(url=server.url, api_key=API_KEY, schedule_delay=0.05, export_timeout=10)

    @client.trace(key="restart")
    def work(n: int) -> int:
        return n

    try:
        work(0)
        assert client.flush(timeout=5)  # a pooled keep-alive connection now exists
        server.stop()
        for n in range(1, 6):
            work(n)
        time.sleep(0.3)
        server.start()
        assert client.flush(timeout=10)
        stats = client.stats()
    finally:
        client.shutdown(timeout=5)
        ids = server.stored_ids()
        server.close()

    assert (stats.exported, stats.dropped) == (6, {})
    assert len(ids) == 6


def test_a_crash_in_the_sink_loses_one_batch_and_export_goes_on(
    server: FakeBitfabServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A13: an exception escaping the sink's loop drops that batch (counted); later spans arrive."""
    real = HttpSink._deliver
    calls = {"n": 0}

    def crash_once(self: HttpSink, *args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug in the sink")
        return real(self, *args)

    monkeypatch.setattr(HttpSink, "_deliver", crash_once)
    client = Bitfab(url=server.url, api_key=API_KEY, schedule_delay=0.05)

    @client.trace(key="crash")
    def work(n: int) -> int:
        return n

    try:
        work(1)
        client.flush(timeout=5)
        work(2)
        assert client.flush(timeout=5)
        stats = client.stats()
    finally:
        client.shutdown(timeout=5)

    assert (stats.exported, stats.dropped) == (1, {"sink_error": 1})
    assert_accounted(stats)
    assert _inputs(server) == [2]


def test_a_traced_log_handler_does_not_loop_on_the_exporter_warnings() -> None:
    """A14: the sink's "unreachable" warnings reach a traced handler without recording spans."""
    client = Bitfab(
        url=f"http://127.0.0.1:{closed_port()}",
        api_key=API_KEY,
        schedule_delay=0.02,
        export_timeout=0.2,
    )

    @client.trace(key="handler")
    def handle(message: str) -> str:
        return message

    class TracedHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            handle(record.getMessage())

    @client.trace(key="app")
    def app(n: int) -> int:
        return n

    handler = TracedHandler(logging.DEBUG)
    logger = logging.getLogger()
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        for n in range(5):
            app(n)
        client.flush(timeout=3)
        time.sleep(0.3)
        stats = client.stats()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        client.shutdown(timeout=1)

    assert stats.emitted == 5
    assert_accounted(stats)
