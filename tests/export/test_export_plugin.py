"""The ``bitfab_capture`` pytest fixture, run in a pytest session of its own (pytester)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

APP_TEST = """
import json

import pytest

import bitfab


@bitfab.trace(key="triage")
def triage(ticket):
    if not ticket:
        raise ValueError("empty ticket")
    return {"label": label(ticket)}


@bitfab.trace(key="label")
def label(ticket):
    return "spam" if "win" in ticket else "ham"


def test_capture(bitfab_capture):
    assert triage("you win") == {"label": "spam"}
    with pytest.raises(ValueError, match="empty ticket"):
        triage("")
    assert bitfab_capture.tree() == [
        {
            "key": "triage",
            "name": "triage",
            "input": ["you win"],
            "output": {"label": "spam"},
            "children": [
                {"key": "label", "name": "label", "input": ["you win"], "output": "spam",
                 "children": []},
            ],
        },
        {"key": "triage", "name": "triage", "input": [""], "error": "empty ticket",
         "children": []},
    ]
    assert [trace["traceFunctionKey"] for trace in bitfab_capture.traces] == ["triage", "triage"]
    stats = bitfab.stats()
    assert (stats.emitted, stats.exported, stats.queued, stats.in_flight, stats.dropped) == (
        3, 3, 0, 0, {}
    )
    print("CAPTURED", json.dumps([s["traceFunctionKey"] for s in bitfab_capture.spans]))


def test_capture_is_per_test(bitfab_capture):
    assert bitfab_capture.spans == []
    assert label("hello") == "ham"
    assert [s["traceFunctionKey"] for s in bitfab_capture.spans] == ["label"]
"""


def test_bitfab_capture_fixture_captures_spans(pytester: pytest.Pytester) -> None:
    """A test using ``bitfab_capture`` passes and sees exactly the spans of its own calls."""
    pytester.makepyfile(test_app=APP_TEST)
    result = pytester.runpytest_subprocess("-q", "-s", "-p", "no:cacheprovider")

    result.assert_outcomes(passed=2)
    assert 'CAPTURED ["label", "triage", "triage"]' in result.outlines
    assert not (pytester.path / ".bitfab").exists()
