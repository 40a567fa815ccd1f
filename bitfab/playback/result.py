"""What a replay returns: one ``ReplayItem`` per recorded call, gathered in a ``ReplayResult``.

Verdicts of an item:

- ``same`` / ``changed``: both calls returned; the outputs are (not) equal after ignores;
- ``error``: the new call raised and the original didn't;
- ``fixed``: the original raised and the new call didn't;
- ``still_error``: both raised;
- ``not_replayable``: the recorded call could not be rebuilt or run (``error`` says why);
- ``skipped``: not run on purpose;
- ``valid``: dry run, the call could be rebuilt.

``ReplayResult.ok`` is False when an item is ``changed``, ``error`` or ``not_replayable``.
``still_error`` is not a regression (the code fails as it did) and counts as ok.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import math
import statistics
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, overload

from bitfab.exceptions import RegressionError
from bitfab.playback.compare import Change, Truncated

__all__ = [
    "REGRESSION_VERDICTS",
    "VERDICTS",
    "ReplayItem",
    "ReplayResult",
    "Summary",
]

VERDICTS = (
    "same",
    "changed",
    "error",
    "fixed",
    "still_error",
    "not_replayable",
    "skipped",
    "valid",
)
"""Every verdict an item can have, in the order summaries list them."""

REGRESSION_VERDICTS = frozenset({"changed", "error", "not_replayable"})
"""Verdicts that make ``ReplayResult.ok`` False."""

TOKEN_KEYS = ("input", "output", "cached", "total")

ToJsonable = Callable[[Any], Any]

_MAX_JSON_DEPTH = 64
_MAX_REPR = 1000
_REGRESSIONS_LISTED = 20


def _no_tokens() -> dict[str, int]:
    return dict.fromkeys(TOKEN_KEYS, 0)


@dataclass(kw_only=True)
class ReplayItem:
    """The replay of one recorded call.

    ``input``, ``result`` and ``original_output`` hold live values when they could be decoded
    (``input`` as ``{"args": [...], "kwargs": {...}}``), else the readable recorded JSON.
    ``error`` is ``"TypeName: message"`` of the new call, or why the item could not run.
    Token counts are ``{"input", "output", "cached", "total"}``, zeros when unknown.
    """

    index: int
    input: Any = None
    result: Any = None
    original_output: Any = None
    error: str | None = None
    error_type: str | None = None
    duration_ms: float | None = None
    tokens: dict[str, int] = field(default_factory=_no_tokens)
    model: str | None = None
    original_duration_ms: float | None = None
    original_tokens: dict[str, int] = field(default_factory=_no_tokens)
    original_model: str | None = None
    original_error: str | None = None
    verdict: str
    diff: list[Change] = field(default_factory=list)
    score: float | None = None
    trace_id: str | None = None
    original_trace_id: str
    original_span_id: str
    mocked: list[str] = field(default_factory=list)

    def to_dict(self, to_jsonable: ToJsonable | None = None) -> dict[str, Any]:
        """The item as JSON-serializable data.

        Live values go through ``to_jsonable`` when given (bitfab's encoder, say); whatever it
        returns or can't handle falls back on a safe conversion (``repr`` for unknown objects).
        Never raises.
        """
        live = _LiveConverter(to_jsonable)
        data = {
            "index": self.index,
            "verdict": self.verdict,
            "input": live(self.input),
            "result": live(self.result),
            "original_output": live(self.original_output),
            "error": self.error,
            "error_type": self.error_type,
            "duration_ms": self.duration_ms,
            "tokens": self.tokens,
            "model": self.model,
            "original_duration_ms": self.original_duration_ms,
            "original_tokens": self.original_tokens,
            "original_model": self.original_model,
            "original_error": self.original_error,
            "diff": self.diff,
            "score": self.score,
            "trace_id": self.trace_id,
            "original_trace_id": self.original_trace_id,
            "original_span_id": self.original_span_id,
            "mocked": self.mocked,
        }
        out: dict[str, Any] = _jsonable(data)
        return out

    def _token_total(self, original: bool) -> int:
        tokens = self.original_tokens if original else self.tokens
        return _as_int(tokens.get("total", 0))


@dataclass(frozen=True)
class Summary:
    """Counts per verdict, durations and tokens of a replay, original against new.

    ``counts`` lists every verdict of ``VERDICTS`` (zeros included), then any other verdict
    found. A mean or median is over the items where that duration is known (None if none).
    Token totals add up the items' counts key by key.
    """

    total: int
    counts: dict[str, int]
    original_mean_ms: float | None
    new_mean_ms: float | None
    original_p50_ms: float | None
    new_p50_ms: float | None
    original_tokens: dict[str, int]
    new_tokens: dict[str, int]

    @classmethod
    def of(cls, items: Iterable[ReplayItem]) -> Summary:
        """Summarize a list of items."""
        items = list(items)
        counts = dict.fromkeys(VERDICTS, 0)
        for item in items:
            counts[item.verdict] = counts.get(item.verdict, 0) + 1
        extra = sorted(set(counts) - set(VERDICTS))
        counts = {v: counts[v] for v in (*VERDICTS, *extra)}
        original_ms = _finite(item.original_duration_ms for item in items)
        new_ms = _finite(item.duration_ms for item in items)
        return cls(
            total=len(items),
            counts=counts,
            original_mean_ms=statistics.fmean(original_ms) if original_ms else None,
            new_mean_ms=statistics.fmean(new_ms) if new_ms else None,
            original_p50_ms=statistics.median(original_ms) if original_ms else None,
            new_p50_ms=statistics.median(new_ms) if new_ms else None,
            original_tokens=_sum_tokens(item.original_tokens for item in items),
            new_tokens=_sum_tokens(item.tokens for item in items),
        )

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-serializable data."""
        return dataclasses.asdict(self)


@dataclass(repr=False)
class ReplayResult:
    """The outcome of replaying the recorded calls of one traced function.

    Iterate over it, index it or take its ``len`` for the items; ``print`` it for a table.

    Example::

        run = triage.replay(limit=50)
        print(run)
        run.raise_for_regressions()   # in a test or CI job

    ``completed`` is False when the run could not be completed on the backend (a warning was
    logged); ``message`` explains an empty result.
    """

    key: str
    items: list[ReplayItem]
    test_run_id: str | None = None
    test_run_url: str | None = None
    name: str | None = None
    dry_run: bool = False
    completed: bool = True
    unknown_trace_ids: list[str] = field(default_factory=list)
    message: str | None = None

    @property
    def summary(self) -> Summary:
        """Counts per verdict, mean and median durations, token totals (original and new)."""
        return Summary.of(self.items)

    @property
    def ok(self) -> bool:
        """True when no item is ``changed``, ``error`` or ``not_replayable``.

        ``still_error`` is not a regression: the original failed the same way.
        """
        return not any(item.verdict in REGRESSION_VERDICTS for item in self.items)

    def raise_for_regressions(self, *, fail_on: Iterable[str] | str = ("changed", "error")) -> None:
        """Raise if an item's verdict is in ``fail_on``.

        Raises:
            RegressionError: listing the items (index, verdict, original trace id, first
                changed paths or the error).
        """
        verdicts = {fail_on} if isinstance(fail_on, str) else set(fail_on)
        failing = [item for item in self.items if item.verdict in verdicts]
        if not failing:
            return
        counts = Summary.of(failing).counts
        kinds = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        lines = [
            f"{len(failing)} of {len(self.items)} replayed calls of {self.key!r} regressed"
            f" ({kinds}):"
        ]
        for item in failing[:_REGRESSIONS_LISTED]:
            detail = _regression_detail(item)
            lines.append(
                f"  #{item.index} {item.verdict} (trace {item.original_trace_id})"
                + (f": {detail}" if detail else "")
            )
        if len(failing) > _REGRESSIONS_LISTED:
            lines.append(f"  ... and {len(failing) - _REGRESSIONS_LISTED} more")
        if self.test_run_url:
            lines.append(self._run_line())
        raise RegressionError("\n".join(lines), key=self.key)

    def to_dict(self, to_jsonable: ToJsonable | None = None) -> dict[str, Any]:
        """The result as JSON-serializable data, summary included. Never raises."""
        data = {
            "key": self.key,
            "name": self.name,
            "test_run_id": self.test_run_id,
            "test_run_url": self.test_run_url,
            "dry_run": self.dry_run,
            "completed": self.completed,
            "ok": self.ok,
            "message": self.message,
            "unknown_trace_ids": self.unknown_trace_ids,
            "summary": self.summary.to_dict(),
            "items": [item.to_dict(to_jsonable) for item in self.items],
        }
        out: dict[str, Any] = _jsonable(data)
        return out

    def __iter__(self) -> Iterator[ReplayItem]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, index: int) -> ReplayItem: ...

    @overload
    def __getitem__(self, index: slice) -> list[ReplayItem]: ...

    def __getitem__(self, index: int | slice) -> ReplayItem | list[ReplayItem]:
        return self.items[index]

    def __repr__(self) -> str:
        counts = "".join(f" {v}={n}" for v, n in self.summary.counts.items() if n)
        return f"<ReplayResult key={self.key!r} items={len(self.items)}{counts}>"

    def __str__(self) -> str:
        lines: list[str] = []
        if not self.items:
            lines.append(self.message or f"no recorded calls for key {self.key!r}")
        else:
            lines.append(self._title())
            if self.message:
                lines.append(self.message)
            lines.append(_row("#", "verdict", "original", "new", "tokens", "model", "detail"))
            lines.extend(_item_row(item) for item in self.items)
            lines.append(_summary_line(self.summary))
        if self.unknown_trace_ids:
            lines.append("unknown trace ids: " + ", ".join(self.unknown_trace_ids))
        if not self.completed:
            lines.append("warning: the test run could not be completed on the backend")
        if self.test_run_url:
            lines.append(self._run_line())
        return "\n".join(lines)

    def _run_line(self) -> str:
        url = self.test_run_url
        if url and url.startswith("/") and self.test_run_id:
            # Embedded store: the page exists once `bitfab serve` serves this store.
            return (
                f"test run: {url} (`bitfab run {self.test_run_id}`, or open it in the UI of"
                " `bitfab serve --no-auth`)"
            )
        return f"test run: {url}"

    def _title(self) -> str:
        title = f"replay of {self.key!r}"
        if self.name:
            title += f" ({self.name})"
        if self.dry_run:
            title += " [dry run]"
        n = len(self.items)
        return f"{title}: {n} call{'' if n == 1 else 's'}"


