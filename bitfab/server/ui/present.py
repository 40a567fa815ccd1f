"""What the UI's pages show, computed from store records: pure functions over plain values.

Recorded data is hostile here: any field may be missing, of another type, huge or deeply nested.
Every function below accepts that and never raises on it; values that go to the browser as JSON
are bounded by :func:`bounded` first, so that a page stays small and fast whatever was recorded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bitfab.store.records import iso_to_us

__all__ = [
    "ItemView",
    "SpanRow",
    "TraceView",
    "bounded",
    "clip",
    "diff_segments",
    "fmt_ago",
    "fmt_int",
    "fmt_ms",
    "fmt_pct_change",
    "fmt_time",
    "item_view",
    "preview",
    "preview_args",
    "span_detail",
    "trace_view",
    "verdict_class",
]

NONE = "\u2013"
"""What a cell shows for an unknown value (an en dash)."""

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
_VERDICT_CLASSES = {
    "same": "same",
    "changed": "changed",
    "fixed": "good",
    "valid": "good",
    "error": "bad",
    "not_replayable": "bad",
    "still_error": "muted-bad",
    "skipped": "skip",
}


# ---- formatting ---------------------------------------------------------------------------


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def fmt_ms(value: object) -> str:
    """A duration in milliseconds as people read it: ``0.42 ms``, ``312 ms``, ``4.2 s``."""
    ms = _finite(value)
    if ms is None:
        return NONE
    if ms == 0:
        return "0 ms"
    if ms < 0:
        return "-" + fmt_ms(-ms)
    if ms < 1:
        return f"{ms:.2f} ms"
    if ms < 10:
        return f"{ms:.1f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f} s"
    minutes, seconds = divmod(ms / 1000, 60)
    if minutes < 60:
        return f"{minutes:.0f}m {seconds:02.0f}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours:.0f}h {minutes:02.0f}m"


def fmt_int(value: object) -> str:
    """``1,752``; a dash for anything that isn't a number."""
    number = _finite(value)
    if number is None:
        return NONE
    return f"{round(number):,}"


def fmt_pct_change(old: object, new: object) -> str:
    """``-52%`` from ``old`` to ``new``; empty when either is unknown or ``old`` is zero."""
    a, b = _finite(old), _finite(new)
    if a is None or b is None or a == 0:
        return ""
    return f"{(b - a) / a * 100:+.0f}%"


