"""What the pages show, computed from plain records: formatting, bounding hostile values, the
span tree, a span's detail, and test run items with their diff paths."""

from __future__ import annotations

import math
from typing import Any

import pytest
from ui_helpers import span

from bitfab.server.ui import runs, spans, values
from bitfab.server.ui.values import NONE


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (None, NONE),
        ("3", NONE),
        (True, NONE),
        (math.nan, NONE),
        (0, "0 ms"),
        (0.421, "0.42 ms"),
        (4.26, "4.3 ms"),
        (312.4, "312 ms"),
        (4210, "4.21 s"),
        (192_000, "3m 12s"),
        (7_380_000, "2h 03m"),
        (-5, "-5.0 ms"),
    ],
)
def test_durations_read_like_people_write_them(ms: Any, text: str) -> None:
    """Milliseconds to the unit that fits; a dash for what isn't a finite number."""
    assert values.fmt_ms(ms) == text


def test_numbers_times_and_changes() -> None:
    """Thousands separators, UTC times, relative ages and percent changes."""
    assert values.fmt_int(1752) == "1,752" and values.fmt_int(None) == NONE
    us = 1_795_773_600_313_000  # 2026-11-27T10:00:00.313Z
    assert values.fmt_time(us) == "2026-11-27 10:00:00"
    assert values.fmt_time(us, millis=True) == "2026-11-27 10:00:00.313"
    assert values.fmt_time(10**30) == NONE
    assert values.fmt_ago(us, us + 30_000_000) == "just now"
    assert values.fmt_ago(us, us + 3 * 3600 * 10**6) == "3 h ago"
    assert values.fmt_ago(us, us - 3600 * 10**6) == "in the future"
    assert values.fmt_pct_change(4.2, 2.0) == "-52%"
    assert values.fmt_pct_change(0, 2.0) == "" and values.fmt_pct_change(None, 1) == ""


def test_previews_are_one_short_line() -> None:
    """Compact JSON on one line, clipped; a call's arguments without the outer list."""
    assert values.preview({"a": "x\ny", "b": [1, 2]}) == '{"a": "x\\ny", "b": [1, 2]}'
    assert len(values.preview(["word " * 1000], 50)) == 50
    assert values.preview_args([{"id": 1}, "acme"]) == '{"id": 1}, "acme"'
    assert values.preview_args("not a list") == '"not a list"'


def test_bounded_cuts_long_strings_long_lists_and_deep_nesting() -> None:
    """Every cut leaves a readable marker; the rest of the value is kept as it was."""
    deep: Any = 0
    for _ in range(100):
        deep = [deep]
    value = {"s": "x" * 50, "l": list(range(30)), "deep": deep}
    out = values.bounded(value, max_string=10, max_items=5, max_depth=8)
    assert out["s"] == "x" * 10 + "… (40 more characters)"
    assert out["l"] == [0, 1, 2, 3, 4, "… 25 more items"]
    inner = out["deep"]
    for _ in range(7):
        inner = inner[0]
    assert inner == "… (nested deeper than the page shows)"
    assert values.bounded({"ok": True, "n": None, "f": math.inf}) == {
        "ok": True,
        "n": None,
        "f": "inf",
    }
    many = values.bounded({str(i): i for i in range(10)}, max_items=3)
    assert many == {"0": 0, "1": 1, "2": 2, "…": "7 more keys"}
    small = values.bounded({"a": "y" * 1000, "b": "z" * 1000}, budget=500)
    assert small["a"].endswith("more characters)") and small["…"] == "1 more key"
    assert values.bounded(["y" * 1000, "z"], budget=500)[1] == "… 1 more item"
    assert values.bounded(object()).startswith("<object object")


def test_the_tree_follows_parents_in_start_order() -> None:
    """Children under their parent in start order, depths, bar offsets and widths in percent."""
    records = [
        span("r", "t", start=0, end=100),
        span("b", "t", parent="r", start=50, end=100, key="b"),
        span("a", "t", parent="r", start=10, end=40, key="a"),
        span("a1", "t", parent="a", start=20, end=30, key="a1"),
    ]
    records.sort(key=lambda r: r["rawSpan"]["started_at"])
    view = spans.trace_view("t", records, None)
    assert [(row.id, row.depth, row.children) for row in view.rows] == [
        ("r", 0, 2),
        ("a", 1, 1),
        ("a1", 2, 0),
        ("b", 1, 0),
    ]
    assert [(row.offset_pct, row.width_pct) for row in view.rows] == [
        (0.0, 100.0),
        (10.0, 30.0),
        (20.0, 10.0),
        (50.0, 50.0),
    ]
    assert view.total_ms == 100 and view.ticks == ["0 ms", "50 ms", "100 ms"]
    assert view.completed is False and view.root is not None and view.root.id == "r"


def test_orphans_loops_and_duplicates_are_shown_once() -> None:
    """A missing parent, a loop of parents, a span that is its own parent, a repeated id."""
    records = [
        span("r", "t"),
        span("orphan", "t", parent="gone"),
        span("x", "t", parent="y"),
        span("y", "t", parent="x"),
        span("self", "t", parent="self"),
        span("r", "t", name="again"),
        {"id": 7, "rawSpan": "not an object"},
        {"no": "id"},
    ]
    view = spans.trace_view("t", records, {"completed": True, "expectedSpanCount": 9})
    ids = [row.id for row in view.rows]
    assert sorted(ids) == ["7", "orphan", "r", "self", "x", "y"] and len(ids) == 6
    orphans = {row.id for row in view.rows if row.orphan}
    assert "orphan" in orphans and ({"x", "y"} & orphans)
    assert view.completed and view.expected_spans == 9


