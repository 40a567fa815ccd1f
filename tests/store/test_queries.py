"""Reading spans back: replay selection, trees, completion, statistics and trace lists."""

from __future__ import annotations

from typing import Any

import pytest

from bitfab.store import FunctionStats, Store, TraceSummary
from bitfab.store.function_stats import ACCURACY

from .factories import BASE_US, span, trace, usage


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [record["id"] for record in records]


def test_newest_roots_orders_limits_and_skips_replays_and_children(store: Store) -> None:
    """Only non-replay roots of the key, newest first, ties by id descending, unknown start last."""
    garbage_time = span("g", key="triage")
    garbage_time["rawSpan"]["started_at"] = "yesterday-ish"
    store.write(
        [
            span("r1", start_ms=100),
            span("r2", start_ms=200),
            span("r2b", start_ms=200),
            span("r3", start_ms=300),
            span("c3", trace="t-r3", parent="r3", start_ms=310),
            span("rp", start_ms=400, test_run="run-1", source_span="r3"),
            span("o1", key="other", start_ms=500),
            garbage_time,
        ]
    )

    assert ids(store.newest_roots("triage", 10)) == ["r3", "r2b", "r2", "r1", "g"]
    assert ids(store.newest_roots("triage", 2)) == ["r3", "r2b"]
    assert ids(store.newest_roots("triage", 10**12)) == ["r3", "r2b", "r2", "r1", "g"]
    assert store.newest_roots("triage", 1) == [span("r3", start_ms=300)]
    assert store.newest_roots("nobody", 5) == []


@pytest.mark.parametrize("limit", [0, -1, True, 2.5, "5"])
def test_newest_roots_rejects_a_bad_limit(store: Store, limit: Any) -> None:
    """A limit that is not a positive integer is a ValueError."""
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        store.newest_roots("triage", limit)


def test_roots_of_traces_keeps_the_order_asked_and_marks_unknown_ones(store: Store) -> None:
    """Each asked trace maps to its root record, replay traces included, or None if unknown."""
    store.write(
        [
            span("r1", start_ms=100),
            span("c1", trace="t-r1", parent="r1", start_ms=110),
            span("r2", start_ms=200),
            span("rp", start_ms=300, test_run="run-1", source_span="r1"),
        ]
    )

    roots = store.roots_of_traces(["t-r2", "nope", "t-r1", "t-rp"])

    assert roots == {
        "t-r2": span("r2", start_ms=200),
        "nope": None,
        "t-r1": span("r1", start_ms=100),
        "t-rp": span("rp", start_ms=300, test_run="run-1", source_span="r1"),
    }
    assert list(roots) == ["t-r2", "nope", "t-r1", "t-rp"]
    assert store.roots_of_traces([]) == {}


def test_subtree_returns_a_span_and_its_descendants_in_start_order(store: Store) -> None:
    """A three-level tree comes back whole from the root, partly from a middle span."""
    tree = [
        span("R", trace="T", start_ms=0),
        span("A", trace="T", parent="R", start_ms=10),
        span("B", trace="T", parent="R", start_ms=20),
        span("A1", trace="T", parent="A", start_ms=15),
        span("A2", trace="T", parent="A", start_ms=12),
    ]
    # A span of another trace naming A as parent is not part of A's subtree.
    stray = span("X", trace="U", parent="A", start_ms=11)
    store.write([*tree, stray])

    assert ids(store.subtree("R")) == ["R", "A", "A2", "A1", "B"]
    assert store.subtree("A") == [tree[1], tree[4], tree[3]]
    assert store.subtree("B") == [tree[2]]
    assert store.subtree("missing") == []
    assert ids(store.trace_spans("T")) == ["R", "A", "A2", "A1", "B"]


def test_subtree_stops_at_a_parent_cycle(store: Store) -> None:
    """Hostile parent links that form a cycle end the walk instead of looping."""
    store.write(
        [
            span("y1", trace="Y", parent="y2", start_ms=1),
            span("y2", trace="Y", parent="y1", start_ms=2),
        ]
    )

    assert ids(store.subtree("y1")) == ["y1", "y2"]


