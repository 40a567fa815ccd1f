import dataclasses
import datetime
import decimal
import enum
import json
import math
import uuid

import pytest

from bitfab.exceptions import RegressionError
from bitfab.playback.compare import Change, Truncated
from bitfab.playback.result import ReplayItem, ReplayResult, Summary

URL = "http://127.0.0.1:8765/test-runs/tr-1"
NOT_ALLOWED = (
    "cannot rebuild 'app.models:Ticket': the class is not allowed; register it with"
    " bitfab.allow() or name it in the function's annotations"
)


def tokens(inp, out, cached=0):
    return {"input": inp, "output": out, "cached": cached, "total": inp + out}


def make_items():
    return [
        ReplayItem(
            index=0,
            verdict="same",
            duration_ms=80.0,
            original_duration_ms=100.0,
            tokens=tokens(100, 10, cached=50),
            original_tokens=tokens(100, 20),
            model="gpt-4o",
            original_model="gpt-4o",
            trace_id="r-0",
            original_trace_id="t-0",
            original_span_id="s-0",
        ),
        ReplayItem(
            index=1,
            verdict="changed",
            duration_ms=300.0,
            original_duration_ms=200.0,
            tokens=tokens(200, 60),
            original_tokens=tokens(150, 50),
            model="gpt-4o-mini",
            original_model="gpt-4o",
            diff=[
                Change("$.label", "changed", "spam", "ham"),
                Change("$.score", "changed", 0.9, 0.4),
            ],
            trace_id="r-1",
            original_trace_id="t-1",
            original_span_id="s-1",
        ),
        ReplayItem(
            index=2,
            verdict="error",
            error="ValueError: bad\nthing",
            error_type="ValueError",
            duration_ms=5.0,
            original_duration_ms=50.0,
            trace_id="r-2",
            original_trace_id="t-2",
            original_span_id="s-2",
        ),
        ReplayItem(
            index=3,
            verdict="not_replayable",
            error=NOT_ALLOWED,
            original_duration_ms=40.0,
            original_trace_id="t-3",
            original_span_id="s-3",
        ),
    ]


def make_result(**overrides):
    fields = {
        "key": "triage",
        "items": make_items(),
        "test_run_id": "tr-1",
        "test_run_url": URL,
        "name": "nightly",
    }
    return ReplayResult(**(fields | overrides))


def test_summary_counts_verdicts_and_averages_durations_and_tokens():
    """The summary counts every verdict and takes means, medians and token totals per side."""
    assert make_result().summary == Summary(
        total=4,
        counts={
            "same": 1,
            "changed": 1,
            "error": 1,
            "fixed": 0,
            "still_error": 0,
            "not_replayable": 1,
            "skipped": 0,
            "valid": 0,
        },
        original_mean_ms=97.5,
        new_mean_ms=(80.0 + 300.0 + 5.0) / 3,
        original_p50_ms=75.0,
        new_p50_ms=80.0,
        original_tokens={"input": 250, "output": 70, "cached": 0, "total": 320},
        new_tokens={"input": 300, "output": 70, "cached": 50, "total": 370},
    )


def test_summary_of_no_items_has_no_durations():
    """With no items the counts are zero and the durations unknown."""
    summary = ReplayResult("triage", []).summary
    assert summary.to_dict() == {
        "total": 0,
        "counts": dict.fromkeys(
            (
                "same",
                "changed",
                "error",
                "fixed",
                "still_error",
                "not_replayable",
                "skipped",
                "valid",
            ),
            0,
        ),
        "original_mean_ms": None,
        "new_mean_ms": None,
        "original_p50_ms": None,
        "new_p50_ms": None,
        "original_tokens": {"input": 0, "output": 0, "cached": 0, "total": 0},
        "new_tokens": {"input": 0, "output": 0, "cached": 0, "total": 0},
    }


def test_summary_lists_unknown_verdicts_after_the_known_ones():
    """A verdict outside the known list is counted too, after them."""
    item = ReplayItem(index=0, verdict="weird", original_trace_id="t", original_span_id="s")
    counts = ReplayResult("k", [item]).summary.counts
    assert list(counts)[-1] == "weird"
    assert counts["weird"] == 1


@pytest.mark.parametrize(
    ("verdict", "ok"),
    [
        ("same", True),
        ("changed", False),
        ("error", False),
        ("fixed", True),
        ("still_error", True),
        ("not_replayable", False),
        ("skipped", True),
        ("valid", True),
    ],
)
def test_ok_is_false_only_for_regressions(verdict, ok):
    """changed, error and not_replayable fail a run; still_error fails the same way as before."""
    item = ReplayItem(index=0, verdict=verdict, original_trace_id="t", original_span_id="s")
    assert ReplayResult("k", [item]).ok is ok
    assert ReplayResult("k", []).ok is True


