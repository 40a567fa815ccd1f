"""A traced logging handler on the ``bitfab`` logger makes no feedback loop (RELIABILITY.md A14)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from export_helpers import assert_accounted, last_json_line, outcomes, run_python

from bitfab import Bitfab
from bitfab.export.exporter import ExportStats
from bitfab.export.sinks import ExportResult


class FailingSink:
    """Every export raises, so the exporter logs from its worker thread."""

    def __init__(self) -> None:
        self.calls = 0

    def export(
        self, spans: Sequence[Mapping[str, Any]], traces: Sequence[Mapping[str, Any]]
    ) -> ExportResult:
        self.calls += 1
        raise ConnectionError("sink is down")

    def shutdown(self) -> None:
        return None

    def after_fork(self) -> None:
        return None


def square(i: int) -> int:
    if i < 0:
        raise ValueError(f"negative: {i}")
    return i * i


@pytest.fixture
def bitfab_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("bitfab")
    handlers = list(logger.handlers)
    yield logger
    logger.handlers[:] = handlers


def test_traced_handler_with_failing_sink_records_finite_spans(
    bitfab_logger: logging.Logger,
) -> None:
    """A sink failure is logged via a traced handler whose calls on the worker are not recorded."""
    sink = FailingSink()
    client = Bitfab(sink=sink, max_batch_size=5, schedule_delay=0.01)
    seen: list[str] = []

    @client.trace(key="log.handle")
    def handle(message: str) -> None:
        seen.append(message)

    class TracedHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            handle(record.getMessage())

    bitfab_logger.addHandler(TracedHandler())
    work = client.trace(key="square")(square)
    try:
        results = outcomes(work, [1, 2, -3, 4, 5, 6, 7, 8, 9, 10])
        assert client.flush(5.0) is True
    finally:
        client.shutdown(timeout=5.0)

    assert results == outcomes(square, [1, 2, -3, 4, 5, 6, 7, 8, 9, 10])
    assert seen == ["bitfab: the sink failed; its batch was dropped"]
    stats = client.stats()
    assert stats == ExportStats(
        emitted=10, exported=0, queued=0, in_flight=0, dropped={"sink_error": 10}
    )
    assert_accounted(stats)


def test_traced_handler_on_a_full_queue_neither_deadlocks_nor_loops(tmp_path: Path) -> None:
    """The queue-full warning goes through a traced handler on the app's thread without deadlock."""
    code = """
        import json, logging, os, threading
        import bitfab
        from bitfab.export.sinks import ExportResult

        gate, entered = threading.Event(), threading.Event()

        class StuckSink:
            def export(self, spans, traces):
                entered.set()
                gate.wait()
                return ExportResult(exported=len(spans))
            def shutdown(self):
                pass
            def after_fork(self):
                pass

        client = bitfab.Bitfab(sink=StuckSink(), max_queue_size=2, max_batch_size=2,
                               schedule_delay=30, shutdown_timeout=1)
        seen = []

        @client.trace(key="log.handle")
        def handle(message):
            seen.append(message)

        class TracedHandler(logging.Handler):
            def emit(self, record):
                handle(record.getMessage())

        logging.getLogger("bitfab").addHandler(TracedHandler())

        @client.trace(key="square")
        def square(i):
            return i * i

        results = []

        def app():
            results.extend(square(i) for i in range(2))
            entered.wait(5)
            results.extend(square(i) for i in range(2, 10))

        thread = threading.Thread(target=app, daemon=True)
        thread.start()
        thread.join(5)
        if thread.is_alive():
            print(json.dumps("deadlock: the app thread is stuck in a traced call"), flush=True)
            os._exit(2)
        gate.set()
        client.flush(5)
        stats = client.stats()
        print(json.dumps({"results": results, "seen": seen, "emitted": stats.emitted,
                          "exported": stats.exported, "queued": stats.queued,
                          "in_flight": stats.in_flight, "dropped": stats.dropped}))
    """
    child = run_python(code, cwd=tmp_path, timeout=20)

    report = last_json_line(child.stdout)
    assert report == {
        "results": [i * i for i in range(10)],
        "seen": [
            "bitfab: the export queue is full (2 spans); new spans are dropped and counted "
            "(see bitfab.stats()). Raise max_queue_size or check the sink."
        ],
        "emitted": 11,
        "exported": 4,
        "queued": 0,
        "in_flight": 0,
        "dropped": {"queue_full": 7},
    }
    assert_accounted(
        ExportStats(**{name: report[name] for name in ExportStats.__dataclass_fields__})
    )
    assert (child.returncode, child.stderr) == (0, "")