def fmt_time(us: object, *, millis: bool = False) -> str:
    """``2026-11-27 15:02:49`` (UTC) of microseconds since the epoch (``.313`` with millis)."""
    from datetime import datetime, timezone

    number = _finite(us)
    if number is None:
        return NONE
    try:
        moment = datetime.fromtimestamp(number / 1e6, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return NONE
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    return text + f".{moment.microsecond // 1000:03d}" if millis else text


def fmt_ago(us: object, now_us: int) -> str:
    """``3 min ago`` of microseconds since the epoch, relative to ``now_us``."""
    number = _finite(us)
    if number is None:
        return NONE
    seconds = (now_us - number) / 1e6
    if seconds < -60:
        return "in the future"
    if seconds < 60:
        return "just now"
    for size, unit in ((86400 * 365, "y"), (86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size:.0f} {unit} ago"
    return "just now"  # pragma: no cover - the loop ends at one minute


def clip(value: object, limit: int) -> str:
    """``value`` as text of at most ``limit`` characters (an ellipsis marks a cut)."""
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def preview(value: object, limit: int = 140) -> str:
    """One line of compact JSON for a table cell, at most ``limit`` characters."""
    if value is None:
        return ""
    small = bounded(value, max_string=limit, max_items=20, max_depth=6, budget=limit * 4)
    try:
        text = json.dumps(small, ensure_ascii=False, separators=(", ", ": "))
    except (TypeError, ValueError):
        text = repr(small)
    return clip(" ".join(text.split()), limit)


def preview_args(value: object, limit: int = 140) -> str:
    """A call's recorded input (``[*args, kwargs]``) as one line: the arguments, comma-separated."""
    if not isinstance(value, list):
        return preview(value, limit)
    parts: list[str] = []
    size = 0
    for item in value[:20]:
        part = preview(item, limit)
        parts.append(part)
        size += len(part) + 2
        if size > limit:
            break
    return clip(", ".join(parts), limit)


def verdict_class(verdict: object) -> str:
    """The colour class of a verdict: same, changed, good, bad, muted-bad, skip."""
    return _VERDICT_CLASSES.get(verdict if isinstance(verdict, str) else "", "other")


# ---- bounding values sent to the browser --------------------------------------------------


class _Budget:
    def __init__(self, chars: int) -> None:
        self.left = chars


def bounded(
    value: Any,
    *,
    max_string: int = 20_000,
    max_items: int = 1_000,
    max_depth: int = 64,
    budget: int = 1_000_000,
) -> Any:
    """A copy of JSON ``value`` small enough for a page: long strings cut, long lists and
    objects cut, deep nesting stopped, at most about ``budget`` characters in all.

    Each cut leaves a readable marker in the data (``… 1,234 more characters``), so the page says
    what it leaves out. Anything that isn't JSON becomes its ``repr``, clipped.
    """
    return _bound(value, max_string, max_items, max_depth, _Budget(budget), 0)


def _bound(
    value: Any, max_string: int, max_items: int, max_depth: int, left: _Budget, d: int
) -> Any:
    if left.left <= 0:
        return "… (cut: the page's size limit)"
    if value is None or isinstance(value, bool):
        left.left -= 5
        return value
    if isinstance(value, (int, float)):
        left.left -= 12
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return value
    if isinstance(value, str):
        limit = min(max_string, max(left.left, 0))
        left.left -= min(len(value), limit) + 2
        if len(value) <= limit:
            return value
        return value[:limit] + f"… ({len(value) - limit:,} more characters)"
    if d >= max_depth:
        left.left -= 20
        return "… (nested deeper than the page shows)"
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for n, (key, item) in enumerate(value.items()):
            if n >= max_items or left.left <= 0:
                out["…"] = f"{len(value) - n:,} more keys"
                break
            name = key if isinstance(key, str) else str(key)
            if len(name) > max_string:
                name = name[:max_string] + "…"
            left.left -= len(name) + 4
            out[name] = _bound(item, max_string, max_items, max_depth, left, d + 1)
        return out
    if isinstance(value, (list, tuple)):
        items: list[Any] = []
        for n, item in enumerate(value):
            if n >= max_items or left.left <= 0:
                items.append(f"… {len(value) - n:,} more items")
                break
            items.append(_bound(item, max_string, max_items, max_depth, left, d + 1))
            left.left -= 1
        return items
    text = clip(repr(value), 200)
    left.left -= len(text)
    return text


# ---- usage --------------------------------------------------------------------------------


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    return int(value) if math.isfinite(value) and value > 0 else 0


def _usage_entries(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    contexts = data.get("contexts")
    if not isinstance(contexts, list):
        return []
    return [c for c in contexts if isinstance(c, Mapping) and any(k in c for k in _USAGE_KEYS)]


def _text(value: object, limit: int = 500) -> str | None:
    if value is None or value == "":
        return None
    return clip(value if isinstance(value, str) else json.dumps(value, default=repr), limit)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _error_of(data: Mapping[str, Any]) -> str | None:
    error = data.get("error")
    if (error is None or error == "") and not data.get("error_source"):
        return None
    kind = data.get("error_type")
    message = error if isinstance(error, str) else json.dumps(error, default=repr)
    if error is None or error == "":
        message = "(no message)"
    return f"{kind}: {message}" if isinstance(kind, str) and kind else message


# ---- the trace page -----------------------------------------------------------------------


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
    return _mapping(record.get("rawSpan"))


def _id(value: object) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


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
        span_id = _id(record.get("id"))
        if span_id is None or span_id in seen_ids:
            continue
        seen_ids.add(span_id)
        spans.append((span_id, record))

    children: dict[str | None, list[str]] = {}
    by_id = dict(spans)
    parents: dict[str, str | None] = {}
    for span_id, record in spans:
        parent = _id(_raw(record).get("parent_id"))
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
    test_run_id = _id(completion.get("testRunId")) or _id(completion.get("experimentId"))
    if test_run_id is None and root_record is not None:
        test_run_id = _id(root_record.get("testRunId")) or _id(root_record.get("experimentId"))
    source_span = _id(_raw(root_record).get("input_source_span_id")) if root_record else None
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
        ticks=[fmt_ms(total_ms * f / 4) if total_ms is not None else "" for f in range(5)],
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
    data = _mapping(raw.get("span_data"))
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
    key = _id(record.get("traceFunctionKey"))
    name = _text(data.get("name"), 200) or key or span_id
    usage = _usage_entries(data)
    model = next((m for m in (u.get("model") for u in usage) if isinstance(m, str) and m), None)
    tokens = sum(_count(u.get("inputTokens")) + _count(u.get("outputTokens")) for u in usage)
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
    data = _mapping(raw.get("span_data"))
    start, end = iso_to_us(raw.get("started_at")), iso_to_us(raw.get("ended_at"))
    duration = (end - start) / 1000 if start is not None and end is not None else None
    value_limits: dict[str, Any] = {"max_string": 200_000, "max_items": 5_000, "budget": 4_000_000}
    has_input, has_output = "input" in data, "output" in data
    inputs = data.get("input")
    meta = _mapping(data.get("input_meta"))
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
            "type": _text(data.get("error_type"), 300),
            "message": _text(data.get("error"), 20_000) or "",
            "source": _text(data.get("error_source"), 100),
            "traceback": _text(data.get("traceback"), 50_000),
        }
    usage = []
    for entry in _usage_entries(data)[:50]:
        cost = _finite(entry.get("costUsd"))
        usage.append(
            {
                "model": _text(entry.get("model"), 200),
                "provider": _text(entry.get("provider"), 200),
                "input_tokens": _count(entry.get("inputTokens")),
                "output_tokens": _count(entry.get("outputTokens")),
                "cached_tokens": _count(entry.get("cachedInputTokens")),
                "cost_usd": cost,
                "cost": f"${cost:.6f}".rstrip("0").rstrip(".") if cost is not None else None,
            }
        )
    test_run = _id(record.get("testRunId")) or _id(record.get("experimentId"))
    other = {k: v for k, v in data.items() if isinstance(k, str) and k not in _DETAIL_SKIP}
    return {
        "id": _id(record.get("id")),
        "trace_id": _id(record.get("traceId")),
        "parent_id": _id(raw.get("parent_id")),
        "key": _text(record.get("traceFunctionKey"), 1000),
        "name": _text(data.get("name"), 1000),
        "kind": _text(data.get("type"), 100),
        "started_at": _text(raw.get("started_at"), 100),
        "ended_at": _text(raw.get("ended_at"), 100),
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
            "source": _text(record.get("mockSource"), 100),
            "target": _text(record.get("mockTarget"), 100),
        }
        if record.get("mocked") is True
        else None,
        "test_run_id": test_run,
        "source_span_id": _id(raw.get("input_source_span_id")),
        "replayable": data.get("replayable") is not False,
        "details": bounded(other, max_string=2_000, max_items=200, budget=200_000),
    }


# ---- test runs ----------------------------------------------------------------------------


def diff_segments(path: object) -> list[str | int] | None:
    """The segments of a diff path (``$.a[0]["x y"]`` -> ``["a", 0, "x y"]``); None if it
    isn't one."""
    if not isinstance(path, str) or not path.startswith("$"):
        return None
    segments: list[str | int] = []
    i, n = 1, len(path)
    decoder = json.JSONDecoder()
    while i < n:
        ch = path[i]
        if ch == ".":
            j = i + 1
            while j < n and path[j] not in ".[":
                j += 1
            if j == i + 1:
                return None
            segments.append(path[i + 1 : j])
            i = j
        elif ch == "[":
            if i + 1 < n and path[i + 1] == '"':
                try:
                    key, end = decoder.raw_decode(path, i + 1)
                except ValueError:
                    return None
                if not isinstance(key, str) or end >= n or path[end] != "]":
                    return None
                segments.append(key)
                i = end + 1
            else:
                j = path.find("]", i)
                digits = path[i + 1 : j] if j > 0 else ""
                if not digits.isascii() or not digits.isdigit():
                    return None
                segments.append(int(digits))
                i = j + 1
        else:
            return None
    return segments


@dataclass
class ItemView:
    """One item of a test run as its page shows it."""

    idx: int
    verdict: str
    verdict_class: str
    original_trace_id: str | None
    replay_trace_id: str | None
    original_ms: str
    new_ms: str
    ms_change: str
    original_tokens: int
    new_tokens: int
    model: str | None
    error: str | None
    original_error: str | None
    changes: list[dict[str, str]]
    more_changes: int
    mocked: list[str]
    input_preview: str
    data: dict[str, Any]
    """What the item's JSON views show: input, original_output, result, diff paths."""


def _change_text(value: object) -> str:
    if value is None:
        return ""
    return preview(value, 80) if not isinstance(value, str) else clip(json.dumps(value), 80)


def _input_preview(value: object) -> str:
    if isinstance(value, Mapping) and set(value) <= {"args", "kwargs"}:
        args = value.get("args")
        parts = [preview_args(args, 100)] if isinstance(args, list) and args else []
        kwargs = value.get("kwargs")
        if isinstance(kwargs, Mapping) and kwargs:
            parts.append(clip(preview(kwargs, 100)[1:-1], 100))
        return clip(", ".join(parts), 100)
    return preview(value, 100)


def item_view(idx: int, verdict: str | None, item: Mapping[str, Any]) -> ItemView:
    """A test run item (``ReplayItem.to_dict()`` as stored) for the run page."""
    verdict_text = verdict or _text(item.get("verdict"), 50) or "unknown"
    changes: list[dict[str, str]] = []
    highlights: list[dict[str, Any]] = []
    more = 0
    diff = item.get("diff")
    for change in diff if isinstance(diff, list) else []:
        if not isinstance(change, Mapping):
            continue
        kind = change.get("kind")
        if kind == "more":
            more += _count(change.get("new"))
            continue
        path = change.get("path")
        segments = diff_segments(path)
        if len(changes) < 200:
            changes.append(
                {
                    "path": clip(path, 300),
                    "kind": clip(kind, 30),
                    "old": _change_text(change.get("old")),
                    "new": _change_text(change.get("new")),
                }
            )
        if segments is not None and len(highlights) < 1000:
            highlights.append({"path": segments, "kind": kind if isinstance(kind, str) else ""})
    tokens = _mapping(item.get("tokens"))
    original_tokens = _mapping(item.get("original_tokens"))
    model = _text(item.get("model"), 100)
    original_model = _text(item.get("original_model"), 100)
    if model and original_model and model != original_model:
        model = f"{original_model} → {model}"
    mocked = item.get("mocked")
    limits: dict[str, Any] = {"max_string": 20_000, "max_items": 500, "budget": 400_000}
    return ItemView(
        idx=idx,
        verdict=verdict_text,
        verdict_class=verdict_class(verdict_text),
        original_trace_id=_id(item.get("original_trace_id")),
        replay_trace_id=_id(item.get("trace_id")),
        original_ms=fmt_ms(item.get("original_duration_ms")),
        new_ms=fmt_ms(item.get("duration_ms")),
        ms_change=fmt_pct_change(item.get("original_duration_ms"), item.get("duration_ms")),
        original_tokens=_count(original_tokens.get("total")),
        new_tokens=_count(tokens.get("total")),
        model=model or original_model,
        error=_text(item.get("error"), 5_000),
        original_error=_text(item.get("original_error"), 5_000),
        changes=changes,
        more_changes=more,
        mocked=[clip(m, 100) for m in mocked[:20]] if isinstance(mocked, list) else [],
        input_preview=_input_preview(item.get("input")),
        data={
            "input": bounded(item.get("input"), **limits),
            "original_output": bounded(item.get("original_output"), **limits),
            "result": bounded(item.get("result"), **limits),
            "has_original": item.get("original_error") is None,
            "has_result": item.get("error") is None,
            "highlights": highlights,
        },
    )
