"""Retention: `bitfab prune`, the batch loop, and `bitfab serve --retention` as a real process."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run
from e2e_helpers import ServerProcess

from bitfab import Bitfab
from bitfab.retention import RetentionThread, parse_age, prune_in_batches
from bitfab.store import open_store

DAY_NS = 86_400 * 1_000_000_000


def _record(db: str, days_ago: float, calls: int, key: str = "p.job") -> Bitfab:
    """``calls`` traces of ``key`` (each with a nested span), started ``days_ago`` days ago."""
    ticks = itertools.count()
    start = time.time_ns() - int(days_ago * DAY_NS)
    client = Bitfab(db=db, clock=lambda: start + next(ticks) * 1_000_000)

    @client.trace(key=f"{key}.inner")
    def inner(n: int) -> int:
        return n * 2

    @client.trace(key=key)
    def job(n: int) -> dict[str, Any]:
        return {"n": inner(n)}

    for n in range(calls):
        job(n)
    assert client.flush()
    return client


@pytest.fixture
def store_path(tmp_path: Path) -> Iterator[str]:
    db = str(tmp_path / "prune.db")
    clients = [
        _record(db, 40, 30),  # old: to delete
        _record(db, 40, 5, key="p.other"),  # old, another key
        _record(db, 1, 7),  # recent: kept
    ]
    yield db
    for client in clients:
        client.shutdown()


def _roots(db: str) -> dict[str, int]:
    store = open_store(db)
    try:
        counts: dict[str, int] = {}
        for summary in store.traces(limit=1000):
            counts[summary.key or "-"] = counts.get(summary.key or "-", 0) + 1
        return counts
    finally:
        store.close()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("2w", 1_209_600), ("1.5s", 1.5)],
)
def test_ages(text: str, seconds: float) -> None:
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["30", "d", "-1d", "0d", "1y", "30 days", ""])
def test_bad_ages(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected an age such as 30d|more than zero"):
        parse_age(text)


def test_prune_deletes_old_traces_in_batches_and_keeps_recent_ones(
    store_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _roots(store_path) == {"p.job": 37, "p.other": 5}
    status, out, err = run(
        capsys, "prune", "--older-than", "30d", "--batch-size", "8", "--db", store_path
    )
    assert status == 0, err
    assert out == "deleted 35 trace(s) with 70 span(s) in 5 batch(es)\n"
    assert err.startswith("pruning traces started before ")
    assert _roots(store_path) == {"p.job": 7}
    # once more: nothing left to do
    status, out, _ = run(capsys, "prune", "--older-than", "30d", "--db", store_path)
    assert (status, out) == (0, "deleted 0 trace(s) with 0 span(s) in 0 batch(es)\n")


def test_prune_of_one_key(store_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(
        capsys, "prune", "--older-than", "30d", "--key", "p.other", "--db", store_path
    )
    assert status == 0 and out.startswith("deleted 5 trace(s) with 10 span(s)")
    assert _roots(store_path) == {"p.job": 37}


def test_test_runs_keep_their_traces_unless_included(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "runs.db")
    client = _record(db, 40, 4)
    try:
        job = client.registry.get("p.job").traced
        result = job.replay(limit=2)  # references 2 of the 4 old traces (and 2 replay traces)
        assert client.flush() and result.test_run_id
        status, out, err = run(capsys, "prune", "--older-than", "30d", "--db", db)
        assert status == 0
        assert out.startswith("deleted 2 trace(s) with 4 span(s)")
        assert "kept 4 old trace(s) that test runs reference" in err
        assert "--include-test-runs" in err
        store = open_store(db)
        try:
            assert store.get_test_run(result.test_run_id) is not None
        finally:
            store.close()
        # the run was created now, so an age of 30d keeps it; 0.001s is older than everything
        status, out, err = run(
            capsys, "prune", "--older-than", "0.001s", "--include-test-runs", "--db", db
        )
        assert status == 0 and "1 test run(s)" in out and "kept" not in err
        store = open_store(db)
        try:
            assert store.get_test_run(result.test_run_id) is None
            assert store.count_spans() == 0
        finally:
            store.close()
    finally:
        client.shutdown()


def test_bad_arguments_are_argparse_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(capsys, "prune", "--older-than", "soon")
    assert exit_info.value.code == 2
    assert "expected an age such as 30d" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(capsys, "prune")
    assert "--older-than" in capsys.readouterr().err


def test_prune_of_a_missing_store_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "nothing" / "here.db"
    status, out, err = run(capsys, "prune", "--older-than", "1d", "--db", str(db))
    assert (status, out, err) == (
        1,
        "",
        f"bitfab: no store at {db}; pass --db PATH (or set BITFAB_DB)\n",
    )
    assert not db.parent.exists()


def test_the_batch_loop_stops_when_asked(store_path: str) -> None:
    store = open_store(store_path)
    try:
        seen: list[int] = []
        cutoff = time.time_ns() // 1000 - 30 * 86_400_000_000
        totals = prune_in_batches(
            store,
            cutoff,
            batch_size=5,
            pause_s=0,
            on_batch=lambda t: seen.append(t.traces),
            should_stop=lambda: len(seen) >= 2,
        )
        assert seen == [5, 10] and totals.traces == 10 and not totals.finished
    finally:
        store.close()
    assert sum(_roots(store_path).values()) == 42 - 10  # oldest first, whatever the key


def test_retention_thread_prunes_by_its_clock(store_path: str) -> None:
    store = open_store(store_path)
    try:
        now = [time.time()]
        retention = RetentionThread(store, 30 * 86400, every_s=3600, clock=lambda: now[0])
        assert retention.run_once().traces == 35
        now[0] += 20 * 86400  # 20 days later the recent calls are 21 days old: still kept
        assert retention.run_once().traces == 0
        now[0] += 10 * 86400
        assert retention.run_once().traces == 7
        assert retention.rounds == 3
    finally:
        store.close()


def test_serve_with_retention_prunes_in_the_background(store_path: str) -> None:
    server = ServerProcess(
        Path(store_path), "--no-auth", "--retention", "30d", "--log-level", "info"
    )
    try:
        deadline = time.monotonic() + 20
        while _roots(store_path) != {"p.job": 7}:
            assert time.monotonic() < deadline, server.log
            time.sleep(0.05)
    finally:
        assert server.stop() == 0
    assert "retention: deleted 35 trace(s), 70 span(s) older than 30d" in server.log
