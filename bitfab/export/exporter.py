"""The batch exporter: a bounded queue drained by one daemon thread, modelled on OpenTelemetry's.

- ``emit`` is an O(1) append under a lock held for a few instructions; the traced app never
  waits on I/O. A full queue (by count or by bytes) drops the **newest** span and counts it.
- One worker thread per exporter wakes on a full batch or every ``schedule_delay`` seconds,
  turns spans into wire records and hands them to the sink. A failing batch is counted and
  the loop goes on; a worker that died is restarted by the next ``emit`` that wakes it.
- ``flush(timeout)`` waits until everything emitted before it was handled; ``shutdown`` drains
  within its timeout, then counts the rest. An ``atexit`` hook shuts every exporter down.
- Fork safety: the child gets fresh locks, an empty queue and no worker (it never resends the
  parent's spans) through ``os.register_at_fork`` held by a ``WeakMethod``, plus a pid check.

Accounting invariant: ``emitted == exported + sum(dropped) + queued + in_flight``.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bitfab._internal import logger, warn_once
from bitfab.export.sinks import ExportResult, Sink
from bitfab.export.wire import span_records, thread_names
from bitfab.tracing.context import SUPPRESS_KEY, attach, set_value
from bitfab.tracing.span import Span

__all__ = ["BatchExporter", "ExportStats", "shutdown_all"]

_SPAN_OVERHEAD_BYTES = 600
_getpid = os.getpid


@dataclass(frozen=True)
class ExportStats:
    """Counters of one exporter; ``dropped`` maps a reason to a count."""

    emitted: int
    exported: int
    queued: int
    in_flight: int
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


def _span_bytes(span: Span) -> int:
    size = _SPAN_OVERHEAD_BYTES
    if span.input is not None:
        size += span.input.size
    if span.output is not None:
        size += span.output.size
    return size


class BatchExporter:
    """Queue + worker + sink. Shared by every :class:`~bitfab.Bitfab` that writes to one place."""

    def __init__(
        self,
        sink: Sink,
        *,
        max_queue_size: int = 50_000,
        max_queue_bytes: int = 256 * 1024 * 1024,
        max_batch_size: int = 512,
        schedule_delay: float = 0.5,
        shutdown_timeout: float = 2.0,
        converter: Callable[..., tuple[dict[str, Any], dict[str, Any] | None]] = span_records,
    ) -> None:
        self.sink = sink
        self.max_queue_size = max_queue_size
        self.max_queue_bytes = max_queue_bytes
        self.max_batch_size = max_batch_size
        self.schedule_delay = schedule_delay
        self.shutdown_timeout = shutdown_timeout
        self._convert = converter
        self._init_state()
        _LIVE.add(self)
        hook = weakref.WeakMethod(self._after_fork)

        def in_child() -> None:
            method = hook()
            if method is not None:
                method()

        os.register_at_fork(after_in_child=in_child)

    def _init_state(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._cond = threading.Condition(threading.Lock())
        self._wake = threading.Event()
        self._queue: deque[Span] = deque()
        self._queued_bytes = 0
        self._taken = 0
        self._refused = 0
        self._exported = 0
        self._processed = 0
        self._in_flight = 0
        self._dropped: dict[str, int] = {}
        self._worker: threading.Thread | None = None
        self._stopping = False
        self._stopped = False

    def _after_fork(self) -> None:
        self._init_state()
        try:
            self.sink.after_fork()
        except Exception:
            warn_once("after-fork", "bitfab: the sink failed to reset after fork", exc_info=True)

    # -- the hot path -----------------------------------------------------------------------------

    def emit(self, span: Span) -> None:
        """Queue a finished span; never blocks on I/O, never raises.

        Lock-free: ``deque.append`` is atomic. The byte count is approximate under concurrency
        (the worker sets it right whenever it empties the queue); the count of spans is exact:
        ``emitted`` is derived from what the worker took, what is queued and what was refused.
        """
        if self._pid != _getpid():
            self._after_fork()
        encoded_in = span.input
        encoded_out = span.output
        size = _SPAN_OVERHEAD_BYTES
        if encoded_in is not None:
            size += encoded_in.size
        if encoded_out is not None:
            size += encoded_out.size
        queue = self._queue
        if (
            self._stopping
            or len(queue) >= self.max_queue_size
            or self._queued_bytes + size > self.max_queue_bytes
        ):
            with self._lock:
                refused_full = self._refuse_locked()
            if refused_full:
                # Logged outside the lock: a traced logging handler may record a span.
                self._warn_full()
            return
        queue.append(span)
        self._queued_bytes += size
        if len(queue) >= self.max_batch_size:
            if not self._wake.is_set():
                worker = self._worker
                if worker is None or not worker.is_alive():
                    self._start_worker()
                self._wake.set()
        elif self._worker is None:
            self._start_worker()

    def _refuse_locked(self) -> bool:
        """Count a span that can't be queued; True when the reason is a full queue."""
        self._refused += 1
        if self._stopping:
            self._count_drop_locked("shutdown")
            return False
        self._count_drop_locked("queue_full")
        return True

    def _warn_full(self) -> None:
        warn_once(
            "queue-full",
            "bitfab: the export queue is full (%d spans); new spans are dropped and counted "
            "(see bitfab.stats()). Raise max_queue_size or check the sink.",
            self.max_queue_size,
        )

    def _count_drop_locked(self, reason: str, count: int = 1) -> None:
        self._dropped[reason] = self._dropped.get(reason, 0) + count

    def _start_worker(self, *, for_shutdown: bool = False) -> None:
        with self._cond:
            worker = self._worker
            if worker is not None and worker.is_alive():
                return
            if self._stopping and not for_shutdown:
                return
            thread = threading.Thread(target=self._run, name="bitfab-exporter", daemon=True)
            try:
                thread.start()
            except RuntimeError:
                # No new threads at interpreter shutdown: drop what is queued, quietly.
                with self._lock:
                    dropped = len(self._queue)
                    self._queue.clear()
                    self._queued_bytes = 0
                    self._taken += dropped
                    self._processed += dropped
                    self._count_drop_locked("shutdown", dropped)
                return
            self._worker = thread
            _register_atexit()

    # -- the worker -------------------------------------------------------------------------------

    def _run(self) -> None:
        # Traced code reached from the sink (a traced logging handler, say) must not feed the queue.
        attach(set_value(SUPPRESS_KEY, True))
        while True:
            self._wake.wait(self.schedule_delay)
            self._wake.clear()
            try:
                self._drain()
            except Exception:
                warn_once(
                    "worker-loop", "bitfab: the exporter loop failed; it goes on", exc_info=True
                )
            if self._stopping:
                try:
                    self._drain()
                finally:
                    with self._cond:
                        self._stopped = True
                        self._cond.notify_all()
                return

    def _drain(self) -> None:
        while True:
            with self._lock:
                queue = self._queue
                count = min(len(queue), self.max_batch_size)
                if count == 0:
                    return
                batch = [queue.popleft() for _ in range(count)]
                self._taken += count
                self._in_flight = count
                if queue:
                    self._queued_bytes -= sum(_span_bytes(span) for span in batch)
                else:
                    self._queued_bytes = 0  # exact again whenever the queue is empty
            try:
                result = self._export(batch)
            except BaseException:
                # The worker is dying (a BaseException from a sink): account for its batch so
                # flush() and the counters stay right; a later emit restarts the worker.
                with self._lock:
                    self._in_flight = 0
                    self._count_drop_locked("worker_died", count)
                with self._cond:
                    self._processed += count
                    self._cond.notify_all()
                raise
            with self._lock:
                self._in_flight = 0
                self._exported += result.exported
                for reason, number in result.dropped.items():
                    self._dropped[reason] = self._dropped.get(reason, 0) + number
            with self._cond:
                self._processed += count
                self._cond.notify_all()

    def _export(self, batch: list[Span]) -> ExportResult:
        records: list[dict[str, Any]] = []
        traces: list[dict[str, Any]] = []
        result = ExportResult()
        names = thread_names()
        for span in batch:
            try:
                record, trace = self._convert(span, names)
            except Exception:
                result.drop("encode_error")
                warn_once(
                    "encode-error", "bitfab: a span could not be encoded; dropped", exc_info=True
                )
                continue
            records.append(record)
            if trace is not None:
                traces.append(trace)
        if not records and not traces:
            return result
        try:
            sent = self.sink.export(records, traces)
        except Exception:
            result.drop("sink_error", len(records))
            warn_once("sink-error", "bitfab: the sink failed; its batch was dropped", exc_info=True)
            return result
        unaccounted = len(records) - sent.exported - sum(sent.dropped.values())
        result.exported = sent.exported
        for reason, number in sent.dropped.items():
            result.drop(reason, number)
        if unaccounted > 0:
            result.drop("sink_unaccounted", unaccounted)
        return result

    # -- control ----------------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every span emitted so far was exported or dropped; False on timeout."""
        if self._pid != os.getpid():
            self._after_fork()
        with self._lock:
            target = self._taken + len(self._queue)
        if self._worker is None or not self._worker.is_alive():
            with self._lock:
                pending = bool(self._queue)
            if not pending:
                return True
            self._start_worker()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._wake.set()
        with self._cond:
            while self._processed < target:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if self._stopped:
                    return self._processed >= target
                self._cond.wait(0.05 if remaining is None else min(remaining, 0.05))
                self._wake.set()
        return True

    def shutdown(self, timeout: float | None = None) -> bool:
        """Export what is queued within ``timeout`` (default ``shutdown_timeout``), then stop.

        Idempotent; spans emitted afterwards are dropped as ``shutdown``. Returns False if
        spans were left behind.
        """
        if self._pid != os.getpid():
            self._after_fork()
        timeout = self.shutdown_timeout if timeout is None else timeout
        begin = getattr(self.sink, "begin_shutdown", None)
        if begin is not None:
            # A sink that may be waiting (an HTTP backoff) learns its budget first, so that
            # the worker isn't stuck in a wait while we join it.
            begin(timeout)
        with self._lock:
            already = self._stopping
            self._stopping = True
            pending = bool(self._queue)
        worker = self._worker
        if pending and (worker is None or not worker.is_alive()):
            # Spans queued before the worker started (or after it died): drain them now.
            self._start_worker(for_shutdown=True)
            worker = self._worker
        if worker is not None and worker.is_alive():
            self._wake.set()
            worker.join(timeout)
        clean = True
        with self._lock:
            left = len(self._queue) + self._in_flight
            if left and (worker is None or not worker.is_alive()):
                self._taken += len(self._queue)
                self._queue.clear()
                self._queued_bytes = 0
                self._processed += left
                self._in_flight = 0
                self._count_drop_locked("shutdown_timeout", left)
                clean = False
            elif left:
                clean = False
        if not already:
            if not clean:
                logger.warning("bitfab: exited with %d spans not exported (shutdown timeout)", left)
            if worker is None or not worker.is_alive():
                # A worker still stuck in the sink owns it; closing it here would wait on it.
                try:
                    self.sink.shutdown()
                except Exception:
                    warn_once(
                        "sink-shutdown", "bitfab: the sink failed to shut down", exc_info=True
                    )
            _LIVE.discard(self)
        return clean

    def stats(self) -> ExportStats:
        with self._lock:
            # Appends don't take the lock: read the queue's length once, so that the snapshot
            # balances (emitted == exported + dropped + queued + in_flight) even while spans
            # keep arriving.
            queued = len(self._queue)
            return ExportStats(
                emitted=self._taken + queued + self._refused,
                exported=self._exported,
                queued=queued,
                in_flight=self._in_flight,
                dropped=dict(self._dropped),
            )


_LIVE: weakref.WeakSet[BatchExporter] = weakref.WeakSet()
_atexit_registered = False
_atexit_lock = threading.Lock()


def _register_atexit() -> None:
    global _atexit_registered
    with _atexit_lock:
        if not _atexit_registered:
            atexit.register(shutdown_all)
            _atexit_registered = True


def shutdown_all() -> None:
    """Shut down every live exporter (the ``atexit`` hook)."""
    for exporter in list(_LIVE):
        try:
            exporter.shutdown()
        except Exception:
            warn_once("atexit", "bitfab: shutdown at exit failed", exc_info=True)
