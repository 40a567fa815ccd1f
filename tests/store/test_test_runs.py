"""Test runs: create, complete (twice), change status, read back and list."""

from __future__ import annotations

import dataclasses

import pytest

from bitfab.exceptions import StoreError
from bitfab.store import Store, TestRun, TestRunItem, UnknownTestRunError


def make_run(run_id: str = "run-1", *, key: str = "triage", created_at: str = "") -> TestRun:
    return TestRun(
        id=run_id,
        key=key,
        created_at=created_at or "2026-11-27T10:00:00.000000Z",
        name="after the prompt change",
        options={"limit": 2, "max_concurrency": 10},
        code_version="abc123",
        extra={"notes": "ünïcode \x00 ok", "metadata": {"pr": 42}},
        items=(
            TestRunItem(idx=0, original_trace_id="t-o1", original_span_id="o1"),
            TestRunItem(idx=1, original_trace_id="t-o2", original_span_id="o2"),
        ),
    )


def test_create_and_get_round_trips_a_run_with_its_items(store: Store) -> None:
    """A created run reads back equal, items included, status running."""
    run = make_run()

    store.create_test_run(run)

    assert store.get_test_run("run-1") == run
    assert store.get_test_run("missing") is None


def test_complete_replaces_items_and_completing_again_replaces_them_again(store: Store) -> None:
    """Completion sets status, summary and time; a second completion wins whole."""
    store.create_test_run(make_run())
    items = [
        TestRunItem(
            idx=1,
            original_trace_id="t-o2",
            original_span_id="o2",
            replay_trace_id="t-r2",
            verdict="changed",
            item={"output": {"a": 1}, "original_output": {"a": 2}, "durationMs": 3.5},
        ),
        TestRunItem(
            idx=0,
            original_trace_id="t-o1",
            original_span_id="o1",
            replay_trace_id="t-r1",
            verdict="same",
            item={"output": "x"},
        ),
    ]

    store.complete_test_run(
        "run-1",
        items=items,
        summary={"same": 1, "changed": 1},
        completed_at="2026-11-27T10:05:00.000000Z",
    )
    first = store.get_test_run("run-1")
    store.complete_test_run(
        "run-1",
        items=[dataclasses.replace(items[1], verdict="error", item={"error": "boom"})],
        summary={"error": 1},
        status="failed",
        completed_at="2026-11-27T10:06:00.000000Z",
    )
    second = store.get_test_run("run-1")

    assert first == dataclasses.replace(
        make_run(),
        status="completed",
        summary={"same": 1, "changed": 1},
        completed_at="2026-11-27T10:05:00.000000Z",
        items=(items[1], items[0]),
    )
    assert second == dataclasses.replace(
        make_run(),
        status="failed",
        summary={"error": 1},
        completed_at="2026-11-27T10:06:00.000000Z",
        items=(dataclasses.replace(items[1], verdict="error", item={"error": "boom"}),),
    )


def test_set_status_keeps_items(store: Store) -> None:
    """Interrupting a run changes only its status."""
    store.create_test_run(make_run())

    store.set_test_run_status("run-1", "interrupted")

    assert store.get_test_run("run-1") == dataclasses.replace(make_run(), status="interrupted")


def test_list_test_runs_newest_first_by_key_without_items(store: Store) -> None:
    """Runs list newest first, filter by key, honour the limit and leave items out."""
    store.create_test_run(make_run("r-old", created_at="2026-11-27T09:00:00.000000Z"))
    store.create_test_run(make_run("r-new", created_at="2026-11-27T11:00:00.000000Z"))
    store.create_test_run(
        make_run("r-other", key="other", created_at="2026-11-27T10:00:00.000000Z")
    )

    assert [run.id for run in store.list_test_runs()] == ["r-new", "r-other", "r-old"]
    assert [run.id for run in store.list_test_runs("triage")] == ["r-new", "r-old"]
    assert store.list_test_runs("triage", limit=1) == [
        dataclasses.replace(make_run("r-new", created_at="2026-11-27T11:00:00.000000Z"), items=())
    ]


def test_test_run_errors(store: Store) -> None:
    """Duplicate ids, unknown runs, unknown statuses and repeated item indexes are refused."""
    store.create_test_run(make_run())

    with pytest.raises(StoreError, match="a test run with id 'run-1' already exists"):
        store.create_test_run(make_run())
    with pytest.raises(UnknownTestRunError, match="no test run with id 'nope'"):
        store.complete_test_run("nope", items=[], summary={})
    with pytest.raises(UnknownTestRunError):
        store.set_test_run_status("nope", "interrupted")
    with pytest.raises(ValueError, match="status must be one of"):
        store.complete_test_run("run-1", items=[], summary={}, status="done")
    with pytest.raises(ValueError, match="two items of test run 'run-1' have idx 0"):
        store.complete_test_run("run-1", items=[TestRunItem(idx=0), TestRunItem(idx=0)], summary={})
    with pytest.raises(ValueError, match="summary: not valid JSON"):
        store.complete_test_run("run-1", items=[], summary={"x": float("nan")})
    assert store.get_test_run("run-1") == make_run()
