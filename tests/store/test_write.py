"""Writing records: verbatim round trips, keep-first duplicates, rejections, dropped traces."""

from __future__ import annotations

import math
from typing import Any

from bitfab.store import Rejection, Store, WriteResult

from .factories import span, trace


def test_records_round_trip_verbatim(store: Store) -> None:
    """A span record with unicode, NUL and lone surrogates reads back exactly as written."""
    record = span(
        "s1",
        input=["Zoë — 日本語 🎉", "nul\x00byte", "lone \ud800 high", {"k\udfff": [1.5, 2**60]}],
        output={"quotes": "\u2019\u201c\u201d'\"", "nested": [None, True, False, -0.25, "\\"]},
        metadata={"tag": "\u2028\u2029"},
    )
    record["unknownField"] = {"kept": ["as", "is"]}

    result = store.write([record], [trace("t-s1")])

    assert result == WriteResult(spans_inserted=1, traces_inserted=1)
    assert store.get_span("s1") == record
    assert store.get_trace("t-s1") == trace("t-s1")
    assert store.get_span("missing") is None
    assert store.get_trace("missing") is None


def test_duplicate_span_ids_keep_the_first(store: Store) -> None:
    """An identical or conflicting record with a stored id is accepted, and the first stays."""
    first = span("s1", output="first")
    conflicting = span("s1", output="second")
    store.write([first])

    again = store.write([first, conflicting])
    within_batch = store.write([span("s2", output="a"), span("s2", output="b")])

    assert again == WriteResult(spans_duplicate=2)
    assert within_batch == WriteResult(spans_inserted=1, spans_duplicate=1)
    assert store.get_span("s1") == first
    assert store.get_span("s2") == span("s2", output="a")
    assert store.count_spans() == 2


def test_duplicate_trace_records_keep_the_first(store: Store) -> None:
    """A trace record sent twice is stored once; a changed second one is ignored."""
    store.write([], [trace("t1", expected=2)])

    result = store.write([], [trace("t1", expected=2), trace("t1", expected=9)])

    assert result == WriteResult(traces_duplicate=2)
    assert store.get_trace("t1") == trace("t1", expected=2)


def test_invalid_records_are_rejected_one_by_one(store: Store) -> None:
    """Records without id, traceId or rawSpan, or with NaN, are rejected; the rest is written."""
    no_raw = span("s-no-raw")
    del no_raw["rawSpan"]
    no_trace_id = span("s-no-trace")
    del no_trace_id["traceId"]
    with_nan = span("s-nan", output=math.nan)
    with_object = span("s-object", output=object())
    surrogate_id = span("s-\ud800")
    spans: list[Any] = [
        span("good-1"),
        {"traceId": "t", "rawSpan": {}},
        no_trace_id,
        no_raw,
        with_nan,
        "not an object",
        with_object,
        surrogate_id,
        span("good-2"),
    ]
    traces: list[Any] = [{"completed": True}, trace("t-good-1")]

    result = store.write(spans, traces)

    assert result == WriteResult(
        spans_inserted=2,
        traces_inserted=1,
        rejected=(
            Rejection("span", 1, None, "missing id"),
            Rejection("span", 2, "s-no-trace", "missing traceId"),
            Rejection("span", 3, "s-no-raw", "missing rawSpan"),
            Rejection(
                "span",
                4,
                "s-nan",
                "not valid JSON: Out of range float values are not JSON compliant",
            ),
            Rejection("span", 5, None, "a span record must be a JSON object"),
            Rejection(
                "span",
                6,
                "s-object",
                "not valid JSON: Object of type object is not JSON serializable",
            ),
            Rejection("span", 7, "s-\ud800", "id is not valid Unicode (lone surrogate)"),
            Rejection("trace", 0, None, "missing id"),
        ),
    )
    assert [store.get_span("good-1"), store.get_span("good-2")] == [span("good-1"), span("good-2")]
    assert store.count_spans() == 2


def test_a_batch_of_only_rejected_records_writes_nothing(store: Store) -> None:
    """A batch where every record is rejected reports them and leaves the store empty."""
    result = store.write([{"id": "x"}])

    assert result == WriteResult(rejected=(Rejection("span", 0, "x", "missing traceId"),))
    assert store.count_spans() == 0


def test_trace_record_may_arrive_before_or_after_its_spans(store: Store) -> None:
    """A completion record counts whether it was written before or after the spans."""
    store.write([], [trace("t-early", expected=2)])
    store.write([span("e1", trace="t-early"), span("e2", trace="t-early", parent="e1")])
    store.write([span("l1", trace="t-late"), span("l2", trace="t-late", parent="l1")])
    store.write([], [trace("t-late", expected=2)])

    assert store.trace_status({"t-early": 2, "t-late": 2}) == ["t-early", "t-late"]
    assert [s["id"] for s in store.trace_spans("t-early")] == ["e1", "e2"]


def test_dropped_trace_deletes_its_spans_and_discards_late_ones(store: Store) -> None:
    """``dropped: true`` deletes the trace and its spans; a retried span of it is discarded."""
    store.write(
        [span("a1", trace="t-a"), span("a2", trace="t-a", parent="a1"), span("b1", trace="t-b")],
        [trace("t-a", expected=2)],
    )

    dropped = store.write([], [trace("t-a", dropped=True)])
    retried = store.write([span("a2", trace="t-a", parent="a1"), span("b2", trace="t-b")])
    completed_again = store.write([], [trace("t-a", expected=2)])

    assert dropped == WriteResult(traces_dropped=1)
    assert retried == WriteResult(spans_inserted=1, spans_discarded=1)
    assert completed_again == WriteResult(traces_duplicate=1)
    assert store.trace_spans("t-a") == []
    assert store.get_trace("t-a") is None
    assert store.trace_status({"t-a": 0}) == []
    assert [s["id"] for s in store.trace_spans("t-b")] == ["b1", "b2"]


def test_dropped_record_in_the_same_batch_as_the_spans_wins(store: Store) -> None:
    """Spans and the drop of their trace in one batch leave nothing of that trace."""
    result = store.write([span("c1", trace="t-c")], [trace("t-c", dropped=True)])

    assert result == WriteResult(spans_discarded=1, traces_dropped=1)
    assert store.count_spans() == 0


def test_empty_write_is_a_no_op(store: Store) -> None:
    """Writing nothing returns an empty result."""
    assert store.write([], []) == WriteResult()
    assert store.count_spans() == 0