def test_a_span_of_unknown_shape_still_makes_a_row() -> None:
    """No timestamps, no span_data: a row without a bar, named by its id."""
    view = spans.trace_view("t", [{"id": "s", "traceId": "t", "rawSpan": {}}], None)
    row = view.rows[0]
    assert (row.name, row.offset_pct, row.duration_ms, row.kind_class) == ("s", None, None, "other")
    assert view.ticks == ["", "", ""]


def test_span_detail_reads_errors_usage_mocks_and_replays() -> None:
    """Everything the detail pane shows, from one record."""
    record = span(
        "s",
        "t",
        error="boom",
        input=["a", {"lang": "en"}],
        input_meta={"v": 1, "kwarg_names": ["lang"]},
        contexts=[
            {"model": "m", "inputTokens": 5, "outputTokens": 2, "costUsd": 0.0015},
            {"unrelated": 1},
        ],
        run="run-1",
        metadata={"user": "u1"},
        runtime={"thread_id": 1},
    )
    record["mocked"] = True
    record["mockSource"] = "recorded"
    record["rawSpan"]["input_source_span_id"] = "orig"
    detail = spans.span_detail(record)
    assert detail["input"] == {"args": ["a"], "kwargs": {"lang": "en"}}
    assert detail["error"]["type"] == "ValueError" and detail["error"]["message"] == "boom"
    assert "raise ValueError" in detail["error"]["traceback"]
    assert detail["has_output"] is False
    assert detail["usage"] == [
        {
            "model": "m",
            "provider": None,
            "input_tokens": 5,
            "output_tokens": 2,
            "cached_tokens": 0,
            "cost_usd": 0.0015,
            "cost": "$0.0015",
        }
    ]
    assert detail["mocked"] == {"source": "recorded", "target": None}
    assert (detail["test_run_id"], detail["source_span_id"]) == ("run-1", "orig")
    assert detail["metadata"] == {"user": "u1"}
    assert detail["details"]["runtime"] == {"thread_id": 1}
    assert detail["duration"] == "10 ms"


@pytest.mark.parametrize(
    ("path", "segments"),
    [
        ("$", []),
        ("$.priority", ["priority"]),
        ("$.tags[2]", ["tags", 2]),
        ('$["x y"][0].z', ["x y", 0, "z"]),
        ('$["\\u00e9\\"]"]', ['é"]']),
        ('$["0"]', ["0"]),
        ("$.", None),
        ("$[x]", None),
        ('$["open', None),
        ("priority", None),
        (None, None),
    ],
)
def test_diff_paths_become_segments(path: Any, segments: Any) -> None:
    """The compare module's paths, as lists the page's script walks; anything else is None."""
    assert runs.diff_segments(path) == segments


def test_item_view_of_a_changed_item() -> None:
    """Changes listed with short old/new texts, highlights as segments, values bounded."""
    item = {
        "verdict": "changed",
        "input": {"args": [{"id": 1}], "kwargs": {"lang": "en"}},
        "original_output": {"priority": "normal", "big": "x" * 50_000},
        "result": {"priority": "high", "big": "x" * 50_000},
        "diff": [
            {"path": "$.priority", "kind": "changed", "old": "normal", "new": "high"},
            {"path": "$.tags[2]", "kind": "added", "old": None, "new": "open"},
            {"path": "$", "kind": "more", "new": 5},
            {"path": "garbage", "kind": "changed", "old": 1, "new": 2},
        ],
        "duration_ms": 2.0,
        "original_duration_ms": 4.0,
        "tokens": {"total": 0},
        "original_tokens": {"total": 48},
        "model": "b",
        "original_model": "a",
        "trace_id": "new-trace",
        "original_trace_id": "old-trace",
    }
    view = runs.item_view(3, None, item)
    assert (view.verdict, view.verdict_class, view.ms_change) == ("changed", "changed", "-50%")
    assert view.changes[0] == {
        "path": "$.priority",
        "kind": "changed",
        "old": '"normal"',
        "new": '"high"',
    }
    assert view.more_changes == 5 and len(view.changes) == 3
    assert view.data["highlights"] == [
        {"path": ["priority"], "kind": "changed"},
        {"path": ["tags", 2], "kind": "added"},
    ]
    assert view.model == "a → b"
    assert (view.original_tokens, view.new_tokens) == (48, 0)
    assert view.input_preview == '{"id": 1}, "lang": "en"'
    assert view.data["original_output"]["big"].endswith("(30,000 more characters)")
    assert (view.original_trace_id, view.replay_trace_id) == ("old-trace", "new-trace")


def test_item_view_of_garbage_does_not_raise() -> None:
    """An item with every field of the wrong type still renders."""
    view = runs.item_view(0, None, {"diff": "x", "tokens": 3, "mocked": "y", "verdict": 5})
    assert view.verdict == "5" and view.verdict_class == "other" and view.changes == []


@pytest.mark.parametrize(
    ("verdict", "css"),
    [
        ("same", "same"),
        ("changed", "changed"),
        ("fixed", "good"),
        ("error", "bad"),
        ("still_error", "muted-bad"),
        ("not_replayable", "bad"),
        ("skipped", "skip"),
        ("whatever", "other"),
        (None, "other"),
    ],
)
def test_verdict_colours(verdict: Any, css: str) -> None:
    """same grey, changed amber, fixed green, errors red."""
    assert runs.verdict_class(verdict) == css
