"""The trace page's data: a trace's spans as a tree with a timeline, one span's detail.

Parent links come from recorded data and may be wrong: a span whose parent never arrived, or a
loop of parent links, is shown at the top level, marked as an orphan; nothing is lost or
repeated, and the walk is iterative, so a trace 5,000 spans deep is fine.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bitfab.server.ui.values import (
    bounded,
    clip,
    count,
    finite,
    fmt_ms,
    fmt_time,
    id_of,
    mapping,
    text,
)
from bitfab.store.records import iso_to_us

__all__ = ["MAX_DEPTH_CLASS", "SpanRow", "TraceView", "span_detail", "trace_view"]

MAX_DEPTH_CLASS = 16
"""Tree rows are indented one step per level up to this depth; deeper ones show their depth."""

_USAGE_KEYS = ("inputTokens", "outputTokens", "cachedInputTokens", "costUsd")
_DETAIL_SKIP = frozenset(
    {
        "name",
        "type",
        "input",
        "output",
        "error",
        "error_source",
        "error_type",
        "traceback",
        "contexts",
        "metadata",
    }
)
_KINDS = frozenset({"function", "llm", "tool", "custom", "retrieval", "agent", "chain", "http"})


def _usage_entries(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    contexts = data.get("contexts")
    if not isinstance(contexts, list):
        return []
    return [c for c in contexts if isinstance(c, Mapping) and any(k in c for k in _USAGE_KEYS)]


def _error_of(data: Mapping[str, Any]) -> str | None:
    error = data.get("error")
    if (error is None or error == "") and not data.get("error_source"):
        return None
    kind = data.get("error_type")
    message = error if isinstance(error, str) else json.dumps(error, default=repr)
    if error is None or error == "":
        message = "(no message)"
    return f"{kind}: {message}" if isinstance(kind, str) and kind else message


@dataclass
class SpanRow:
    """One row of a trace's tree, in depth-first order."""

    id: str
    parent_id: str | None
    depth: int
    name: str
    key: str | None
    kind: str | None
    start_us: int | None
    duration_ms: float | None
    offset_pct: float | None
    """Where the bar starts, in percent of the trace's time span."""
    width_pct: float | None
    error: str | None
    mocked: bool
    model: str | None
    tokens: int
    children: int = 0
    orphan: bool = False
    """Its parent isn't in the trace (not received, or a loop of parent links)."""

    @property
    def depth_class(self) -> int:
        return min(self.depth, MAX_DEPTH_CLASS)

    @property
    def kind_class(self) -> str:
        """The span type as a CSS class name: one of a few known types, else ``other``."""
        kind = (self.kind or "").lower()
        return kind if kind in _KINDS else "other"


@dataclass
class TraceView:
    """A trace as its page shows it."""

    trace_id: str
    rows: list[SpanRow]
    root: SpanRow | None
    start_us: int | None
    total_ms: float | None
    ticks: list[str]
    """Labels of the time axis at 0, 25, 50, 75 and 100 percent."""
    errors: int
    tokens: int
    mocked: int
    test_run_id: str | None
    source_span_id: str | None
    completed: bool
    expected_spans: int | None
    models: list[str] = field(default_factory=list)


def _raw(record: Mapping[str, Any]) -> Mapping[str, Any]:
    return mapping(record.get("rawSpan"))