def test_str_is_a_fixed_width_table_with_a_summary_line():
    """Printing a result gives one row per item, a summary line and the test run URL."""
    assert str(make_result()) == "\n".join(
        [
            "replay of 'triage' (nightly): 4 calls",
            "    #  verdict          original        new   tokens  model                 detail",
            "    0  same               100 ms      80 ms      -10  gpt-4o",
            "    1  changed            200 ms     300 ms      +60  gpt-4o->gpt-4o-mini   "
            '$.label: "spam" -> "ham" (+1 more)',
            "    2  error               50 ms     5.0 ms        -  -                     "
            "ValueError: bad thing",
            "    3  not_replayable      40 ms          -        -  -                     "
            "cannot rebuild 'app.models:Ticket': the class is not allo...",
            "4 calls: 1 same, 1 changed, 1 error, 1 not_replayable"
            " | mean 98 ms -> 128 ms (+32%) | p50 75 ms -> 80 ms (+7%) | tokens 320 -> 370 (+50)",
            f"test run: {URL}",
        ]
    )


def test_str_shows_fixed_items_scores_and_run_warnings():
    """Fixed items show the old error, scores show up, and an incomplete run says so."""
    items = [
        ReplayItem(
            index=7,
            verdict="fixed",
            original_error="KeyError: 'x'",
            duration_ms=12_345.0,
            original_trace_id="t",
            original_span_id="s",
        ),
        ReplayItem(
            index=8, verdict="changed", score=0.5, original_trace_id="t", original_span_id="s"
        ),
    ]
    result = ReplayResult(
        "k", items, dry_run=True, completed=False, unknown_trace_ids=["t-9", "t-10"]
    )
    assert str(result) == "\n".join(
        [
            "replay of 'k' [dry run]: 2 calls",
            "    #  verdict          original        new   tokens  model                 detail",
            "    7  fixed                   -     12.3 s        -  -                     "
            "was: KeyError: 'x'",
            "    8  changed                 -          -        -  -                     "
            "score 0.50",
            "2 calls: 1 changed, 1 fixed | mean - -> 12.3 s | p50 - -> 12.3 s",
            "unknown trace ids: t-9, t-10",
            "warning: the test run could not be completed on the backend",
        ]
    )


def test_str_of_an_empty_result_says_there_were_no_recorded_calls():
    """With no items the table gives way to the message (or a default one)."""
    assert str(ReplayResult("triage", [])) == "no recorded calls for key 'triage'"
    result = ReplayResult(
        "triage", [], test_run_url=URL, message="no recorded calls for key 'triage' (limit 5)"
    )
    assert str(result) == f"no recorded calls for key 'triage' (limit 5)\ntest run: {URL}"


def test_result_behaves_like_a_sequence_of_items():
    """Iteration, len and indexing go to the items."""
    result = make_result()
    assert [item.index for item in result] == [0, 1, 2, 3]
    assert len(result) == 4
    assert result[1] is result.items[1]
    assert result[1:3] == result.items[1:3]
    assert repr(result) == (
        "<ReplayResult key='triage' items=4 same=1 changed=1 error=1 not_replayable=1>"
    )


def test_raise_for_regressions_lists_the_failing_items():
    """The error names each failing item with its trace, verdict and first changed paths."""
    with pytest.raises(RegressionError) as caught:
        make_result().raise_for_regressions()
    assert caught.value.key == "triage"
    assert str(caught.value) == "\n".join(
        [
            "2 of 4 replayed calls of 'triage' regressed (1 changed, 1 error):",
            "  #1 changed (trace t-1): $.label, $.score",
            "  #2 error (trace t-2): ValueError: bad thing",
            f"test run: {URL}",
        ]
    )


def test_raise_for_regressions_follows_fail_on():
    """Only the verdicts in fail_on raise; a single string is one verdict."""
    make_result().raise_for_regressions(fail_on=("fixed", "still_error"))
    with pytest.raises(RegressionError) as caught:
        make_result(test_run_url=None).raise_for_regressions(fail_on="not_replayable")
    assert str(caught.value) == (
        "1 of 4 replayed calls of 'triage' regressed (1 not_replayable):\n"
        f"  #3 not_replayable (trace t-3): {NOT_ALLOWED}"
    )


def test_raise_for_regressions_counts_changes_beyond_the_first_paths():
    """Past three paths, and past a capped diff, the message says how many more changed."""
    changes = [Change(f"$[{i}]", "changed", i, -i) for i in range(4)]
    changes.append(Change("$", "more", None, 96))
    item = ReplayItem(
        index=0, verdict="changed", diff=changes, original_trace_id="t", original_span_id="s"
    )
    with pytest.raises(RegressionError) as caught:
        ReplayResult("k", [item] * 25).raise_for_regressions()
    lines = str(caught.value).splitlines()
    assert lines[:2] == [
        "25 of 25 replayed calls of 'k' regressed (25 changed):",
        "  #0 changed (trace t): $[0], $[1], $[2] (+97 more)",
    ]
    assert lines[-1] == "  ... and 5 more"
    assert len(lines) == 22


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: object


