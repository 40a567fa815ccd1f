"""Faults and load on the SQLite store: locks, full disks, many threads, SIGKILL, fork, close."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

from bitfab.exceptions import StoreError
from bitfab.store import SQLiteStore, StoreBusyError, WriteResult

from .factories import span
from .processes import run_child, start_child


def test_a_write_blocked_by_an_exclusive_lock_raises_busy_after_the_timeout(
    tmp_path: Path,
) -> None:
    """B14: another connection's EXCLUSIVE transaction gives StoreBusyError in ~busy_timeout."""
    path = tmp_path / "bitfab.db"
    with SQLiteStore(path, busy_timeout=0.2) as store:
        store.write([span("before")])
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN EXCLUSIVE")
            started = time.monotonic()
            with pytest.raises(StoreBusyError) as info:
                store.write([span("blocked")])
            waited = time.monotonic() - started
            readable_meanwhile = store.count_spans()
            other.execute("ROLLBACK")
        after = store.write([span("after")])

    assert 0.15 <= waited < 2.0
    assert str(info.value).startswith(
        f"writing to {path}: the database stayed locked by another connection for 0.2s"
    )
    assert info.value.retry_after == 1.0
    assert readable_meanwhile == 1
    assert after == WriteResult(spans_inserted=1)


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_full_disk_raises_store_full_error_and_keeps_acknowledged_writes(
    tmp_path: Path,
) -> None:
    """B14: a file-size limit (a full disk in miniature) gives StoreFullError, data intact."""
    path = tmp_path / "bitfab.db"
    out = run_child(
        """
import resource, signal
from bitfab.store import SQLiteStore, StoreFullError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
store = SQLiteStore(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))
acked = 0
try:
    while True:
        store.write([record(f"s{acked}", f"t{acked}", "x" * 5_000)])
        acked += 1
except StoreFullError as exc:
    print(type(exc).__name__, str(exc).startswith("writing to " + sys.argv[1]))
print(acked, store.count_spans())
store.close()
""",
        str(path),
    )
    full, counts = out.splitlines()
    acked, stored = map(int, counts.split())

    assert full == "StoreFullError True"
    assert acked == stored > 0
    assert query_integrity(path) == "ok"


def query_integrity(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (result,) = conn.execute("PRAGMA integrity_check").fetchone()
    return str(result)


def test_two_processes_writing_at_once_both_land(tmp_path: Path) -> None:
    """Writers in two processes take turns through the file lock; every batch is stored."""
    path = tmp_path / "bitfab.db"
    SQLiteStore(path).close()
    snippet = """
from bitfab.store import SQLiteStore, StoreBusyError
with SQLiteStore(sys.argv[1]) as store:
    for batch in range(40):
        name = f"{sys.argv[2]}-{batch}"
        records = [record(f"{name}-{i}", f"t-{name}") for i in range(50)]
        while True:
            try:
                store.write(records)
                break
            except StoreBusyError:
                time.sleep(0.01)
print("ok")
"""
    children = [start_child(snippet, str(path), name) for name in ("a", "b")]
    results = []
    for child in children:
        with child:
            results.append((child.communicate(timeout=60), child.returncode))

    assert results == [(("ok\n", ""), 0)] * 2
    with SQLiteStore(path) as store:
        assert store.count_spans() == 2 * 40 * 50


def test_sigkill_in_the_middle_of_writing_keeps_every_acknowledged_batch(tmp_path: Path) -> None:
    """B12: after SIGKILLs mid-loop the file is intact and every acknowledged batch is whole."""
    path = tmp_path / "bitfab.db"
    snippet = """
from bitfab.store import SQLiteStore
store = SQLiteStore(sys.argv[1])
batch = 0
while True:
    store.write([record(f"{sys.argv[2]}-{batch}-{i}", f"t-{sys.argv[2]}-{batch}", "x" * 200)
                 for i in range(50)])
    print(batch, flush=True)
    batch += 1
"""
    acknowledged: list[str] = []
    for round_, acks_before_kill in enumerate((3, 11, 25)):
        with start_child(snippet, str(path), f"r{round_}") as child:
            assert child.stdout is not None
            seen = 0
            while seen < acks_before_kill:
                line = child.stdout.readline()
                assert line, child.stderr.read() if child.stderr else "child ended"
                seen += 1
            child.send_signal(signal.SIGKILL)
            rest, _ = child.communicate(timeout=30)
            assert child.returncode == -signal.SIGKILL
        acknowledged += [f"r{round_}-{batch}" for batch in range(seen + len(rest.split()))]

    with contextlib.closing(sqlite3.connect(path)) as conn:
        (integrity,) = conn.execute("PRAGMA integrity_check").fetchone()
        per_batch = dict(
            conn.execute(
                "SELECT substr(trace_id, 3), COUNT(*) FROM spans GROUP BY trace_id"
            ).fetchall()
        )
    with SQLiteStore(path) as store:
        reopened_ok = store.write([span("after-crash")]) == WriteResult(spans_inserted=1)

    assert integrity == "ok"
    assert reopened_ok
    assert [b for b in acknowledged if per_batch.get(b) != 50] == []
    assert set(per_batch.values()) == {50}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_opens_its_own_connections(tmp_path: Path) -> None:
    """After fork the child writes through the inherited store object; the parent carries on."""
    store = SQLiteStore(tmp_path / "bitfab.db")
    store.write([span("parent-before")])

    with warnings.catch_warnings():
        # Python 3.12+ warns when other tests left threads running; this child only uses
        # the store and leaves through os._exit.
        warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            result = store.write([span("from-child")])
            code = 0 if result == WriteResult(spans_inserted=1) else 2
            store.close()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    store.write([span("parent-after")])
    ids = sorted(record["id"] for record in store.newest_roots("triage", 10))
    store.close()

    assert os.waitstatus_to_exitcode(status) == 0
    assert ids == ["from-child", "parent-after", "parent-before"]


def test_close_releases_every_connection_and_later_calls_fail(tmp_path: Path) -> None:
    """After close (connections used from several threads) the WAL is gone; calls raise."""
    path = tmp_path / "bitfab.db"
    store = SQLiteStore(path)
    barrier = threading.Barrier(6)

    def use() -> None:
        barrier.wait()
        store.write([span(f"s-{threading.get_ident()}")])
        store.count_spans()

    threads = [threading.Thread(target=use) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    store.close()
    store.close()

    assert not os.path.exists(f"{path}-wal")
    with pytest.raises(StoreError, match=f"the store at {path} is closed"):
        store.count_spans()
    with pytest.raises(StoreError, match="is closed"):
        store.write([span("late")])
