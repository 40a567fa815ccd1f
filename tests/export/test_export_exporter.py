"""The batch exporter with a fake sink (RELIABILITY.md A13, B3, B10; rules 1-3)."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from export_helpers import assert_accounted, outcomes

from bitfab import Bitfab
from bitfab.export.exporter import BatchExporter, ExportStats
from bitfab.export.sinks import ExportResult
from bitfab.export.wire import span_records
from bitfab.testing import FakeClock, SequentialIds

WAIT = 5.0
QUEUE_FULL_WARNING = (
    "bitfab: the export queue is full (3 spans); new spans are dropped and counted "
    "(see bitfab.stats()). Raise max_queue_size or check the sink."
)


class FakeSink:
    """Records each batch as the list of first arguments; can block, raise, or answer partially."""

    def __init__(
        self,
        *,
        raises: Sequence[BaseException] = (),
        answer: Callable[[int], ExportResult] | None = None,
    ) -> None:
        self.batches: list[list[Any]] = []
        self.traces: list[dict[str, Any]] = []
        self.shutdowns = 0
        self.entered = threading.Event()
        self._open = threading.Event()
        self._open.set()
        self._raises = list(raises)
        self._answer = answer
        self._changed = threading.Condition()

    def block(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def export(
        self, spans: Sequence[Mapping[str, Any]], traces: Sequence[Mapping[str, Any]]
    ) -> ExportResult:
        self.entered.set()
        self._open.wait()
        if self._raises:
            raise self._raises.pop(0)
        with self._changed:
            self.batches.append([span["rawSpan"]["span_data"]["input"][0] for span in spans])
            self.traces.extend(dict(trace) for trace in traces)
            self._changed.notify_all()
        if self._answer is not None:
            return self._answer(len(spans))
        return ExportResult(exported=len(spans))

    def wait_for_batches(self, count: int, timeout: float = WAIT) -> list[list[Any]]:
        with self._changed:
            self._changed.wait_for(lambda: len(self.batches) >= count, timeout)
            return list(self.batches)

    def shutdown(self) -> None:
        self.shutdowns += 1

    def after_fork(self) -> None:
        return None


@dataclass
class Rig:
    """An exporter under test, its fake sink, and a traced function recording into it."""

    exporter: BatchExporter
    sink: FakeSink
    client: Bitfab
    work: Any


def exported_args(sink: FakeSink) -> list[Any]:
    """Every exported span's first argument, in export order (batch boundaries aside)."""
    return [arg for batch in sink.batches for arg in batch]


def double(i: int) -> int:
    if i < 0:
        raise ValueError(f"negative: {i}")
    return i * 2


@pytest.fixture
def make_rig() -> Iterator[Callable[..., Rig]]:
    made: list[Rig] = []

    def make(sink: FakeSink | None = None, **options: Any) -> Rig:
        sink = sink or FakeSink()
        options.setdefault("schedule_delay", 30.0)
        exporter = BatchExporter(sink, **options)
        client = Bitfab(sink=sink, id_generator=SequentialIds(), clock=FakeClock())
        # Record into the exporter under test instead of the one the client would share.
        client._shared_exporter = lambda config: exporter  # type: ignore[method-assign]
        rig = Rig(exporter, sink, client, client.trace(key="double")(double))
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.sink.release()
        rig.exporter.shutdown(timeout=WAIT)


def test_batches_are_cut_at_max_batch_size(make_rig: Callable[..., Rig]) -> None:
    """Ten spans with max_batch_size=4 reach the sink as batches of 4, 4 and 2, in order."""
    rig = make_rig(max_batch_size=4)
    rig.sink.block()
    first = outcomes(rig.work, range(4))
    assert rig.sink.entered.wait(WAIT)
    rest = outcomes(rig.work, range(4, 10))
    rig.sink.release()

    assert rig.exporter.flush(WAIT) is True
    assert rig.sink.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [trace["traceFunctionKey"] for trace in rig.sink.traces] == ["double"] * 10
    assert first + rest == outcomes(double, range(10))
    stats = rig.exporter.stats()
    assert stats == ExportStats(emitted=10, exported=10, queued=0, in_flight=0, dropped={})
    assert_accounted(stats)


def test_full_batch_wakes_the_worker_before_schedule_delay(make_rig: Callable[..., Rig]) -> None:
    """With schedule_delay=30 s a partial batch waits; the call that fills it wakes the worker."""
    rig = make_rig(max_batch_size=3)
    assert outcomes(rig.work, [0, 1]) == outcomes(double, [0, 1])
    time.sleep(0.2)
    assert rig.sink.batches == []

    started = time.monotonic()
    assert outcomes(rig.work, [2]) == outcomes(double, [2])
    assert rig.sink.wait_for_batches(1) == [[0, 1, 2]]
    assert time.monotonic() - started < 2.0
    stats = rig.exporter.stats()
    assert stats == ExportStats(emitted=3, exported=3, queued=0, in_flight=0, dropped={})
    assert_accounted(stats)


