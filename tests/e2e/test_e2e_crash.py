"""RELIABILITY.md B12: kill -9 of the server mid-ingest, at each crash point of the ingest path.

The server runs with the test hook ``BITFAB_TEST_CRASH_AT`` (``bitfab/server/ingest.py``,
``CrashPoint``) and kills itself with SIGKILL inside its second ingest request. It is then
restarted on the same port and store, without the hook, while an SDK client
(``Bitfab(url=..., api_key=...)`` in this process) is still trying to deliver that batch. After
the client's retries: every span the client counted as exported is stored, exactly once, and
``PRAGMA integrity_check`` is ok.

``SQLiteStore`` writes a batch in one transaction, so the hook's ``mid_batch`` is the same point
as ``before_commit``. One more case kills the server truly inside that transaction, after some
of the batch's rows were inserted: a launcher script (test code only) adds a SQLite trace
callback that sends SIGKILL on the Nth ``INSERT INTO spans``.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import pytest
from e2e_helpers import ServerProcess, create_key, integrity, span_ids

from bitfab import Bitfab
from bitfab.server.ingest import CrashPoint

BATCH = 30

# `bitfab serve` with a SQLite trace callback on every store connection: SIGKILL when the
# (BATCH + BATCH // 2)th span row is being inserted, i.e. halfway through the second batch's
# transaction (the first batch inserts BATCH rows).
INSIDE_TRANSACTION_LAUNCHER = f"""
import os, signal, sys, threading
from bitfab.cli import main
from bitfab.store import sqlite as sqlite_store

inserts = [0]
lock = threading.Lock()
original_connect = sqlite_store.SQLiteStore._connect

def connect(self):
    conn = original_connect(self)

    def on_statement(statement):
        if statement.lstrip().upper().startswith("INSERT INTO SPANS"):
            with lock:
                inserts[0] += 1
                if inserts[0] == {BATCH + BATCH // 2} and conn.in_transaction:
                    os.kill(os.getpid(), signal.SIGKILL)

    conn.set_trace_callback(on_statement)
    return conn

sqlite_store.SQLiteStore._connect = connect
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    ("point", "committed_before_death"),
    [
        ("before_commit", False),
        ("mid_batch", False),  # one transaction per batch: the same as before_commit
        ("after_commit_before_response", True),
        ("inside_the_transaction", False),  # the launcher above, not the hook
    ],
)
def test_kill_9_at_a_crash_point_loses_and_duplicates_nothing(
    tmp_path: Path, point: str, committed_before_death: bool
) -> None:
    db = tmp_path / "crash.db"
    key = create_key(db)
    if point == "inside_the_transaction":
        launcher = tmp_path / "serve_and_die_inside_the_transaction.py"
        launcher.write_text(INSIDE_TRANSACTION_LAUNCHER)
        server = ServerProcess(db, launcher=launcher)
    else:
        server = ServerProcess(
            db, env={"BITFAB_TEST_CRASH_AT": point, "BITFAB_TEST_CRASH_AFTER": "2"}
        )
        assert f"TEST HOOK armed: this server kills itself (SIGKILL) at {point}" in server.log
    port = server.port
    # The worker exports only when flushed (schedule_delay far away, batches under the size
    # limit): one flush = one ingest request, so the second flush is the one that dies.
    client = Bitfab(url=server.url, api_key=key, schedule_delay=60.0, export_timeout=30.0)

    @client.trace(key="crash")
    def work(n: int) -> str:
        span_id = client.current_span().id
        assert span_id is not None
        return span_id

    restarted: ServerProcess | None = None
    try:
        first = [work(n) for n in range(BATCH)]
        assert client.flush(timeout=10)
        assert sorted(span_ids(db)) == sorted(first)  # acknowledged, hence committed

        second = [work(n) for n in range(BATCH, 2 * BATCH)]
        flushed: list[bool] = []
        flushing = threading.Thread(target=lambda: flushed.append(client.flush(timeout=40)))
        flushing.start()
        status = server.wait_exit(15)
        assert status == -signal.SIGKILL, server.log

        # What the dead server left: the first batch, and the second only if it was committed.
        assert integrity(db) == [("ok",)]
        stored_at_death = set(span_ids(db))
        assert set(first) <= stored_at_death
        if committed_before_death:
            assert set(second) <= stored_at_death
        else:
            assert not set(second) & stored_at_death
        assert flushing.is_alive(), "the client gave up before the server came back"

        restarted = ServerProcess(db, port=port)  # same port, same store, no hook
        assert "TEST HOOK" not in restarted.log
        flushing.join(45)
        assert flushed == [True]
        stats = client.stats()
        assert stats.dropped == {}
        assert stats.exported == stats.emitted == 2 * BATCH
        acked = set(first + second)  # everything emitted was counted as exported
    finally:
        client.shutdown(timeout=5)
        if restarted is not None:
            assert restarted.stop() == 0
        server.stop(signal.SIGKILL)  # dead by now, or a failed test: reap it, close its pipe

    stored = span_ids(db)
    assert acked <= set(stored)
    assert len(stored) == len(set(stored)) == 2 * BATCH  # exactly once
    assert integrity(db) == [("ok",)]


def test_the_crash_hook_is_inert_unless_asked_and_counts_requests(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Unset: no hook. Garbage: a warning, no hook. Set: it fires on the Nth request only."""
    assert CrashPoint.from_environ({}) is None
    assert CrashPoint.from_environ({"BITFAB_TEST_CRASH_AT": "  "}) is None
    with caplog.at_level(logging.WARNING, logger="bitfab.server"):
        assert CrashPoint.from_environ({"BITFAB_TEST_CRASH_AT": "sometimes"}) is None
        assert (
            CrashPoint.from_environ(
                {"BITFAB_TEST_CRASH_AT": "before_commit", "BITFAB_TEST_CRASH_AFTER": "0"}
            )
            is None
        )
        assert (
            CrashPoint.from_environ(
                {"BITFAB_TEST_CRASH_AT": "before_commit", "BITFAB_TEST_CRASH_AFTER": "x"}
            )
            is None
        )
    assert sum("ignored (a test hook)" in r.getMessage() for r in caplog.records) == 3
    hook = CrashPoint.from_environ(
        {"BITFAB_TEST_CRASH_AT": "mid_batch", "BITFAB_TEST_CRASH_AFTER": "3"}
    )
    assert hook is not None
    assert [hook.point_of_this_request() for _ in range(5)] == [
        None,
        None,
        "mid_batch",
        None,
        None,
    ]
