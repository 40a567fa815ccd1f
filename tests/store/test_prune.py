"""Retention: prune deletes old traces whole, in bounded batches, and spares test runs' traces."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from bitfab.store import PruneResult, Store, TestRun, TestRunItem, WriteResult

from .factories import BASE_US, iso, span, trace


def old_and_new(store: Store) -> None:
    """Two old traces (one with a child and a completion record) and one new trace."""
    store.write(
        [
            span("old-1", start_ms=0),
            span("old-1c", trace="t-old-1", parent="old-1", key="llm", start_ms=1),
            span("old-2", key="other", start_ms=100),
            span("new-1", start_ms=10_000),
            span("new-1c", trace="t-new-1", parent="new-1", start_ms=10_001),
        ],
        [trace("t-old-1", expected=2), trace("t-new-1", expected=2, start_ms=10_000)],
    )


def remaining(store: Store) -> list[str]:
    return sorted(s.span_id for s in store.traces(limit=100, include_replays=True))


def cutoff(ms: float) -> int:
    return BASE_US + int(ms * 1000)


def test_prune_deletes_traces_whose_root_is_older_with_their_spans_and_completion(
    store: Store,
) -> None:
    """Roots before the cutoff go with their children and completion; newer ones stay whole."""
    old_and_new(store)

    result = store.prune(cutoff(5_000))

    assert result == PruneResult(traces=2, spans=3, batches=1)
    assert remaining(store) == ["new-1"]
    assert store.trace_spans("t-old-1") == []
    assert store.get_trace("t-old-1") is None
    assert [s["id"] for s in store.trace_spans("t-new-1")] == ["new-1", "new-1c"]
    assert store.trace_status({"t-new-1": 2}) == ["t-new-1"]
    assert store.count_spans() == 2


def test_prune_twice_deletes_nothing_the_second_time(store: Store) -> None:
    """Pruning is idempotent: the same cutoff again finds nothing."""
    old_and_new(store)
    store.prune(cutoff(5_000))

    assert store.prune(cutoff(5_000)) == PruneResult()
    assert store.count_spans() == 2


def test_the_cutoff_is_strict_and_unknown_starts_are_kept(store: Store) -> None:
    """A root starting exactly at the cutoff stays, as does one whose start is unknown."""
    unknown = span("unknown")
    unknown["rawSpan"]["started_at"] = "not a time"
    store.write([span("at", start_ms=1_000), span("before", start_ms=999), unknown])

    result = store.prune(cutoff(1_000))

    assert result == PruneResult(traces=1, spans=1, batches=1)
    assert remaining(store) == ["at", "unknown"]


def test_batches_hold_at_most_batch_size_traces_and_max_batches_stops_early(store: Store) -> None:
    """12 old traces in batches of 5 take 3 transactions; max_batches=2 stops after 10."""
    store.write(
        [span(f"r{i:02d}", start_ms=i) for i in range(12)]
        + [span(f"c{i:02d}", trace=f"t-r{i:02d}", parent=f"r{i:02d}") for i in range(12)]
        + [span("keep", start_ms=50_000)]
    )

    first = store.prune(cutoff(1_000), batch_size=5, max_batches=2)
    after_first = remaining(store)
    rest = store.prune(cutoff(1_000), batch_size=5)

    assert first == PruneResult(traces=10, spans=20, batches=2, finished=False)
    assert after_first == ["keep", "r10", "r11"]
    assert rest == PruneResult(traces=2, spans=4, batches=1)
    assert remaining(store) == ["keep"]


def test_prune_of_one_key_leaves_other_keys(store: Store) -> None:
    """With key=, only traces whose old root is of that key go."""
    old_and_new(store)

    result = store.prune(cutoff(5_000), key="other")

    assert result == PruneResult(traces=1, spans=1, batches=1)
    assert remaining(store) == ["new-1", "old-1"]


def run(run_id: str, *, created_ms: float = 0, key: str = "triage", **item: Any) -> TestRun:
    items = (TestRunItem(idx=0, **item),) if item else ()
    return TestRun(id=run_id, key=key, created_at=iso(created_ms), items=items)


def test_traces_a_test_run_references_are_kept_unless_runs_are_pruned_too(store: Store) -> None:
    """Originals and replays named by items, and replays under a stored run id, are kept."""
    store.write(
        [
            span("orig", start_ms=0),
            span("named-replay", start_ms=1, test_run="run-a", source_span="orig"),
            span("unnamed-replay", start_ms=2, test_run="run-a", source_span="orig"),
            span("orphan-replay", start_ms=3, test_run="run-gone", source_span="orig"),
            span("plain", start_ms=4),
            span("new-run-orig", start_ms=5),
        ],
        [trace("t-completed-replay", test_run="run-a", source_trace="t-orig")],
    )
    store.create_test_run(
        run(
            "run-a",
            created_ms=10,
            original_trace_id="t-orig",
            original_span_id="orig",
            replay_trace_id="t-named-replay",
        )
    )
    store.create_test_run(
        run("run-new", created_ms=60_000, original_trace_id="t-new-run-orig", key="other")
    )

    kept = store.prune(cutoff(1_000))
    kept_roots = remaining(store)
    with_runs = store.prune(cutoff(1_000), include_test_runs=True)

    assert kept == PruneResult(traces=2, spans=2, kept_for_test_runs=4, batches=1)
    assert kept_roots == ["named-replay", "new-run-orig", "orig", "unnamed-replay"]
    assert with_runs == PruneResult(
        traces=3, spans=3, trace_records=1, test_runs=1, kept_for_test_runs=1, batches=3
    )
    assert remaining(store) == ["new-run-orig"]
    assert store.get_test_run("run-a") is None
    assert [r.id for r in store.list_test_runs()] == ["run-new"]
    assert store.replay_trace_ids("run-a") == []


def test_include_test_runs_with_a_key_deletes_only_that_keys_runs(store: Store) -> None:
    """Runs of other keys, and runs created after the cutoff, stay with their items."""
    store.create_test_run(run("old-triage", created_ms=0, original_trace_id="x"))
    store.create_test_run(run("old-other", created_ms=0, key="other", original_trace_id="y"))
    store.create_test_run(run("new-triage", created_ms=60_000, original_trace_id="z"))

    result = store.prune(cutoff(1_000), key="triage", include_test_runs=True)

    assert result == PruneResult(test_runs=1, batches=1)
    assert sorted(r.id for r in store.list_test_runs()) == ["new-triage", "old-other"]
    other = store.get_test_run("old-other")
    assert other is not None and [i.original_trace_id for i in other.items] == ["y"]


def test_dropped_markers_and_completions_without_spans_go_when_old(store: Store) -> None:
    """Markers and span-less completion records older than the cutoff are deleted."""
    store.write([span("live", start_ms=20_000)], [trace("t-live")])
    store.write([], [trace("t-dropped", dropped=True), trace("t-alone")])

    result = store.prune(cutoff(5))
    late_span = store.write([span("late", trace="t-dropped")])

    # t-live's completion is as old as the others (its externalTrace), but its trace has spans.
    assert result == PruneResult(trace_records=2, batches=1)
    assert store.get_trace("t-live") == trace("t-live")
    assert store.get_trace("t-alone") is None
    assert late_span == WriteResult(spans_inserted=1)  # the drop is forgotten once pruned


def test_prune_rejects_bad_arguments(store: Store) -> None:
    """batch_size and max_batches must be positive integers."""
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        store.prune(BASE_US, batch_size=0)
    with pytest.raises(ValueError, match="max_batches must be None or at least 1"):
        store.prune(BASE_US, max_batches=0)
    with pytest.raises(ValueError, match="older_than_us must be an integer"):
        store.prune(1.5)  # type: ignore[arg-type]


def test_prune_while_another_thread_ingests_loses_nothing_newer(store: Store) -> None:
    """Small batches of pruning interleave with a writer; every new span is still stored."""
    store.write([span(f"old-{i}", start_ms=i) for i in range(300)])
    errors: list[BaseException] = []
    written: list[str] = []
    started = threading.Event()

    def ingest() -> None:
        try:
            for batch in range(30):
                records = [
                    span(f"new-{batch}-{i}", trace=f"t-new-{batch}", start_ms=60_000 + i)
                    for i in range(10)
                ]
                assert store.write(records).spans_inserted == 10
                written.extend(r["id"] for r in records)
                started.set()
        except BaseException as exc:
            errors.append(exc)
            started.set()

    writer = threading.Thread(target=ingest)
    writer.start()
    started.wait()
    result = store.prune(cutoff(1_000), batch_size=7)
    writer.join()

    assert errors == []
    assert result.traces == 300 and result.spans == 300 and result.finished
    assert result.batches == -(-300 // 7)
    assert sorted(written) == sorted(s["id"] for s in store.newest_roots("triage", 1_000))
    assert store.count_spans() == 300


def test_kept_traces_do_not_use_up_max_batches(store: Store) -> None:
    """With a batch full of kept traces first, max_batches=1 still reaches the deletable ones."""
    store.write([span(f"kept-{i}", start_ms=i) for i in range(4)] + [span("old", start_ms=10)])
    store.create_test_run(
        TestRun(
            id="run-1",
            key="triage",
            created_at=iso(60_000),
            items=tuple(TestRunItem(idx=i, original_trace_id=f"t-kept-{i}") for i in range(4)),
        )
    )

    first = store.prune(cutoff(1_000), batch_size=2, max_batches=1)
    second = store.prune(cutoff(1_000), batch_size=2, max_batches=1)

    assert first == PruneResult(
        traces=1, spans=1, kept_for_test_runs=4, batches=1, finished=False
    )  # the trace records were not looked at yet
    assert second == PruneResult(kept_for_test_runs=4)
    assert remaining(store) == [f"kept-{i}" for i in range(4)]
