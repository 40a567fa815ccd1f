"""Helpers of the recording-side tests: read span records back in a compact, comparable shape."""

from __future__ import annotations

from typing import Any

from bitfab import Bitfab
from bitfab.testing import MemorySink
from bitfab.tracing.span import format_id

__all__ = ["data", "flushed", "links", "num", "uid"]


def uid(number: int) -> str:
    """The wire id of the ``number``-th id handed out by ``SequentialIds``."""
    return format_id(number)


def num(wire_id: str | None) -> int | None:
    """The small number behind a wire id written by ``SequentialIds`` (inverse of ``uid``)."""
    if wire_id is None:
        return None
    return int(wire_id.replace("-", "")[-12:], 16)


def data(record: dict[str, Any]) -> dict[str, Any]:
    """A span record's ``span_data`` without ``runtime`` (thread ids change from run to run) and
    ``seq`` (the start order in the trace, checked on its own)."""
    span_data = dict(record["rawSpan"]["span_data"])
    span_data.pop("runtime", None)
    span_data.pop("seq", None)
    return span_data


def links(records: list[dict[str, Any]]) -> list[tuple[str, int | None, int | None, int | None]]:
    """``(key, id, parent id, trace id)`` of each record, as small numbers, in record order."""
    return [
        (
            record["traceFunctionKey"],
            num(record["rawSpan"]["id"]),
            num(record["rawSpan"].get("parent_id")),
            num(record["rawSpan"]["trace_id"]),
        )
        for record in records
    ]


def flushed(client: Bitfab, sink: MemorySink) -> list[dict[str, Any]]:
    """Flush ``client`` and return the span records in ``sink``."""
    assert client.flush(timeout=10)
    return sink.spans