def trace_view(
    trace_id: str, records: Sequence[Mapping[str, Any]], completion: Mapping[str, Any] | None
) -> TraceView:
    """The rows of ``records`` (one trace's spans, ordered by start) as a tree with a timeline.

    Children follow their parent in start order. A span whose parent isn't in the trace, and the
    spans of a loop of parent links, are shown at the top level, marked as orphans.
    """
    spans: list[tuple[str, Mapping[str, Any]]] = []
    seen_ids: set[str] = set()
    for record in records:
        span_id = id_of(record.get("id"))
        if span_id is None or span_id in seen_ids:
            continue
        seen_ids.add(span_id)
        spans.append((span_id, record))

    children: dict[str | None, list[str]] = {}
    by_id = dict(spans)
    parents: dict[str, str | None] = {}
    for span_id, record in spans:
        parent = id_of(_raw(record).get("parent_id"))
        if parent is not None and (parent not in by_id or parent == span_id):
            parent = None if parent == span_id else parent
        parents[span_id] = parent
        children.setdefault(parent if parent in by_id else None, []).append(span_id)

    starts: list[int] = []
    ends: list[int] = []
    for _, record in spans:
        raw = _raw(record)
        start, end = iso_to_us(raw.get("started_at")), iso_to_us(raw.get("ended_at"))
        if start is not None:
            starts.append(start)
            if end is not None and end >= start:
                ends.append(end)
    t0 = min(starts) if starts else None
    t_end = max([*ends, *starts]) if starts else None
    total_us = (t_end - t0) if t0 is not None and t_end is not None else None

    rows: list[SpanRow] = []
    visited: set[str] = set()

    def walk(top: str, orphan: bool) -> None:
        stack: list[tuple[str, int]] = [(top, 0)]
        while stack:
            span_id, depth = stack.pop()
            if span_id in visited:
                continue
            visited.add(span_id)
            row = _row(span_id, by_id[span_id], depth, t0, total_us)
            row.parent_id = parents.get(span_id) if depth else None
            row.orphan = orphan and depth == 0
            kids = [k for k in children.get(span_id, ()) if k not in visited]
            row.children = len(kids)
            rows.append(row)
            stack.extend((kid, depth + 1) for kid in reversed(kids))

    for top in children.get(None, []):
        walk(top, parents.get(top) is not None)
    for span_id, _ in spans:  # a loop of parent links: never reached from a top span
        if span_id not in visited:
            walk(span_id, True)

    root = rows[0] if rows else None
    root_record = by_id.get(root.id) if root else None
    completion = completion or {}
    test_run_id = id_of(completion.get("testRunId")) or id_of(completion.get("experimentId"))
    if test_run_id is None and root_record is not None:
        test_run_id = id_of(root_record.get("testRunId")) or id_of(root_record.get("experimentId"))
    source_span = id_of(_raw(root_record).get("input_source_span_id")) if root_record else None
    models: list[str] = []
    for row in rows:
        if row.model and row.model not in models:
            models.append(row.model)
    expected = completion.get("expectedSpanCount")
    total_ms = total_us / 1000 if total_us is not None else None
    return TraceView(
        trace_id=trace_id,
        rows=rows,
        root=root,
        start_us=t0,
        total_ms=total_ms,
        ticks=[fmt_ms(total_ms * f / 2) if total_ms is not None else "" for f in range(3)],
        errors=sum(1 for row in rows if row.error is not None),
        tokens=sum(row.tokens for row in rows),
        mocked=sum(1 for row in rows if row.mocked),
        test_run_id=test_run_id,
        source_span_id=source_span,
        completed=bool(completion) and completion.get("completed") is not False,
        expected_spans=expected
        if isinstance(expected, int) and not isinstance(expected, bool)
        else None,
        models=models[:5],
    )


def _row(
    span_id: str, record: Mapping[str, Any], depth: int, t0: int | None, total_us: int | None
) -> SpanRow:
    raw = _raw(record)
    data = mapping(raw.get("span_data"))
    start, end = iso_to_us(raw.get("started_at")), iso_to_us(raw.get("ended_at"))
    duration = (
        (end - start) / 1000 if start is not None and end is not None and end >= start else None
    )
    offset = width = None
    if start is not None and t0 is not None and total_us:
        offset = (start - t0) / total_us * 100
        span_us = (end - start) if duration is not None and end is not None else 0
        width = max(span_us / total_us * 100, 0.15)
        offset = min(offset, 100 - width)
    elif start is not None and t0 is not None:
        offset, width = 0.0, 100.0 if duration is not None else 0.15
    key = id_of(record.get("traceFunctionKey"))
    name = text(data.get("name"), 200) or key or span_id
    usage = _usage_entries(data)
    model = next((m for m in (u.get("model") for u in usage) if isinstance(m, str) and m), None)
    tokens = sum(count(u.get("inputTokens")) + count(u.get("outputTokens")) for u in usage)
    kind = data.get("type")
    return SpanRow(
        id=span_id,
        parent_id=None,
        depth=depth,
        name=name,
        key=clip(key, 200) if key is not None else None,
        kind=clip(kind, 40) if isinstance(kind, str) and kind else None,
        start_us=start,
        duration_ms=duration,
        offset_pct=round(offset, 3) if offset is not None else None,
        width_pct=round(width, 3) if width is not None else None,
        error=_error_of(data),
        mocked=record.get("mocked") is True,
        model=clip(model, 100) if model else None,
        tokens=tokens,
    )