# ---- the table ----------------------------------------------------------------------------

_WIDTHS = (5, 14, 9, 9, 7, 20)
_DETAIL_WIDTH = 60


def _row(*cells: str) -> str:
    index, verdict, original, new, tokens, model, detail = cells
    w = _WIDTHS
    line = (
        f"{_clip(index, w[0]):>{w[0]}}  {_clip(verdict, w[1]):<{w[1]}}  "
        f"{_clip(original, w[2]):>{w[2]}}  {_clip(new, w[3]):>{w[3]}}  "
        f"{_clip(tokens, w[4]):>{w[4]}}  {_clip(model, w[5]):<{w[5]}}  "
        f"{_clip(detail, _DETAIL_WIDTH)}"
    )
    return line.rstrip()


def _item_row(item: ReplayItem) -> str:
    return _row(
        str(item.index),
        item.verdict,
        _ms(item.original_duration_ms),
        _ms(item.duration_ms),
        _token_delta(item),
        _model(item),
        _detail(item),
    )


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())  # one line: newlines and runs of spaces become one space
    return text if len(text) <= width else text[: width - 3] + "..."


def _ms(ms: float | None) -> str:
    if ms is None or not math.isfinite(ms):
        return "-"
    if ms < 10:
        return f"{ms:.1f} ms"
    if ms < 10_000:
        return f"{ms:.0f} ms"
    return f"{ms / 1000:.1f} s"


