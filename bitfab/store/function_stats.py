"""The per-key summary behind :meth:`Store.functions`: the backend-independent part.

Each SQL backend keeps one row per ``traceFunctionKey`` in a ``function_stats`` table and
changes it in the same transaction as the spans it summarizes, so the functions list reads a
few rows instead of every span. A write or a delete first gathers what it changes into a
:class:`Changes` (one :class:`KeyChange` per key); the backend then applies each key's change
as one upsert, in key order (several PostgreSQL writers then lock the rows in one order, never
in a cycle). Counts and token sums are added or subtracted, so they stay exact; so does the
newest call (by start, then id), which inserts compare with what is stored, and which a
delete makes the backend read again from an index, with the first start.

The median duration is the one figure that needs every value: it is read from a histogram of
the durations with logarithmic buckets (as DDSketch keeps them), which a delete decrements.
Each bucket holds the durations in ``(g**(i-1), g**i]`` with ``g = (1 + a) / (1 - a)``, and is
read as the value ``2 * g**i / (g + 1)``, within ``a`` (:data:`ACCURACY`, 2%) of every duration
in it. The median is the mean of the values of the middle two ranks, so it is within 2% of the
exact median (when those two have one sign, as durations do unless a clock went backwards).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bitfab.store.base import FunctionStats
from bitfab.store.records import SpanRow

__all__ = [
    "ACCURACY",
    "Call",
    "Changes",
    "KeyChange",
    "bucket",
    "bucket_value",
    "call_of",
    "median",
    "stats_durations",
    "stats_from_row",
]

ACCURACY = 0.02
"""The largest relative error of a histogram bucket's value, hence of the median."""

_GAMMA = (1 + ACCURACY) / (1 - ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)
_MIDDLE = 2 / (_GAMMA + 1)

Call = tuple[str, int, Any, "int | None", str, "str | None", "float | None", Any, Any, Any]
"""One call as the summary counts it: ``(key, is_root, has_error, start_us, id, name,
duration_ms, input_tokens, output_tokens, cached_tokens)``, the columns the backends select in
this order (a flag may come as an int or a bool, a token count as None)."""


def bucket(duration_ms: float) -> str:
    """The histogram bucket of a duration: ``p<i>`` above zero, ``n<i>`` below, ``z`` for 0."""
    if duration_ms > 0:
        return f"p{math.ceil(math.log(duration_ms) / _LOG_GAMMA)}"
    if duration_ms < 0:
        return f"n{math.ceil(math.log(-duration_ms) / _LOG_GAMMA)}"
    return "z"


def bucket_value(name: str) -> float:
    """The duration a bucket stands for: within :data:`ACCURACY` of each duration in it."""
    if name == "z":
        return 0.0
    value = _MIDDLE * _GAMMA ** int(name[1:])
    return value if name[0] == "p" else -value


def _rank(name: str) -> tuple[int, int]:
    if name == "z":
        return (0, 0)
    index = int(name[1:])
    return (1, index) if name[0] == "p" else (-1, -index)


def median(durations: Mapping[str, int]) -> float | None:
    """The median of a histogram's durations (the mean of the middle two for an even count).

    None when it holds none. Buckets with a count of 0 or less are ignored.
    """
    buckets = sorted(
        ((name, n) for name, n in durations.items() if n > 0), key=lambda b: _rank(b[0])
    )
    total = sum(n for _, n in buckets)
    if total == 0:
        return None
    low, high = (total + 1) // 2, (total + 2) // 2  # 1-based ranks, as the exact median takes
    values: list[float] = []
    seen = 0
    for name, n in buckets:
        seen += n
        while len(values) < 2 and seen >= (low, high)[len(values)]:
            values.append(bucket_value(name))
        if len(values) == 2:
            break
    return (values[0] + values[1]) / 2


def call_of(row: SpanRow) -> Call | None:
    """The call a span row counts as, or None when it doesn't count (no key, or a replay)."""
    if row.key is None or row.test_run_id is not None:
        return None
    return (
        row.key,
        row.is_root,
        row.error is not None,
        row.start_us,
        row.id,
        row.name,
        row.duration_ms,
        row.input_tokens,
        row.output_tokens,
        row.cached_tokens,
    )


def _newer(start_us: int | None, span_id: str, than_us: int | None, than_id: str) -> bool:
    # An unknown start sorts as the oldest; ids break ties (code point order, which is the
    # byte order of UTF-8 that both backends compare in).
    if start_us != than_us:
        return than_us is None or (start_us is not None and start_us > than_us)
    return span_id > than_id