def test_trace_status_lists_traces_with_completion_and_enough_spans(store: Store) -> None:
    """Only traces whose completion record and at least n spans are stored are whole."""
    not_completed = trace("t5")
    not_completed["completed"] = False
    store.write(
        [
            span("a", trace="t1"),
            span("b", trace="t1", parent="a"),
            span("c", trace="t2"),
            span("d", trace="t3"),
            span("e", trace="t3", parent="d"),
            span("f", trace="t5"),
            span("g", trace="t6"),
        ],
        [trace("t1", expected=2), trace("t2", expected=2), not_completed, trace("t6")],
    )

    asked = {"t6": 1, "t3": 2, "t1": 2, "t2": 2, "unknown": 0, "t5": 1}
    assert store.trace_status(asked) == ["t6", "t1"]
    assert store.trace_status({"t1": 3}) == []
    assert store.trace_status({}) == []


def test_functions_summarises_each_key_outside_replays(store: Store) -> None:
    """Roots and nested-only keys get call counts, errors, times, median and tokens."""
    store.write(
        [
            span(
                "r1", start_ms=0, duration_ms=10, contexts=[usage(input_tokens=10, output_tokens=5)]
            ),
            span("r2", start_ms=1000, duration_ms=30, error="boom"),
            span("r3", start_ms=2000, duration_ms=20, name="triage_v2"),
            span(
                "l1",
                trace="t-r1",
                parent="r1",
                key="llm",
                start_ms=2,
                duration_ms=4,
                contexts=[usage(input_tokens=100, output_tokens=20, cached=50)],
            ),
            span(
                "l2",
                trace="t-r2",
                parent="r2",
                key="llm",
                start_ms=1002,
                duration_ms=6,
                contexts=[usage(input_tokens=200, output_tokens=40)],
            ),
            span("rp", start_ms=3000, duration_ms=99, test_run="run-1", source_span="r1"),
            span(
                "lp",
                trace="t-rp",
                parent="rp",
                key="llm",
                start_ms=3001,
                test_run="run-1",
                contexts=[usage(input_tokens=999)],
            ),
        ]
    )

    assert store.functions() == [
        FunctionStats(
            key="llm",
            name="llm",
            calls=2,
            root_calls=0,
            errors=0,
            first_seen_us=BASE_US + 2_000,
            last_seen_us=BASE_US + 1_002_000,
            p50_duration_ms=pytest.approx(5.0, rel=ACCURACY),
            input_tokens=300,
            output_tokens=60,
            cached_tokens=50,
            total_tokens=360,
        ),
        FunctionStats(
            key="triage",
            name="triage_v2",
            calls=3,
            root_calls=3,
            errors=1,
            first_seen_us=BASE_US,
            last_seen_us=BASE_US + 2_000_000,
            p50_duration_ms=pytest.approx(20.0, rel=ACCURACY),
            input_tokens=10,
            output_tokens=5,
            cached_tokens=0,
            total_tokens=15,
        ),
    ]


def _trace_list_records() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    spans = [
        span("a1", start_ms=100, input=["refund for Zoë"]),
        span(
            "a1c",
            trace="t-a1",
            parent="a1",
            key="llm",
            start_ms=110,
            contexts=[usage("gpt-x", input_tokens=7, output_tokens=3, cached=1)],
        ),
        span("a2", start_ms=200, input=["100% off"], error="boom"),
        span("a3", start_ms=300, input=["under_score"]),
        span("b1", key="other", start_ms=250, input=["back\\slash"]),
        span("rp", start_ms=400, input=["refund for Zoë"], test_run="run-1", source_span="a1"),
    ]
    return spans, [trace("t-a1", expected=2)]


def test_traces_lists_root_summaries_newest_first(store: Store) -> None:
    """Each summary carries the root's facts and totals over the whole trace."""
    store.write(*_trace_list_records())

    def summary(span_id: str, start_ms: int, **changes: Any) -> TraceSummary:
        fields: dict[str, Any] = {
            "trace_id": f"t-{span_id}",
            "span_id": span_id,
            "key": "triage",
            "name": "triage",
            "started_at": f"2026-11-27T10:00:00.{start_ms:03d}000Z",
            "start_us": BASE_US + start_ms * 1000,
            "duration_ms": 10.0,
            "error": None,
            "test_run_id": None,
            "model": None,
            "completed": False,
            "span_count": 1,
            "input_tokens": 0,
            "output_tokens": 0,
            "cached_tokens": 0,
            "total_tokens": 0,
        }
        return TraceSummary(**{**fields, **changes})

    assert store.traces("triage") == [
        summary("a3", 300),
        summary("a2", 200, error="boom"),
        summary(
            "a1",
            100,
            model="gpt-x",
            completed=True,
            span_count=2,
            input_tokens=7,
            output_tokens=3,
            cached_tokens=1,
            total_tokens=10,
        ),
    ]


