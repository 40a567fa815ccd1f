"""Stored rows -> the store's values, and values -> rows: helpers shared by the SQL backends.

Rows come in table order as the statements of each backend select them; a backend that keeps
text in an escaped form (PostgreSQL) unescapes the row before handing it here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from bitfab.store.base import (
    TEST_RUN_STATUSES,
    ApiKey,
    Rejection,
    TestRun,
    TestRunItem,
    TraceSummary,
)
from bitfab.store.records import (
    RecordError,
    SpanRow,
    TraceRow,
    dump_json,
    iso_to_us,
    span_row,
    trace_row,
)

__all__ = [
    "NO_TOTALS",
    "Incoming",
    "TraceTotals",
    "api_key_row",
    "check_status",
    "item_from_row",
    "item_rows",
    "json_field",
    "key_from_row",
    "parse",
    "record_id",
    "run_from_row",
    "run_row",
    "split_batch",
    "trace_start_us",
]


class TraceTotals(NamedTuple):
    """Totals over all spans of one trace."""

    span_count: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    model: str | None = None
    """The model of the trace's first LLM call."""


NO_TOTALS = TraceTotals()


class Incoming(NamedTuple):
    """A batch given to ``Store.write``, sorted into rows to write and records rejected."""

    spans: list[tuple[SpanRow, Mapping[str, Any]]]
    """Each span's columns, with the record they came from."""
    drops: list[TraceRow]
    """Trace records with ``dropped: true``."""
    completions: list[TraceRow]
    rejected: list[Rejection]


def split_batch(
    spans: Sequence[Mapping[str, Any]], traces: Sequence[Mapping[str, Any]]
) -> Incoming:
    """Turn a batch's records into rows, and the records that can't be stored into rejections."""
    rejected: list[Rejection] = []
    span_rows: list[tuple[SpanRow, Mapping[str, Any]]] = []
    for index, record in enumerate(spans):
        try:
            span_rows.append((span_row(record), record))
        except RecordError as exc:
            rejected.append(Rejection("span", index, record_id(record), str(exc)))
    drops: list[TraceRow] = []
    completions: list[TraceRow] = []
    for index, record in enumerate(traces):
        try:
            row = trace_row(record)
        except RecordError as exc:
            rejected.append(Rejection("trace", index, record_id(record), str(exc)))
            continue
        (drops if row.dropped else completions).append(row)
    return Incoming(span_rows, drops, completions, rejected)


def parse(record: str) -> dict[str, Any]:
    """A stored record's JSON text, parsed."""
    value: dict[str, Any] = json.loads(record)
    return value


def record_id(record: object) -> str | None:
    """The ``id`` of a record that was rejected, when it has a string one."""
    if isinstance(record, Mapping):
        value = record.get("id")
        if isinstance(value, str):
            return value
    return None


def trace_start_us(row: TraceRow, now_us: int) -> int:
    """When a trace record counts as stored, for retention: its start, end, else ``now_us``."""
    start = iso_to_us(row.started_at)
    if start is None:
        start = iso_to_us(row.ended_at)
    return now_us if start is None else start


def check_status(status: str) -> None:
    """``ValueError`` unless ``status`` is one of :data:`TEST_RUN_STATUSES`."""
    if status not in TEST_RUN_STATUSES:
        raise ValueError(f"test run status must be one of {sorted(TEST_RUN_STATUSES)}: {status!r}")


def json_field(value: Mapping[str, Any], what: str) -> str:
    """A test run's JSON field as text; ``ValueError`` naming the field if it has no JSON form."""
    try:
        return dump_json(dict(value))
    except RecordError as exc:
        raise ValueError(f"test run {what}: {exc}") from None


def run_row(run: TestRun) -> tuple[Any, ...]:
    """The columns of a new test run, in table order."""
    check_status(run.status)
    return (
        run.id,
        run.key,
        run.name,
        run.status,
        run.created_at,
        iso_to_us(run.created_at),
        run.completed_at,
        json_field(run.options, "options"),
        run.code_version,
        None if run.summary is None else json_field(run.summary, "summary"),
        json_field(run.extra, "extra"),
    )


