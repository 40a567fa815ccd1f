"""Values as the UI's pages show them: numbers, durations and times formatted, recorded text
clipped, recorded JSON bounded before it goes to the browser.

Recorded data is hostile: any field may be missing, of another type, huge or deeply nested.
Every function here accepts that and never raises on it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "NONE",
    "bounded",
    "clip",
    "count",
    "finite",
    "fmt_ago",
    "fmt_int",
    "fmt_ms",
    "fmt_pct_change",
    "fmt_time",
    "id_of",
    "mapping",
    "preview",
    "preview_args",
    "text",
]

NONE = "\u2013"
"""What a cell shows for an unknown value (an en dash)."""


def finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def fmt_ms(value: object) -> str:
    """A duration in milliseconds as people read it: ``0.42 ms``, ``312 ms``, ``4.2 s``."""
    ms = finite(value)
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
    number = finite(value)
    if number is None:
        return NONE
    return f"{round(number):,}"


def fmt_pct_change(old: object, new: object) -> str:
    """``-52%`` from ``old`` to ``new``; empty when either is unknown or ``old`` is zero."""
    a, b = finite(old), finite(new)
    if a is None or b is None or a == 0:
        return ""
    return f"{(b - a) / a * 100:+.0f}%"


def fmt_time(us: object, *, millis: bool = False) -> str:
    """``2026-11-27 15:02:49`` (UTC) of microseconds since the epoch (``.313`` with millis)."""
    number = finite(us)
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
    number = finite(us)
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


def _more(n: int, noun: str) -> str:
    return f"{n:,} more {noun}{'' if n == 1 else 's'}"


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
                out["…"] = _more(len(value) - n, "key")
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
                items.append("… " + _more(len(value) - n, "item"))
                break
            items.append(_bound(item, max_string, max_items, max_depth, left, d + 1))
            left.left -= 1
        return items
    text = clip(repr(value), 200)
    left.left -= len(text)
    return text


# ---- reading records ----------------------------------------------------------------------


def count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    return int(value) if math.isfinite(value) and value > 0 else 0


def text(value: object, limit: int = 500) -> str | None:
    if value is None or value == "":
        return None
    return clip(value if isinstance(value, str) else json.dumps(value, default=repr), limit)


def mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def id_of(value: object) -> str | None:
    """An id field as text; None when absent or empty."""
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)