def _signed(n: int) -> str:
    return f"{n:+,}" if n else "0"


def _token_delta(item: ReplayItem) -> str:
    original, new = item._token_total(True), item._token_total(False)
    if not original and not new:
        return "-"
    return _signed(new - original)


def _model(item: ReplayItem) -> str:
    if item.original_model and item.model and item.original_model != item.model:
        return f"{item.original_model}->{item.model}"
    return item.model or item.original_model or "-"


def _change_count(changes: list[Change]) -> int:
    return sum(_as_int(c.new) if c.kind == "more" else 1 for c in changes)


def _detail(item: ReplayItem) -> str:
    if item.verdict == "fixed":
        return f"was: {item.original_error}" if item.original_error else ""
    if item.error:
        return item.error
    parts = []
    if item.diff:
        n = _change_count(item.diff)
        first = item.diff[0]
        text = first.path
        if first.kind in ("changed", "type_changed"):
            text += f": {_short(first.old)} -> {_short(first.new)}"
        elif first.kind in ("added", "removed"):
            text += f" {first.kind}"
        parts.append(text + (f" (+{n - 1} more)" if n > 1 else ""))
    if item.score is not None:
        parts.append(f"score {item.score:.2f}")
    return ", ".join(parts)


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


def _regression_detail(item: ReplayItem) -> str:
    if item.error:
        return " ".join(item.error.split())
    paths = [c.path for c in item.diff if c.kind != "more"][:3]
    n = _change_count(item.diff)
    text = ", ".join(paths) + (f" (+{n - len(paths)} more)" if n > len(paths) else "")
    if item.score is not None:
        text += (", " if text else "") + f"score {item.score:.2f}"
    return text