def test_traces_filters(store: Store) -> None:
    """Key, replays, errors, paging and literal search each narrow the list as documented."""
    store.write(*_trace_list_records())

    def listed(key: str | None = None, **options: Any) -> list[str]:
        return [summary.span_id for summary in store.traces(key, **options)]

    assert listed() == ["a3", "b1", "a2", "a1"]
    assert listed("triage", include_replays=True) == ["rp", "a3", "a2", "a1"]
    assert listed(errors_only=True) == ["a2"]
    assert listed(before_us=BASE_US + 300_000) == ["b1", "a2", "a1"]
    assert listed("triage", before_us=BASE_US + 300_000, limit=1) == ["a2"]
    assert listed(limit=1) == ["a3"]
    assert listed(search="zoë") == ["a1"]
    assert listed(search="REFUND", include_replays=True) == ["rp", "a1"]
    assert listed(search="100%") == ["a2"]
    assert listed(search="%") == ["a2"]
    assert listed(search="_") == ["a3"]
    assert listed(search="\\") == ["b1"]
    assert listed(search="nothing like it") == []
    assert listed("other", search="back\\slash") == ["b1"]
    assert listed(search="") == ["a3", "b1", "a2", "a1"]
    assert listed("nobody") == []


def test_traces_rejects_a_bad_limit_or_an_overlong_search(store: Store) -> None:
    """Limit below 1 and search terms over the maximum length are ValueErrors."""
    with pytest.raises(ValueError, match="limit"):
        store.traces(limit=0)
    with pytest.raises(ValueError, match="search is longer than 1000 characters"):
        store.traces(search="x" * 1001)


def test_token_totals_and_replay_trace_ids(store: Store) -> None:
    """Tokens sum over every span of a trace; a run's traces come from spans and completions."""
    store.write(
        [
            span("o1", contexts=[usage(input_tokens=10, output_tokens=5, cached=2)]),
            span(
                "o2", trace="t-o1", parent="o1", contexts=[usage(input_tokens=3, output_tokens=1)]
            ),
            span("r1", start_ms=500, test_run="run-1", source_span="o1"),
            span("r1c", trace="t-r1", parent="r1", start_ms=501, test_run="run-1"),
            span("r3", start_ms=100, test_run="run-1", source_span="o1"),
            span("x1", start_ms=50, test_run="run-2", source_span="o1"),
        ],
        [
            trace("t-r1", expected=2, test_run="run-1", source_trace="t-o1"),
            trace("t-r2", test_run="run-1", source_trace="t-o1"),
        ],
    )

    assert store.token_totals(["t-o1", "unknown", "t-o1"]) == {
        "t-o1": {"input": 13, "output": 6, "cached": 2, "total": 19},
        "unknown": {"input": 0, "output": 0, "cached": 0, "total": 0},
    }
    assert store.token_totals([]) == {}
    assert store.replay_trace_ids("run-1") == ["t-r3", "t-r1", "t-r2"]
    assert store.replay_trace_ids("run-3") == []
    assert store.count_spans() == 6


def test_trace_models_names_each_traces_first_llm_call(store: Store) -> None:
    """The model of the earliest span with usage, by start then id; None without one."""
    store.write(
        [
            span("m1", start_ms=0),
            span("m1b", trace="t-m1", parent="m1", start_ms=20, contexts=[usage("second")]),
            span("m1a", trace="t-m1", parent="m1", start_ms=10, contexts=[usage("first")]),
            span("m2", start_ms=5, contexts=[usage("own\x00model")]),
            span("m3", start_ms=7),
        ]
    )
    assert store.trace_models(["t-m1", "t-m2", "t-m3", "unknown", "t-m1"]) == {
        "t-m1": "first",
        "t-m2": "own\x00model",
        "t-m3": None,
        "unknown": None,
    }
    assert store.trace_models([]) == {}