def test_schedule_delay_exports_a_partial_batch(make_rig: Callable[..., Rig]) -> None:
    """A batch that never fills is exported after schedule_delay, without a flush."""
    rig = make_rig(max_batch_size=100, schedule_delay=0.05)
    assert outcomes(rig.work, [0, 1, -1]) == outcomes(double, [0, 1, -1])

    assert rig.sink.wait_for_batches(1) == [[0, 1, -1]]
    stats = rig.exporter.stats()
    assert stats == ExportStats(emitted=3, exported=3, queued=0, in_flight=0, dropped={})
    assert_accounted(stats)


def test_flush_times_out_while_the_sink_blocks_then_succeeds(make_rig: Callable[..., Rig]) -> None:
    """flush(0.3) returns False after about 0.3 s while the sink blocks, True once it is drained."""
    rig = make_rig()
    rig.sink.block()
    assert outcomes(rig.work, [0, 1, 2]) == outcomes(double, [0, 1, 2])

    started = time.monotonic()
    assert rig.exporter.flush(0.3) is False
    assert 0.3 <= time.monotonic() - started < 2.0
    assert rig.sink.entered.is_set()
    stats = rig.exporter.stats()
    assert stats == ExportStats(emitted=3, exported=0, queued=0, in_flight=3, dropped={})
    assert_accounted(stats)

    rig.sink.release()
    assert rig.exporter.flush(WAIT) is True
    assert rig.sink.batches == [[0, 1, 2]]
    stats = rig.exporter.stats()
    assert stats == ExportStats(emitted=3, exported=3, queued=0, in_flight=0, dropped={})
    assert_accounted(stats)


def test_flush_with_nothing_emitted_returns_true_at_once(make_rig: Callable[..., Rig]) -> None:
    """flush() on an exporter that never saw a span returns True without waiting."""
    rig = make_rig()
    started = time.monotonic()
    assert rig.exporter.flush(WAIT) is True
    assert time.monotonic() - started < 0.5
    assert rig.exporter.stats() == ExportStats(
        emitted=0, exported=0, queued=0, in_flight=0, dropped={}
    )


def test_shutdown_twice_is_idempotent_and_drops_later_spans(
    make_rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    """A second shutdown() changes nothing; spans after it are dropped as `shutdown`, quietly."""
    rig = make_rig()
    before = outcomes(rig.work, range(5))

    assert rig.exporter.shutdown() is True
    assert rig.exporter.shutdown() is True
    after = outcomes(rig.work, [5, -6])

    assert before + after == outcomes(double, [*range(5), 5, -6])
    assert rig.sink.batches == [[0, 1, 2, 3, 4]]
    assert rig.sink.shutdowns == 1
    assert rig.exporter.flush(WAIT) is True
    stats = rig.exporter.stats()
    assert stats == ExportStats(
        emitted=7, exported=5, queued=0, in_flight=0, dropped={"shutdown": 2}
    )
    assert_accounted(stats)
    assert caplog.records == []


def test_shutdown_racing_emits_from_threads(make_rig: Callable[..., Rig]) -> None:
    """Eight threads calling while two threads shut down: no exception, only `shutdown` drops."""
    rig = make_rig(max_batch_size=16, schedule_delay=0.01)
    # The worker is running before the race; the first-span window is the next test's subject.
    warm_up = outcomes(rig.work, [-1])
    threads_count, calls_per_thread = 8, 300
    start = threading.Barrier(threads_count + 2)
    results: dict[int, list[tuple[Any, ...]]] = {}
    shutdowns: list[bool] = []
    errors: list[BaseException] = []

    def caller(index: int) -> None:
        try:
            start.wait()
            args = range(index * calls_per_thread, (index + 1) * calls_per_thread)
            results[index] = outcomes(rig.work, args)
        except BaseException as exc:
            errors.append(exc)

    def stopper() -> None:
        try:
            start.wait()
            time.sleep(0.005)
            shutdowns.append(rig.exporter.shutdown(timeout=WAIT))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(threads_count)]
    threads += [threading.Thread(target=stopper) for _ in range(2)]
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so calls and shutdown interleave finely
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT * 2)
    finally:
        sys.setswitchinterval(switch_interval)

    total = 1 + threads_count * calls_per_thread
    exported = exported_args(rig.sink)
    stats = rig.exporter.stats()
    assert_accounted(stats)
    assert {"errors": errors, "shutdowns": shutdowns, "stats": stats} == {
        "errors": [],
        "shutdowns": [True, True],
        "stats": ExportStats(
            emitted=total,
            exported=len(exported),
            queued=0,
            in_flight=0,
            dropped={"shutdown": total - len(exported)} if len(exported) < total else {},
        ),
    }
    assert warm_up == outcomes(double, [-1])
    for index in range(threads_count):
        args = range(index * calls_per_thread, (index + 1) * calls_per_thread)
        assert results[index] == outcomes(double, args)
    assert len(exported) == len(set(exported))
    assert rig.sink.shutdowns == 1


