"""Pure extraction of stored columns from wire records."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bitfab.store.records import (
    RecordError,
    SpanRow,
    TraceRow,
    iso_to_us,
    like_pattern,
    span_row,
    trace_row,
)

from .factories import BASE_US, span, trace, usage


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-27T10:00:00.000000Z", BASE_US),
        ("2026-11-27T10:00:00.5Z", BASE_US + 500_000),
        ("2026-11-27T10:00:00.123456789Z", BASE_US + 123_456),
        ("2026-11-27T11:00:00+01:00", BASE_US),
        ("2026-11-27T10:00:00", BASE_US),
        ("2026-11-27T10:00:00+00:00Z", None),
        ("not a timestamp", None),
        ("", None),
        (None, None),
        (1795773600, None),
    ],
)
def test_iso_to_us(text: object, expected: int | None) -> None:
    """ISO-8601 strings become epoch microseconds; anything else becomes None."""
    assert iso_to_us(text) == expected


def test_span_row_extracts_every_column() -> None:
    """A replay child span with usage and an error fills each column as documented."""
    record = span(
        "c1",
        trace="t1",
        parent="r1",
        key="llm",
        name="call_llm",
        start_ms=1.5,
        duration_ms=2.25,
        error="rate limited",
        test_run="run-1",
        source_span="orig-1",
        mocked=True,
        contexts=[
            {"kind": "note"},
            usage("gpt-a", input_tokens=10, output_tokens=4, cached=3, cost=0.5),
            usage("gpt-b", input_tokens=1, output_tokens=1, cost=0.25),
        ],
        replayable=False,
        not_replayable=["input holds a lock"],
    )

    assert span_row(record) == SpanRow(
        id="c1",
        trace_id="t1",
        parent_id="r1",
        key="llm",
        name="call_llm",
        span_type="function",
        started_at="2026-11-27T10:00:00.001500Z",
        ended_at="2026-11-27T10:00:00.003750Z",
        start_us=BASE_US + 1_500,
        end_us=BASE_US + 3_750,
        duration_ms=2.25,
        is_root=0,
        error="rate limited",
        test_run_id="run-1",
        input_source_span_id="orig-1",
        mocked=1,
        model="gpt-a",
        input_tokens=11,
        output_tokens=5,
        cached_tokens=3,
        cost_usd=0.75,
        replayable=0,
        record=json.dumps(record, separators=(",", ":"), ensure_ascii=True, allow_nan=False),
    )


def test_span_row_tolerates_missing_and_odd_fields() -> None:
    """A bare record is a root with empty columns; odd values degrade instead of failing."""
    bare = {"id": "s", "traceId": "t", "rawSpan": {"span_data": "not a dict"}}
    odd = {
        "id": "s",
        "traceId": "t",
        "testRunId": "",
        "experimentId": "exp-1",
        "rawSpan": {
            "parent_id": "",
            "started_at": 12,
            "ended_at": "2026-11-27T10:00:00Z",
            "span_data": {
                "name": "lone \udc00 surrogate",
                "error": {"type": "ValueError"},
                "contexts": [usage(input_tokens=2**70, output_tokens=-3), "x"],
            },
        },
    }
    empty: dict[str, Any] = dict.fromkeys(SpanRow._fields)

    assert span_row(bare) == SpanRow(
        **{
            **empty,
            "id": "s",
            "trace_id": "t",
            "is_root": 1,
            "mocked": 0,
            "replayable": 1,
            "record": json.dumps(bare, separators=(",", ":")),
        }
    )
    assert span_row(odd) == SpanRow(
        **{
            **empty,
            "id": "s",
            "trace_id": "t",
            "name": "lone \ufffd surrogate",
            "ended_at": "2026-11-27T10:00:00Z",
            "end_us": BASE_US,
            "is_root": 1,
            "error": '{"type":"ValueError"}',
            "test_run_id": "exp-1",
            "mocked": 0,
            "model": "gpt-test",
            "input_tokens": 0,
            "output_tokens": 0,
            "cached_tokens": 0,
            "cost_usd": 0.0,
            "replayable": 1,
            "record": json.dumps(odd, separators=(",", ":")),
        }
    )


def test_error_column_marks_errors_without_a_message() -> None:
    """An empty message with an error source still counts as an error (empty text)."""
    empty_message = span("s", error="")

    assert span_row(empty_message).error == ""
    assert span_row(span("s")).error is None


def test_trace_row_extracts_every_column() -> None:
    """A replay completion record fills each trace column."""
    record = trace("t-r", key="triage", expected=3, test_run="run-1", source_trace="t-o")

    assert trace_row(record) == TraceRow(
        id="t-r",
        key="triage",
        completed=1,
        expected_span_count=3,
        test_run_id="run-1",
        input_source_trace_id="t-o",
        started_at="2026-11-27T10:00:00.000000Z",
        ended_at="2026-11-27T10:00:00.010000Z",
        dropped=0,
        record=json.dumps(record, separators=(",", ":"), ensure_ascii=True),
    )


def test_records_that_cannot_be_stored_raise_with_a_reason() -> None:
    """Structural problems and non-JSON values are RecordErrors with a readable reason."""
    cyclic: dict[str, object] = {"id": "s", "traceId": "t", "rawSpan": {}}
    cyclic["self"] = cyclic

    with pytest.raises(RecordError, match="nested too deeply or circular"):
        span_row(cyclic)
    with pytest.raises(RecordError, match="missing id"):
        trace_row({"id": ""})
    with pytest.raises(RecordError, match="a trace record must be a JSON object"):
        trace_row(["t"])


@pytest.mark.parametrize(
    ("term", "pattern"),
    [
        ("plain", "%plain%"),
        ("100%", "%100\\%%"),
        ("a_b", "%a\\_b%"),
        ("back\\slash", "%back\\\\\\\\slash%"),
        ('say "hi"', '%say \\\\"hi\\\\"%'),
        ("é\x00", "%\\\\u00e9\\\\u0000%"),
    ],
)
def test_like_pattern_escapes_json_and_like_metacharacters(term: str, pattern: str) -> None:
    """Search terms are written as stored JSON writes them, then LIKE-escaped."""
    assert like_pattern(term) == pattern
