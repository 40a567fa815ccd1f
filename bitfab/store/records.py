"""Wire records -> the values a store indexes. Pure functions, shared by every SQL backend.

The record itself is kept as strict, ASCII-only JSON text: lone surrogates and NUL characters
survive as ``\\uXXXX`` escapes, so the text is valid in any database encoding and parses back to
exactly the record that was written. The extracted columns are conveniences for queries; when a
value cannot be a column as it is (a lone surrogate in a name), the column gets a readable
replacement and the record keeps the original.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

__all__ = [
    "RecordError",
    "SpanRow",
    "TraceRow",
    "dump_json",
    "iso_to_us",
    "like_pattern",
    "query_text",
    "span_row",
    "trace_row",
    "utc_now_iso",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_ONE_US = timedelta(microseconds=1)
_MAX_COUNT = 2**53
_FRACTION = re.compile(r"\.(\d+)")
_USAGE_KEYS = ("inputTokens", "outputTokens", "cachedInputTokens", "costUsd")
# check_circular=False: a cycle still fails (as RecursionError, caught below), 10% faster.
_ENCODER = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=True, allow_nan=False, check_circular=False
)


class RecordError(ValueError):
    """A record cannot be stored; the message is the reason given back to the sender."""


class SpanRow(NamedTuple):
    """The columns of one stored span, in table order."""

    id: str
    trace_id: str
    parent_id: str | None
    key: str | None
    name: str | None
    span_type: str | None
    started_at: str | None
    ended_at: str | None
    start_us: int | None
    end_us: int | None
    duration_ms: float | None
    is_root: int
    error: str | None
    test_run_id: str | None
    input_source_span_id: str | None
    mocked: int
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    cached_tokens: int | None
    cost_usd: float | None
    replayable: int
    record: str


class TraceRow(NamedTuple):
    """The columns of one stored trace completion record, in table order."""

    id: str
    key: str | None
    completed: int
    expected_span_count: int | None
    test_run_id: str | None
    input_source_trace_id: str | None
    started_at: str | None
    ended_at: str | None
    dropped: int
    record: str


_orjson_dumps: Callable[[Any], bytes] | None
try:
    from orjson import dumps as _orjson_dumps
except ImportError:  # pragma: no cover - orjson is a dependency; the json module still works
    _orjson_dumps = None


def dump_json(value: Any) -> str:
    """Strict, compact JSON text; ``RecordError`` if ``value`` has no such form.

    The text is always ASCII (non-ASCII characters escaped), so that searches match one form.
    orjson (when installed) is ten times faster than the json module; its output is used when
    it is ASCII and has no ``null`` (orjson writes NaN as ``null`` where the strict encoder
    refuses it). Anything else, and what orjson refuses (lone surrogates, integers past 64
    bits), goes through the strict encoder.
    """
    if _orjson_dumps is not None:
        try:
            data = _orjson_dumps(value)
        except (TypeError, ValueError):
            pass
        else:
            if data.isascii() and b"null" not in data:
                return data.decode()
    try:
        return _ENCODER.encode(value)
    except ValueError as exc:  # NaN, infinity
        raise RecordError(f"not valid JSON: {exc}") from None
    except TypeError as exc:  # a value JSON has no form for
        raise RecordError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise RecordError("not valid JSON: nested too deeply or circular") from None


def iso_to_us(value: object) -> int | None:
    """Microseconds since the epoch of an ISO-8601 timestamp; None if it isn't one.

    A timestamp without an offset is taken as UTC.
    """
    if not isinstance(value, str) or not 10 <= len(value) <= 64:
        return None
    if value[-1] in "Zz":  # the protocol's form, parsed as naive UTC: twice as fast
        moment = _parse_iso(value[:-1])
        if moment is None or moment.tzinfo is not None:
            return None
        return (moment - _NAIVE_EPOCH) // _ONE_US
    moment = _parse_iso(value)
    if moment is None:
        return None
    if moment.tzinfo is None:
        return (moment - _NAIVE_EPOCH) // _ONE_US
    return (moment - _EPOCH) // _ONE_US


def _parse_iso(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    # Python 3.10 accepts only 3 or 6 fractional digits; other SDKs send 1 to 9.
    try:
        return datetime.fromisoformat(
            _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text, count=1)
        )
    except ValueError:
        return None


def utc_now_iso() -> str:
    """The current time as the protocol writes it: ``2026-11-27T10:38:45.642593Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def like_pattern(term: str) -> str:
    """A ``LIKE ... ESCAPE '\\'`` pattern matching ``term`` literally inside stored JSON text.

    The term is first written the way the stored JSON writes string content (quotes,
    backslashes, control and non-ASCII characters escaped), then LIKE's own ``%``, ``_`` and
    ``\\`` are escaped.
    """
    as_json = json.dumps(term, ensure_ascii=True)[1:-1]
    escaped = as_json.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return "%" + escaped + "%"


def query_text(value: object) -> str:
    """``value`` as a query parameter: lone surrogates replaced, as in the stored columns."""
    if not isinstance(value, str):  # callers type-check; a stray int must not crash a query
        return str(value)
    return value if _encodable(value) else _replace_surrogates(value)