def _pair(label: str, original: float | None, new: float | None) -> str:
    text = f"{label} {_ms(original)} -> {_ms(new)}"
    if original and new is not None:
        text += f" ({(new - original) / original * 100:+.0f}%)"
    return text


def _summary_line(summary: Summary) -> str:
    n = summary.total
    counts = ", ".join(f"{c} {v}" for v, c in summary.counts.items() if c)
    parts = [
        f"{n} call{'' if n == 1 else 's'}: {counts}",
        _pair("mean", summary.original_mean_ms, summary.new_mean_ms),
        _pair("p50", summary.original_p50_ms, summary.new_p50_ms),
    ]
    original, new = summary.original_tokens["total"], summary.new_tokens["total"]
    if original or new:
        parts.append(f"tokens {original:,} -> {new:,} ({_signed(new - original)})")
    return " | ".join(parts)


# ---- numbers ------------------------------------------------------------------------------


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return 0


def _finite(values: Iterable[float | None]) -> list[float]:
    return [
        float(v)
        for v in values
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ]


def _sum_tokens(dicts: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    totals = _no_tokens()
    for tokens in dicts:
        for key, value in tokens.items():
            totals[key] = totals.get(key, 0) + _as_int(value)
    return totals


# ---- JSON-safe conversion -----------------------------------------------------------------


class _LiveConverter:
    """Applies the caller's ``to_jsonable`` to a live value; a failure falls back on ours."""

    __slots__ = ("_fn",)

    def __init__(self, fn: ToJsonable | None) -> None:
        self._fn = fn

    def __call__(self, value: Any) -> Any:
        if self._fn is None:
            return value
        try:
            return self._fn(value)
        except Exception:  # the caller's converter must not make to_dict() raise
            return value


def _jsonable(value: Any) -> Any:
    """A copy of ``value`` that ``json.dumps`` accepts (strict JSON: no NaN), whatever it holds."""
    return _convert(value, 0, set())


def _convert(value: Any, depth: int, active: set[int]) -> Any:
    if value is None or type(value) in (str, int, bool):
        return value
    if type(value) is float:
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if depth >= _MAX_JSON_DEPTH:
        return "<max depth>"
    if id(value) in active:
        return "<cycle>"
    active.add(id(value))
    try:
        return _convert_object(value, depth + 1, active)
    except Exception:
        return _short_repr(value)
    finally:
        active.discard(id(value))


def _convert_object(value: Any, depth: int, active: set[int]) -> Any:
    if isinstance(value, Change):
        return _convert(value.to_dict(), depth, active)
    if isinstance(value, Truncated):
        return value.preview
    if isinstance(value, enum.Enum):
        return _convert(value.value, depth, active)
    if isinstance(value, (bool, int, float, str)):  # subclasses of the builtins
        return _convert(_builtin_base(value), depth, active)
    if isinstance(value, Mapping):
        return {_json_key(k): _convert(v, depth, active) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_convert(v, depth, active) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [_convert(v, depth, active) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=repr)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, (uuid.UUID, decimal.Decimal)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.hex()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _convert(getattr(value, f.name, None), depth, active)
            for f in dataclasses.fields(value)
        }
    model_dump = getattr(type(value), "model_dump", None)
    if callable(model_dump) and not isinstance(value, type):
        return _convert(model_dump(value, mode="json"), depth, active)
    return _short_repr(value)


def _builtin_base(value: bool | int | float | str) -> bool | int | float | str:
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str.__str__(value)


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return str.__str__(key)
    if key is None or isinstance(key, bool):
        return {None: "null", True: "true", False: "false"}[key]
    if isinstance(key, (int, float)):
        return repr(_builtin_base(key))
    return _short_repr(key)


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__qualname__} object>"
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."
