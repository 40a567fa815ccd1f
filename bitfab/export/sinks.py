"""Where exported records go: the embedded store, or memory (tests).

A sink's ``export`` runs on the exporter's thread only. It returns an :class:`ExportResult`
instead of raising: at the export boundary failures are values, counted by reason.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bitfab._internal import logger, warn_once

__all__ = ["ExportResult", "MemorySink", "Sink", "StoreSink"]


@dataclass
class ExportResult:
    """How many span records a sink accepted and how many it dropped, by reason."""

    exported: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str, count: int = 1) -> None:
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + count


class Sink(Protocol):
    """Receives batches of wire records from the exporter's thread."""

    def export(
        self, spans: Sequence[Mapping[str, Any]], traces: Sequence[Mapping[str, Any]]
    ) -> ExportResult: ...

    def shutdown(self) -> None: ...

    def after_fork(self) -> None: ...


class MemorySink:
    """Keeps every record in lists: for tests, and for users asserting on their own spans."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[dict[str, Any]] = []
        self._traces: list[dict[str, Any]] = []

    def export(
        self, spans: Sequence[Mapping[str, Any]], traces: Sequence[Mapping[str, Any]]
    ) -> ExportResult:
        with self._lock:
            self._spans.extend(dict(record) for record in spans)
            self._traces.extend(dict(record) for record in traces)
        return ExportResult(exported=len(spans))

    @property
    def spans(self) -> list[dict[str, Any]]:
        """The span records received so far, in export order."""
        with self._lock:
            return list(self._spans)

    @property
    def traces(self) -> list[dict[str, Any]]:
        """The trace completion records received so far."""
        with self._lock:
            return list(self._traces)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()
            self._traces.clear()

    def shutdown(self) -> None:
        return None

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._spans = []
        self._traces = []


class StoreSink:
    """Writes batches into a :class:`~bitfab.store.Store` (the embedded SQLite file by default).

    The store is opened on first use, on the exporter's thread, so importing and decorating
    never touch the disk. A busy database is retried with backoff until ``timeout``.
    """

    def __init__(self, path: str, *, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self._store: Any = None
        self._lock = threading.Lock()

    def _open(self) -> Any:
        if self._store is None:
            from bitfab.store import open_store

            self._store = open_store(self.path)
        return self._store

    def export(
        self, spans: Sequence[Mapping[str, Any]], traces: Sequence[Mapping[str, Any]]
    ) -> ExportResult:
        from bitfab.store import StoreBusyError, StoreError

        result = ExportResult()
        deadline = time.monotonic() + self.timeout
        delay = 0.05
        while True:
            try:
                with self._lock:
                    written = self._open().write(spans, traces)
            except StoreBusyError:
                if time.monotonic() + delay > deadline:
                    result.drop("store_busy", len(spans))
                    warn_once(
                        "store-busy",
                        "bitfab: the store at %s stayed locked; spans dropped",
                        self.path,
                    )
                    return result
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            except StoreError as exc:
                result.drop("store_error", len(spans))
                warn_once(
                    "store-error", "bitfab: cannot write to the store at %s: %s", self.path, exc
                )
                return result
            break
        rejected_spans = [item for item in written.rejected if item.kind == "span"]
        result.exported = written.spans_inserted + written.spans_duplicate
        result.drop("rejected", len(rejected_spans))
        result.drop("trace_dropped", written.spans_discarded)
        if written.rejected:
            logger.debug(
                "bitfab: store rejected %d records: %s", len(written.rejected), written.rejected[:3]
            )
        return result

    def shutdown(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def after_fork(self) -> None:
        # The parent's connections must not be used here; open anew on next use.
        self._lock = threading.Lock()
        self._store = None