def span_row(record: object) -> SpanRow:
    """The columns of a span record; ``RecordError`` says why it cannot be stored."""
    # This runs for every span written: `type(x) is dict` spares the slower ABC check.
    if type(record) is not dict and not isinstance(record, Mapping):
        raise RecordError("a span record must be a JSON object")
    span_id = _required_id(record.get("id"), "id")
    trace_id = _required_id(record.get("traceId"), "traceId")
    raw = record.get("rawSpan")
    if type(raw) is not dict and not isinstance(raw, Mapping):
        raise RecordError("missing rawSpan")
    data = raw.get("span_data")
    if type(data) is not dict and not isinstance(data, Mapping):
        data = {}

    parent_id = _optional_id(raw.get("parent_id"))
    started_at = _text(raw.get("started_at"))
    ended_at = _text(raw.get("ended_at"))
    start_us = iso_to_us(started_at)
    end_us = iso_to_us(ended_at)
    duration_ms = (
        (end_us - start_us) / 1000 if start_us is not None and end_us is not None else None
    )
    test_run_id = _text(record.get("testRunId")) or _text(record.get("experimentId"))
    model, input_tokens, output_tokens, cached_tokens, cost_usd = _usage(data.get("contexts"))
    text = dump_json(record)
    return SpanRow._make(  # _make: a third of the cost of SpanRow(...) with 23 arguments
        (
            span_id,
            trace_id,
            parent_id,
            _text(record.get("traceFunctionKey")),
            _text(data.get("name")),
            _text(data.get("type")),
            started_at,
            ended_at,
            start_us,
            end_us,
            duration_ms,
            1 if parent_id is None else 0,
            _error(data.get("error"), data.get("error_source")),
            test_run_id,
            _optional_id(raw.get("input_source_span_id")),
            1 if record.get("mocked") is True else 0,
            model,
            input_tokens,
            output_tokens,
            cached_tokens,
            cost_usd,
            0 if data.get("replayable") is False else 1,
            text,
        )
    )


def trace_row(record: object) -> TraceRow:
    """The columns of a trace completion record; ``RecordError`` says why it cannot be stored."""
    if not isinstance(record, Mapping):
        raise RecordError("a trace record must be a JSON object")
    trace_id = _required_id(record.get("id"), "id")
    external = record.get("externalTrace")
    if not isinstance(external, Mapping):
        external = {}
    return TraceRow(
        trace_id,
        _text(record.get("traceFunctionKey")),
        0 if record.get("completed") is False else 1,
        _count(record.get("expectedSpanCount")),
        _text(record.get("testRunId")) or _text(record.get("experimentId")),
        _optional_id(external.get("input_source_trace_id")),
        _text(external.get("started_at")),
        _text(external.get("ended_at")),
        1 if record.get("dropped") is True else 0,
        dump_json(record),
    )


def _encodable(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 form
        return False
    return True


def _required_id(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise RecordError(f"missing {name}")
    if not value.isascii() and not _encodable(value):
        raise RecordError(f"{name} is not valid Unicode (lone surrogate)")
    return value


def _optional_id(value: object) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value if _encodable(value) else _replace_surrogates(value)
    return str(value)


def _text(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    if value.isascii():
        return value
    return value if _encodable(value) else _replace_surrogates(value)


def _replace_surrogates(value: str) -> str:
    # One U+FFFD per lone surrogate (UTF-8 round trip would give three).
    return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _error(error: object, source: object) -> str | None:
    if error is None or error == "":
        return "" if source else None
    if isinstance(error, str):
        return _text(error)
    try:
        return dump_json(error)
    except RecordError:
        return repr(error)


def _count(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < _MAX_COUNT else None
    if isinstance(value, float) and value.is_integer() and 0 <= value < _MAX_COUNT:
        return int(value)
    return None


def _usage(
    contexts: object,
) -> tuple[str | None, int | None, int | None, int | None, float | None]:
    if not isinstance(contexts, list) or not contexts:
        return None, None, None, None, None
    model: str | None = None
    found = False
    input_tokens = output_tokens = cached_tokens = 0
    cost: float | None = None
    for entry in contexts:
        if not isinstance(entry, Mapping) or not any(k in entry for k in _USAGE_KEYS):
            continue
        found = True
        if model is None:
            model = _text(entry.get("model"))
        input_tokens += _count(entry.get("inputTokens")) or 0
        output_tokens += _count(entry.get("outputTokens")) or 0
        cached_tokens += _count(entry.get("cachedInputTokens")) or 0
        entry_cost = entry.get("costUsd")
        if isinstance(entry_cost, (int, float)) and not isinstance(entry_cost, bool):
            cost = (cost or 0.0) + float(entry_cost)
    if not found:
        return None, None, None, None, None
    cap = _MAX_COUNT
    return (
        model,
        min(input_tokens, cap),
        min(output_tokens, cap),
        min(cached_tokens, cap),
        cost if cost is not None and math.isfinite(cost) else None,
    )
