"""The run pages' data: a test run's summary row and its items with their diffs.

An item's ``diff`` paths (``$.a[0]["x y"]``, as :mod:`bitfab.playback.compare` writes them) are
turned into segment lists, so that the page's script can highlight those nodes in both JSON
views by walking the values, without parsing paths itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bitfab.server.ui.values import (
    bounded,
    clip,
    count,
    fmt_ms,
    fmt_pct_change,
    id_of,
    mapping,
    preview,
    preview_args,
    text,
)
from bitfab.store.base import TestRun
from bitfab.store.records import iso_to_us

__all__ = ["ItemView", "diff_segments", "item_verdict", "item_view", "run_row", "verdict_class"]

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


def verdict_class(verdict: object) -> str:
    """The colour class of a verdict: same, changed, good, bad, muted-bad, skip."""
    return _VERDICT_CLASSES.get(verdict if isinstance(verdict, str) else "", "other")


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


def _changetext(value: object) -> str:
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


def item_verdict(verdict: str | None, item: Mapping[str, Any]) -> str:
    """An item's verdict: the stored column, else the item's own field, else ``unknown``."""
    return verdict or text(item.get("verdict"), 50) or "unknown"


def item_view(idx: int, verdict: str | None, item: Mapping[str, Any]) -> ItemView:
    """A test run item (``ReplayItem.to_dict()`` as stored) for the run page."""
    verdict_text = item_verdict(verdict, item)
    changes: list[dict[str, str]] = []
    highlights: list[dict[str, Any]] = []
    more = 0
    diff = item.get("diff")
    for change in diff if isinstance(diff, list) else []:
        if not isinstance(change, Mapping):
            continue
        kind = change.get("kind")
        if kind == "more":
            more += count(change.get("new"))
            continue
        path = change.get("path")
        segments = diff_segments(path)
        if len(changes) < 200:
            changes.append(
                {
                    "path": clip(path, 300),
                    "kind": clip(kind, 30),
                    "old": _changetext(change.get("old")),
                    "new": _changetext(change.get("new")),
                }
            )
        if segments is not None and len(highlights) < 1000:
            highlights.append({"path": segments, "kind": kind if isinstance(kind, str) else ""})
    tokens = mapping(item.get("tokens"))
    original_tokens = mapping(item.get("original_tokens"))
    model = text(item.get("model"), 100)
    original_model = text(item.get("original_model"), 100)
    if model and original_model and model != original_model:
        model = f"{original_model} → {model}"
    mocked = item.get("mocked")
    limits: dict[str, Any] = {"max_string": 20_000, "max_items": 500, "budget": 400_000}
    return ItemView(
        idx=idx,
        verdict=verdict_text,
        verdict_class=verdict_class(verdict_text),
        original_trace_id=id_of(item.get("original_trace_id")),
        replay_trace_id=id_of(item.get("trace_id")),
        original_ms=fmt_ms(item.get("original_duration_ms")),
        new_ms=fmt_ms(item.get("duration_ms")),
        ms_change=fmt_pct_change(item.get("original_duration_ms"), item.get("duration_ms")),
        original_tokens=count(original_tokens.get("total")),
        new_tokens=count(tokens.get("total")),
        model=model or original_model,
        error=text(item.get("error"), 5_000),
        original_error=text(item.get("original_error"), 5_000),
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


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def run_row(run: TestRun) -> dict[str, Any]:
    """A run as the lists and the run page sum it up: counts, bar, durations, tokens."""
    summary = _dict(run.summary)
    counts = _dict(summary.get("counts"))
    total = summary.get("total")
    total = total if isinstance(total, int) and not isinstance(total, bool) else None
    created = iso_to_us(run.created_at)
    completed = iso_to_us(run.completed_at)
    verdicts = [
        (str(v), n)
        for v, n in counts.items()
        if isinstance(n, int) and not isinstance(n, bool) and n > 0
    ]
    took = (completed - created) / 1000 if created is not None and completed is not None else None
    return {
        "run": run,
        "total": total,
        "counts": verdicts,
        "bar": [(v, round(n / total * 100, 2)) for v, n in verdicts] if total else [],
        "created_us": created,
        "took_ms": took,
        "original_mean": summary.get("original_mean_ms"),
        "new_mean": summary.get("new_mean_ms"),
        "original_p50": summary.get("original_p50_ms"),
        "new_p50": summary.get("new_p50_ms"),
        "original_tokens": _dict(summary.get("original_tokens")).get("total"),
        "new_tokens": _dict(summary.get("new_tokens")).get("total"),
    }