def test_shutdown_between_enqueue_and_worker_start_still_exports(
    make_rig: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A span queued just before shutdown() is exported though its worker had not started yet."""
    rig = make_rig()
    start_worker = rig.exporter._start_worker
    stopped: list[bool] = []

    def start_after_a_shutdown(**kwargs: bool) -> None:
        # A thread switch that a shutdown racing the very first calls can hit, made certain:
        # the first span is in the queue, and shutdown() runs before its emit starts the worker.
        if not kwargs and not stopped:
            stopper = threading.Thread(target=lambda: stopped.append(rig.exporter.shutdown(WAIT)))
            stopper.start()
            stopper.join(WAIT)
        start_worker(**kwargs)

    monkeypatch.setattr(rig.exporter, "_start_worker", start_after_a_shutdown)
    assert outcomes(rig.work, [1]) == outcomes(double, [1])
    assert rig.exporter.flush(WAIT) is True

    stats = rig.exporter.stats()
    assert_accounted(stats)
    assert {"shutdown returned": stopped, "batches": rig.sink.batches, "stats": stats} == {
        "shutdown returned": [True],
        "batches": [[1]],
        "stats": ExportStats(emitted=1, exported=1, queued=0, in_flight=0, dropped={}),
    }


def test_full_queue_drops_the_newest_and_warns_once(
    make_rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    """With the sink stuck and the queue full, new spans drop as `queue_full`, with one warning."""
    rig = make_rig(max_queue_size=3, max_batch_size=3)
    rig.sink.block()
    first = outcomes(rig.work, [0, 1, 2])
    assert rig.sink.entered.wait(WAIT)
    rest = outcomes(rig.work, [3, 4, 5, 6, 7, -8])

    stats = rig.exporter.stats()
    assert stats == ExportStats(
        emitted=9, exported=0, queued=3, in_flight=3, dropped={"queue_full": 3}
    )
    assert_accounted(stats)
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("bitfab", logging.WARNING, QUEUE_FULL_WARNING)
    ]

    rig.sink.release()
    assert rig.exporter.flush(WAIT) is True
    assert first + rest == outcomes(double, [0, 1, 2, 3, 4, 5, 6, 7, -8])
    assert rig.sink.batches == [[0, 1, 2], [3, 4, 5]]
    stats = rig.exporter.stats()
    assert stats == ExportStats(
        emitted=9, exported=6, queued=0, in_flight=0, dropped={"queue_full": 3}
    )
    assert_accounted(stats)


def test_queue_bytes_bound_drops_spans_that_do_not_fit(make_rig: Callable[..., Rig]) -> None:
    """max_queue_bytes refuses a span that would overflow it, takes a small one, frees on drain."""
    rig = make_rig(max_batch_size=100)
    big, small = "x" * 10_000, "y"
    rig.exporter.max_queue_bytes = 25_000

    def echo(text: str) -> int:
        return len(text)

    traced = rig.client.trace(key="echo")(echo)
    sent = [big, big, big, small]
    assert outcomes(traced, sent) == outcomes(echo, sent)
    stats = rig.exporter.stats()
    assert stats == ExportStats(
        emitted=4, exported=0, queued=3, in_flight=0, dropped={"queue_full": 1}
    )
    assert_accounted(stats)

    assert rig.exporter.flush(WAIT) is True
    assert outcomes(traced, [big, big]) == outcomes(echo, [big, big])
    assert rig.exporter.flush(WAIT) is True
    assert rig.sink.batches[0] == [big, big, small]
    assert exported_args(rig.sink) == [big, big, small, big, big]
    stats = rig.exporter.stats()
    assert stats == ExportStats(
        emitted=6, exported=5, queued=0, in_flight=0, dropped={"queue_full": 1}
    )
    assert_accounted(stats)


def test_sink_error_drops_the_batch_and_the_loop_goes_on(
    make_rig: Callable[..., Rig], caplog: pytest.LogCaptureFixture
) -> None:
    """A sink that raises loses its batch as `sink_error`; the next batch is exported (A13)."""
    rig = make_rig(FakeSink(raises=[OSError("disk on fire")]), max_batch_size=2)
    results = outcomes(rig.work, [0, 1])
    assert rig.exporter.flush(WAIT) is True
    results += outcomes(rig.work, [2, -3])
    assert rig.exporter.flush(WAIT) is True

    assert results == outcomes(double, [0, 1, 2, -3])
    assert exported_args(rig.sink) == [2, -3]
    assert rig.exporter._worker is not None and rig.exporter._worker.is_alive()
    stats = rig.exporter.stats()
    assert stats == ExportStats(
        emitted=4, exported=2, queued=0, in_flight=0, dropped={"sink_error": 2}
    )
    assert_accounted(stats)
    assert [(r.levelno, r.getMessage(), r.exc_info[0]) for r in caplog.records] == [
        (logging.WARNING, "bitfab: the sink failed; its batch was dropped", OSError)
    ]


def test_partial_sink_result_counts_the_rest(make_rig: Callable[..., Rig]) -> None:
    """What a sink leaves unaccounted of a batch is counted as `sink_unaccounted`."""

    def answer(count: int) -> ExportResult:
        return ExportResult(exported=count - 2, dropped={"rejected": 1})

    rig = make_rig(FakeSink(answer=answer), max_batch_size=5)
    assert outcomes(rig.work, range(5)) == outcomes(double, range(5))
    assert rig.exporter.flush(WAIT) is True

    stats = rig.exporter.stats()
    assert stats == ExportStats(
        emitted=5,
        exported=3,
        queued=0,
        in_flight=0,
        dropped={"rejected": 1, "sink_unaccounted": 1},
    )
    assert_accounted(stats)


def test_converter_error_counts_encode_error_and_later_spans_export(
    make_rig: Callable[..., Rig],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A converter that raises once drops one span as `encode_error`; the rest arrive (A13)."""
    rig = make_rig(max_batch_size=4)
    failures = [RuntimeError("encoder bug")]

    def flaky(span: Any, *args: Any) -> Any:
        if failures:
            raise failures.pop()
        return span_records(span, *args)

    monkeypatch.setattr(rig.exporter, "_convert", flaky)
    results = outcomes(rig.work, range(4))
    assert rig.exporter.flush(WAIT) is True
    results += outcomes(rig.work, [4, -5])
    assert rig.exporter.flush(WAIT) is True

    assert results == outcomes(double, [0, 1, 2, 3, 4, -5])
    assert rig.sink.batches[0] == [1, 2, 3]
    assert exported_args(rig.sink) == [1, 2, 3, 4, -5]
    stats = rig.exporter.stats()
    assert stats == ExportStats(
        emitted=6, exported=5, queued=0, in_flight=0, dropped={"encode_error": 1}
    )
    assert_accounted(stats)
    assert [(r.getMessage(), r.exc_info[0]) for r in caplog.records] == [
        ("bitfab: a span could not be encoded; dropped", RuntimeError)
    ]


class WorkerKilled(BaseException):
    """Escapes the worker loop's ``except Exception`` and ends the thread."""


def test_dead_worker_is_restarted_by_the_next_emit(
    make_rig: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the worker dies, the next waking emit starts a new one and nothing goes uncounted."""
    died: list[type[BaseException]] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_type))
    rig = make_rig(FakeSink(raises=[WorkerKilled()]), max_batch_size=2)

    results = outcomes(rig.work, [0, 1])
    first_worker = rig.exporter._worker
    assert first_worker is not None
    first_worker.join(WAIT)
    assert not first_worker.is_alive()
    assert died == [WorkerKilled]

    results += outcomes(rig.work, [2, -3])
    assert rig.sink.wait_for_batches(1) == [[2, -3]]
    assert rig.exporter._worker is not first_worker
    assert rig.exporter._worker is not None and rig.exporter._worker.is_alive()
    assert results == outcomes(double, [0, 1, 2, -3])

    # The batch the dead worker held must be counted somewhere, and flush must not wait for it.
    assert_accounted(rig.exporter.stats())
    assert rig.exporter.flush(1.0) is True


def test_thread_start_failure_drops_the_span_quietly(
    make_rig: Callable[..., Rig],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When no thread can start (interpreter shutdown), spans are dropped as `shutdown` (B10)."""
    rig = make_rig()

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    assert outcomes(rig.work, [1, -2]) == outcomes(double, [1, -2])
    assert rig.exporter.flush(WAIT) is True

    assert rig.sink.batches == []
    stats = rig.exporter.stats()
    assert stats == ExportStats(
        emitted=2, exported=0, queued=0, in_flight=0, dropped={"shutdown": 2}
    )
    assert_accounted(stats)
    assert caplog.records == []