class BadRepr:
    def __repr__(self):
        raise RuntimeError("no repr")


class Fixed:
    def __repr__(self):
        return "Fixed()"


def test_item_to_dict_survives_odd_objects():
    """Live values of any kind come out as JSON that json.dumps accepts, strictly."""
    cyclic: list = [1]
    cyclic.append(cyclic)
    item = ReplayItem(
        index=0,
        verdict="changed",
        input={"args": [(1, 2)], "kwargs": {"when": datetime.date(2026, 1, 2)}},
        result={
            "id": uuid.UUID(int=1),
            "amount": decimal.Decimal("1.10"),
            "raw": b"\xff\x00",
            "text": bytearray(b"hi"),
            "set": {3, 1, 2},
            "nan": math.nan,
            "inf": -math.inf,
            "bad": BadRepr(),
            "cycle": cyclic,
            "point": Point(1, Fixed()),
            "color": Color.RED,
            "took": datetime.timedelta(seconds=1.5),
            1: "int key",
            None: "none key",
        },
        original_output=Fixed(),
        diff=[Change("$.x", "changed", Truncated('{"a": ...'), 1)],
        score=math.nan,
        original_trace_id="t",
        original_span_id="s",
    )
    data = item.to_dict()
    json.dumps(data, allow_nan=False)
    assert data == {
        "index": 0,
        "verdict": "changed",
        "input": {"args": [[1, 2]], "kwargs": {"when": "2026-01-02"}},
        "result": {
            "id": "00000000-0000-0000-0000-000000000001",
            "amount": "1.10",
            "raw": "ff00",
            "text": "hi",
            "set": [1, 2, 3],
            "nan": "NaN",
            "inf": "-Infinity",
            "bad": "<BadRepr object>",
            "cycle": [1, "<cycle>"],
            "point": {"x": 1, "y": "Fixed()"},
            "color": "red",
            "took": 1.5,
            "1": "int key",
            "null": "none key",
        },
        "original_output": "Fixed()",
        "error": None,
        "error_type": None,
        "duration_ms": None,
        "tokens": {"input": 0, "output": 0, "cached": 0, "total": 0},
        "model": None,
        "original_duration_ms": None,
        "original_tokens": {"input": 0, "output": 0, "cached": 0, "total": 0},
        "original_model": None,
        "original_error": None,
        "diff": [
            {"path": "$.x", "kind": "changed", "old": '{"a": ...', "new": 1, "truncated": ["old"]}
        ],
        "score": "NaN",
        "trace_id": None,
        "original_trace_id": "t",
        "original_span_id": "s",
        "mocked": [],
    }


def test_to_dict_uses_the_given_converter_and_falls_back_when_it_fails():
    """A to_jsonable that raises or returns odd objects cannot break to_dict."""

    def to_jsonable(value):
        if isinstance(value, Point):
            return {"point": [value.x, value.y]}
        raise TypeError("cannot")

    item = ReplayItem(
        index=0,
        verdict="same",
        input={"args": [], "kwargs": {}},
        result=Point(1, Fixed()),
        original_output=Color.RED,
        original_trace_id="t",
        original_span_id="s",
    )
    data = item.to_dict(to_jsonable)
    assert (data["input"], data["result"], data["original_output"]) == (
        {"args": [], "kwargs": {}},
        {"point": [1, "Fixed()"]},
        "red",
    )


def test_result_to_dict_includes_the_summary_and_passes_json_dumps():
    """The whole result serializes, with its summary and each item."""
    item = ReplayItem(
        index=0,
        verdict="same",
        result=BadRepr(),
        duration_ms=2.0,
        original_duration_ms=4.0,
        original_trace_id="t",
        original_span_id="s",
        mocked=["llm:chat#0"],
    )
    data = ReplayResult("k", [item], "tr", URL, "n").to_dict()
    json.dumps(data, allow_nan=False)
    assert data == {
        "key": "k",
        "name": "n",
        "test_run_id": "tr",
        "test_run_url": URL,
        "dry_run": False,
        "completed": True,
        "ok": True,
        "message": None,
        "unknown_trace_ids": [],
        "summary": ReplayResult("k", [item]).summary.to_dict(),
        "items": [item.to_dict()],
    }
    assert data["items"][0]["result"] == "<BadRepr object>"
    assert data["items"][0]["mocked"] == ["llm:chat#0"]
    assert data["summary"]["new_mean_ms"] == 2.0