def item_rows(run_id: str, items: Sequence[TestRunItem]) -> list[tuple[Any, ...]]:
    """The rows of a run's items; ``ValueError`` for two items with one ``idx``."""
    seen: set[int] = set()
    rows = []
    for item in items:
        if item.idx in seen:
            raise ValueError(f"two items of test run {run_id!r} have idx {item.idx}")
        seen.add(item.idx)
        rows.append(
            (
                run_id,
                item.idx,
                item.original_trace_id,
                item.original_span_id,
                item.replay_trace_id,
                item.verdict,
                json_field(item.item, f"item {item.idx}"),
            )
        )
    return rows


def run_from_row(row: Sequence[Any], items: tuple[TestRunItem, ...]) -> TestRun:
    """A run from its row (``id, key, name, status, created_at, completed_at, options,
    code_version, summary, record``)."""
    run_id, key, name, status, created_at, completed_at, options, code_version, summary, extra = row
    return TestRun(
        id=run_id,
        key=key,
        name=name,
        status=status,
        created_at=created_at,
        completed_at=completed_at,
        options=json.loads(options),
        code_version=code_version,
        summary=None if summary is None else json.loads(summary),
        extra=json.loads(extra),
        items=items,
    )


def item_from_row(row: Sequence[Any]) -> TestRunItem:
    """An item from its row (``idx, original_trace_id, original_span_id, replay_trace_id,
    verdict, item``)."""
    idx, original_trace_id, original_span_id, replay_trace_id, verdict, item = row
    return TestRunItem(
        idx=idx,
        original_trace_id=original_trace_id,
        original_span_id=original_span_id,
        replay_trace_id=replay_trace_id,
        verdict=verdict,
        item=json.loads(item),
    )


def api_key_row(key: ApiKey) -> tuple[Any, ...]:
    """The columns of an API key, in table order."""
    return (
        key.id,
        key.name,
        key.scope,
        key.key_hash,
        key.created_at,
        key.revoked_at,
        key.last_used_at,
    )


def key_from_row(row: Sequence[Any]) -> ApiKey:
    """A key from its row, in table order."""
    key_id, name, scope, key_hash, created_at, revoked_at, last_used_at = row
    return ApiKey(
        id=key_id,
        name=name,
        scope=scope,
        key_hash=key_hash,
        created_at=created_at,
        revoked_at=revoked_at,
        last_used_at=last_used_at,
    )


def trace_summaries(
    rows: Iterable[Sequence[Any]], totals: Mapping[str, TraceTotals]
) -> list[TraceSummary]:
    """Rows of the backends' ``TRACES_OF_*`` queries (trace id, span id, key, name, started_at,
    start_us, duration, error, test run id, completed) with their traces' totals."""
    summaries = []
    for trace_id, span_id, key, name, started_at, start_us, duration, error, run, done in rows:
        trace_totals = totals.get(trace_id, NO_TOTALS)
        summaries.append(
            TraceSummary(
                trace_id=trace_id,
                span_id=span_id,
                key=key,
                name=name,
                started_at=started_at,
                start_us=start_us,
                duration_ms=duration,
                error=error,
                test_run_id=run,
                model=trace_totals.model,
                completed=bool(done),
                span_count=trace_totals.span_count,
                input_tokens=trace_totals.input_tokens,
                output_tokens=trace_totals.output_tokens,
                cached_tokens=trace_totals.cached_tokens,
                total_tokens=trace_totals.input_tokens + trace_totals.output_tokens,
            )
        )
    return summaries


def token_dicts(
    asked: Sequence[str], totals: Mapping[str, TraceTotals]
) -> dict[str, dict[str, int]]:
    """``Store.token_totals``'s answer: ``{input, output, cached, total}`` per asked trace."""
    result = {}
    for trace_id in asked:
        trace_totals = totals.get(trace_id, NO_TOTALS)
        result[trace_id] = {
            "input": trace_totals.input_tokens,
            "output": trace_totals.output_tokens,
            "cached": trace_totals.cached_tokens,
            "total": trace_totals.input_tokens + trace_totals.output_tokens,
        }
    return result