@dataclass
class KeyChange:
    """What one transaction changes in one key's summary row."""

    calls: int = 0
    root_calls: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    first_seen_us: int | None = None
    """Earliest start among the calls added (deletes leave it for the backend to read)."""
    last_seen_us: int | None = None
    last_id: str | None = None
    """Id of the newest call added, with its start and name just above and below."""
    name: str | None = None
    durations: dict[str, int] = field(default_factory=dict)
    removed: bool = False
    """Some call was removed: the first and newest call must be read again from the spans."""


class Changes:
    """The summary changes of one transaction, gathered key by key."""

    def __init__(self) -> None:
        self.keys: dict[str, KeyChange] = {}

    def __bool__(self) -> bool:
        return bool(self.keys)

    def add(self, calls: Iterable[Call | None]) -> None:
        """Count calls that were inserted."""
        keys = self.keys
        for call in calls:
            if call is None:
                continue
            key, is_root, has_error, start_us, span_id, name, duration, inp, out, cached = call
            change = keys.get(key)
            if change is None:
                change = keys[key] = KeyChange()
            change.calls += 1
            change.root_calls += 1 if is_root else 0
            change.errors += 1 if has_error else 0
            change.input_tokens += inp or 0
            change.output_tokens += out or 0
            change.cached_tokens += cached or 0
            if start_us is not None and (
                change.first_seen_us is None or start_us < change.first_seen_us
            ):
                change.first_seen_us = start_us
            if change.last_id is None or _newer(
                start_us, span_id, change.last_seen_us, change.last_id
            ):
                change.last_seen_us, change.last_id, change.name = start_us, span_id, name
            if duration is not None:
                slot = bucket(duration)
                change.durations[slot] = change.durations.get(slot, 0) + 1

    def remove(self, calls: Iterable[Call | None]) -> None:
        """Uncount calls that were deleted."""
        keys = self.keys
        for call in calls:
            if call is None:
                continue
            key, is_root, has_error, _, _, _, duration, inp, out, cached = call
            change = keys.get(key)
            if change is None:
                change = keys[key] = KeyChange()
            change.removed = True
            change.calls -= 1
            change.root_calls -= 1 if is_root else 0
            change.errors -= 1 if has_error else 0
            change.input_tokens -= inp or 0
            change.output_tokens -= out or 0
            change.cached_tokens -= cached or 0
            if duration is not None:
                slot = bucket(duration)
                change.durations[slot] = change.durations.get(slot, 0) - 1

    def params(self, text: Callable[[str], str] = str) -> list[tuple[Any, ...]]:
        """One parameter row per key for the backend's upsert, in key order.

        ``(key, calls, root_calls, errors, first_seen_us, last_seen_us, last_id, name,
        input_tokens, output_tokens, cached_tokens, durations)``, the durations as JSON text
        (counts to add; negative for removed calls). ``text`` maps each text value to its
        stored form.
        """
        rows = []
        for key in sorted(self.keys):
            c = self.keys[key]
            durations = {slot: n for slot, n in c.durations.items() if n != 0}
            rows.append(
                (
                    text(key),
                    c.calls,
                    c.root_calls,
                    c.errors,
                    c.first_seen_us,
                    c.last_seen_us,
                    None if c.last_id is None else text(c.last_id),
                    None if c.name is None else text(c.name),
                    c.input_tokens,
                    c.output_tokens,
                    c.cached_tokens,
                    json.dumps(durations, separators=(",", ":")),
                )
            )
        return rows

    def removed_keys(self) -> list[str]:
        """The keys that lost calls, in order: their first and newest call must be read again."""
        return sorted(key for key, change in self.keys.items() if change.removed)


def stats_durations(value: str | Mapping[str, Any]) -> dict[str, int]:
    """A stored histogram (JSON text, or already parsed) as a dict of bucket counts."""
    parsed = json.loads(value) if isinstance(value, str) else value
    return {str(k): int(v) for k, v in parsed.items()}


def stats_from_row(row: Sequence[Any]) -> FunctionStats:
    """A row of the backends' ``FUNCTIONS`` query (key, name, calls, root_calls, errors,
    first_seen_us, last_seen_us, input, output and cached tokens, durations) as FunctionStats."""
    key, name, calls, root_calls, errors, first, last, inp, out, cached, durations = row
    return FunctionStats(
        key=key,
        name=name,
        calls=calls,
        root_calls=root_calls,
        errors=errors,
        first_seen_us=first,
        last_seen_us=last,
        p50_duration_ms=median(stats_durations(durations)),
        input_tokens=inp,
        output_tokens=out,
        cached_tokens=cached,
        total_tokens=inp + out,
    )
