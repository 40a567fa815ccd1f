"""Test helpers for apps that use bitfab, and for bitfab itself (a pytest plugin).

- :class:`MemorySink` keeps records in memory; ``Bitfab(sink=MemorySink())`` records into it.
- :class:`SequentialIds` and :class:`FakeClock` make ids and timestamps deterministic.
- The ``bitfab_capture`` fixture sends the default instance's records to memory for one test::

    def test_triage(bitfab_capture):
        triage(ticket)
        assert [s["traceFunctionKey"] for s in bitfab_capture.spans] == ["triage"]
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

from bitfab.client import Bitfab
from bitfab.export.sinks import MemorySink

__all__ = ["Capture", "FakeClock", "MemorySink", "SequentialIds", "span_tree"]


class SequentialIds:
    """Ids 1, 2, 3, ... written on the wire as ``00000000-0000-7000-8000-000000000001``."""

    def __init__(self, start: int = 1) -> None:
        self._counter = itertools.count(start)
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            return next(self._counter)


class FakeClock:
    """A wall clock in nanoseconds that moves only by ``step_ns`` per reading or by ``advance``."""

    def __init__(self, start_ns: int = 1_767_225_600_000_000_000, step_ns: int = 1_000_000) -> None:
        self.now_ns = start_ns
        self.step_ns = step_ns
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            now = self.now_ns
            self.now_ns += self.step_ns
            return now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now_ns += int(seconds * 1e9)


def span_tree(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Nest span records into trees: ``{key, name, input, output, error, children}`` per span."""
    nodes: dict[str, dict[str, Any]] = {}
    order: list[tuple[str, str | None, str]] = []
    for record in spans:
        raw = record["rawSpan"]
        data = raw["span_data"]
        node: dict[str, Any] = {"key": record["traceFunctionKey"], "name": data["name"]}
        for field in ("input", "output", "error"):
            if field in data:
                node[field] = data[field]
        node["children"] = []
        nodes[raw["id"]] = node
        order.append((raw["started_at"], raw.get("parent_id"), raw["id"]))
    roots: list[dict[str, Any]] = []
    for _, parent_id, span_id in sorted(order, key=lambda item: (item[0], item[2])):
        parent = nodes.get(parent_id) if parent_id else None
        (parent["children"] if parent is not None else roots).append(nodes[span_id])
    return roots


class Capture:
    """Records captured by the ``bitfab_capture`` fixture; reading them flushes first."""

    def __init__(self, client: Bitfab, sink: MemorySink) -> None:
        self.client = client
        self.sink = sink

    @property
    def spans(self) -> list[dict[str, Any]]:
        self.client.flush(timeout=10)
        return self.sink.spans

    @property
    def traces(self) -> list[dict[str, Any]]:
        self.client.flush(timeout=10)
        return self.sink.traces

    def tree(self) -> list[dict[str, Any]]:
        """The captured spans nested as trees (see :func:`span_tree`)."""
        return span_tree(self.spans)

    def clear(self) -> None:
        self.client.flush(timeout=10)
        self.sink.clear()


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional for users of MemorySink
    pass
else:

    @pytest.fixture
    def bitfab_capture() -> Iterator[Capture]:
        """Send the default bitfab instance's records to memory during this test."""
        import bitfab

        client = bitfab.default_instance()
        sink = MemorySink()
        previous = client._use_sink(sink)
        try:
            yield Capture(client, sink)
        finally:
            client._use_sink(previous)