def span_detail(record: Mapping[str, Any]) -> dict[str, Any]:
    """One span for the trace page's detail pane, as JSON with bounded values."""
    raw = _raw(record)
    data = mapping(raw.get("span_data"))
    start, end = iso_to_us(raw.get("started_at")), iso_to_us(raw.get("ended_at"))
    duration = (end - start) / 1000 if start is not None and end is not None else None
    value_limits: dict[str, Any] = {"max_string": 200_000, "max_items": 5_000, "budget": 4_000_000}
    has_input, has_output = "input" in data, "output" in data
    inputs = data.get("input")
    meta = mapping(data.get("input_meta"))
    kwarg_names = meta.get("kwarg_names")
    if (
        isinstance(inputs, list)
        and inputs
        and isinstance(kwarg_names, list)
        and kwarg_names
        and isinstance(inputs[-1], Mapping)
    ):
        inputs = {"args": inputs[:-1], "kwargs": inputs[-1]}
    error = None
    if _error_of(data) is not None:
        error = {
            "type": text(data.get("error_type"), 300),
            "message": text(data.get("error"), 20_000) or "",
            "source": text(data.get("error_source"), 100),
            "traceback": text(data.get("traceback"), 50_000),
        }
    usage = []
    for entry in _usage_entries(data)[:50]:
        cost = finite(entry.get("costUsd"))
        usage.append(
            {
                "model": text(entry.get("model"), 200),
                "provider": text(entry.get("provider"), 200),
                "input_tokens": count(entry.get("inputTokens")),
                "output_tokens": count(entry.get("outputTokens")),
                "cached_tokens": count(entry.get("cachedInputTokens")),
                "cost_usd": cost,
                "cost": f"${cost:.6f}".rstrip("0").rstrip(".") if cost is not None else None,
            }
        )
    test_run = id_of(record.get("testRunId")) or id_of(record.get("experimentId"))
    other = {k: v for k, v in data.items() if isinstance(k, str) and k not in _DETAIL_SKIP}
    return {
        "id": id_of(record.get("id")),
        "trace_id": id_of(record.get("traceId")),
        "parent_id": id_of(raw.get("parent_id")),
        "key": text(record.get("traceFunctionKey"), 1000),
        "name": text(data.get("name"), 1000),
        "kind": text(data.get("type"), 100),
        "started_at": text(raw.get("started_at"), 100),
        "ended_at": text(raw.get("ended_at"), 100),
        "start": fmt_time(start) if start is not None else None,
        "duration": fmt_ms(duration) if duration is not None else None,
        "has_input": has_input,
        "input": bounded(inputs, **value_limits) if has_input else None,
        "has_output": has_output,
        "output": bounded(data.get("output"), **value_limits) if has_output else None,
        "error": error,
        "usage": usage,
        "metadata": bounded(data.get("metadata"), **value_limits) if data.get("metadata") else None,
        "mocked": {
            "source": text(record.get("mockSource"), 100),
            "target": text(record.get("mockTarget"), 100),
        }
        if record.get("mocked") is True
        else None,
        "test_run_id": test_run,
        "source_span_id": id_of(raw.get("input_source_span_id")),
        "replayable": data.get("replayable") is not False,
        "details": bounded(other, max_string=2_000, max_items=200, budget=200_000),
    }
