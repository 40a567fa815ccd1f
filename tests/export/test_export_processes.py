"""Process faults (RELIABILITY.md B1, B2, B4-B10): exit, signals, fork and spawn, in children."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from export_helpers import (
    QUIET_FORK,
    count_by_first_input,
    last_json_line,
    run_python,
    stored_spans,
)

from bitfab.store import open_store

# Every child script starts with these: its client's counters as JSON, and the invariant.
PRELUDE = """
import atexit, json, os, sys, time
import bitfab

def stats_dict(client):
    s = client.stats()
    return {"emitted": s.emitted, "exported": s.exported, "queued": s.queued,
            "in_flight": s.in_flight, "dropped": s.dropped}

def accounted(client):
    s = client.stats()
    return s.emitted == s.exported + sum(s.dropped.values()) + s.queued + s.in_flight
"""

# Waits for a forked child with a deadline, so a deadlocked child fails the test instead of hanging.
REAP = """
def reap(pid, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return "hung"
        time.sleep(0.01)
"""


def child_code(body: str) -> str:
    return PRELUDE + REAP + textwrap.dedent(body)


def test_normal_exit_stores_every_queued_span(tmp_path: Path) -> None:
    """B1: 100 spans still queued when the script ends are all stored by the atexit flush."""
    db = tmp_path / "b.db"
    code = child_code(
        """
        client = bitfab.Bitfab(db=sys.argv[1], schedule_delay=30)

        @client.trace(key="b1")
        def double(i):
            return i * 2

        results = [double(i) for i in range(100)]
        print(json.dumps({"ok": results == [i * 2 for i in range(100)],
                          "accounted": accounted(client), "stats": stats_dict(client)}))
        """
    )
    child = run_python(code, str(db), cwd=tmp_path)

    assert (child.returncode, child.stderr) == (0, "")
    assert last_json_line(child.stdout) == {
        "ok": True,
        "accounted": True,
        "stats": {"emitted": 100, "exported": 0, "queued": 100, "in_flight": 0, "dropped": {}},
    }
    assert count_by_first_input(db) == Counter(range(100))


def test_exit_with_a_stuck_sink_is_bounded_and_keeps_the_exit_code(tmp_path: Path) -> None:
    """B2: sys.exit(3) with a sink that never returns exits with 3 within shutdown_timeout + 2 s."""
    code = child_code(
        """
        import threading
        from bitfab.export.sinks import ExportResult

        class StuckSink:
            def export(self, spans, traces):
                threading.Event().wait()
            def shutdown(self):
                pass
            def after_fork(self):
                pass

        client = bitfab.Bitfab(sink=StuckSink(), shutdown_timeout=0.5)
        atexit.register(lambda: print(json.dumps(stats_dict(client)), accounted(client)))

        @client.trace(key="b2")
        def double(i):
            return i * 2

        print(json.dumps([double(i) for i in range(10)]), flush=True)
        sys.exit(3)
        """
    )
    started = time.monotonic()
    child = run_python(code, cwd=tmp_path)
    elapsed = time.monotonic() - started

    assert child.returncode == 3
    assert child.stdout.splitlines() == [
        json.dumps([i * 2 for i in range(10)]),
        json.dumps({"emitted": 10, "exported": 0, "queued": 0, "in_flight": 10, "dropped": {}})
        + " True",
    ]
    assert child.stderr == "bitfab: exited with 10 spans not exported (shutdown timeout)\n"
    assert elapsed < 0.5 + 2.0


def test_exit_with_a_locked_store_is_bounded(tmp_path: Path) -> None:
    """B2: with the SQLite file write-locked by another process, exit still ends in time."""
    db = tmp_path / "b.db"
    open_store(db).close()
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    code = child_code(
        """
        client = bitfab.Bitfab(db=sys.argv[1], shutdown_timeout=0.5)
        atexit.register(lambda: print(json.dumps({"accounted": accounted(client)})))

        @client.trace(key="b2")
        def double(i):
            return i * 2

        print(json.dumps([double(i) for i in range(10)]), flush=True)
        sys.exit(3)
        """
    )
    try:
        started = time.monotonic()
        child = run_python(code, str(db), cwd=tmp_path)
        elapsed = time.monotonic() - started
    finally:
        locker.execute("ROLLBACK")
        locker.close()

    assert child.returncode == 3
    assert child.stdout.splitlines() == [
        json.dumps([i * 2 for i in range(10)]),
        json.dumps({"accounted": True}),
    ]
    assert child.stderr == "bitfab: exited with 10 spans not exported (shutdown timeout)\n"
    assert elapsed < 0.5 + 2.0, f"exit took {elapsed:.1f}s with shutdown_timeout=0.5"


def test_sigterm_handler_calling_sys_exit_stores_everything(tmp_path: Path) -> None:
    """B4: SIGTERM handled by sys.exit (gunicorn, k8s) runs the atexit flush like a normal exit."""
    db = tmp_path / "b.db"
    code = child_code(
        """
        import signal
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
        client = bitfab.Bitfab(db=sys.argv[1], schedule_delay=30)

        @client.trace(key="b4")
        def double(i):
            return i * 2

        results = [double(i) for i in range(100)]
        print(json.dumps({"ok": results == [i * 2 for i in range(100)],
                          "queued": client.stats().queued, "accounted": accounted(client)}),
              flush=True)
        while True:
            time.sleep(0.05)
        """
    )
    with subprocess.Popen(
        [sys.executable, *QUIET_FORK, "-c", code, str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    ) as child:
        try:
            assert child.stdout is not None
            ready = child.stdout.readline()
            child.send_signal(signal.SIGTERM)
            _, err = child.communicate(timeout=10)
        finally:
            if child.poll() is None:
                child.kill()

    assert last_json_line(ready) == {"ok": True, "queued": 100, "accounted": True}
    assert (child.returncode, err) == (0, "")
    assert count_by_first_input(db) == Counter(range(100))


def test_fork_with_queued_spans_does_not_resend_them(tmp_path: Path) -> None:
    """B5: the child exports only its own spans, the parent all of its own, one row per span id."""
    db = tmp_path / "b.db"
    code = child_code(
        """
        client = bitfab.Bitfab(db=sys.argv[1], schedule_delay=30)

        @client.trace(key="b5")
        def tagged(pid, i):
            return i

        parent = os.getpid()
        results = [tagged(parent, i) for i in range(10)]
        client.flush(5)
        results += [tagged(parent, i) for i in range(10, 50)]
        before = stats_dict(client)
        pid = os.fork()
        if pid == 0:
            inherited = stats_dict(client)
            ok = [tagged(os.getpid(), i) for i in range(30)] == list(range(30))
            flushed = client.flush(5)
            print(json.dumps({"child": {"inherited": inherited, "ok": ok, "flushed": flushed,
                                        "stats": stats_dict(client)}}), flush=True)
            os._exit(0)
        child_exit = reap(pid)
        results += [tagged(parent, i) for i in range(50, 70)]
        flushed = client.flush(5)
        print(json.dumps({"parent": {"before": before, "ok": results == list(range(70)),
                                     "flushed": flushed, "stats": stats_dict(client),
                                     "child_exit": child_exit, "pids": [parent, pid]}}))
        """
    )
    child = run_python(code, str(db), cwd=tmp_path)

    assert (child.returncode, child.stderr) == (0, "")
    child_report, parent_report = (last_json_line(line) for line in child.stdout.splitlines())
    parent_pid, child_pid = parent_report["parent"].pop("pids")
    assert child_report == {
        "child": {
            "inherited": {"emitted": 0, "exported": 0, "queued": 0, "in_flight": 0, "dropped": {}},
            "ok": True,
            "flushed": True,
            "stats": {"emitted": 30, "exported": 30, "queued": 0, "in_flight": 0, "dropped": {}},
        }
    }
    assert parent_report == {
        "parent": {
            "before": {"emitted": 50, "exported": 10, "queued": 40, "in_flight": 0, "dropped": {}},
            "ok": True,
            "flushed": True,
            "stats": {"emitted": 70, "exported": 70, "queued": 0, "in_flight": 0, "dropped": {}},
            "child_exit": 0,
        }
    }
    spans = stored_spans(db)
    assert Counter(first for _, _, first in spans) == {parent_pid: 70, child_pid: 30}
    assert len({span_id for span_id, _, _ in spans}) == 100


@pytest.mark.parametrize("held", ["exporter._lock", "exporter._cond", "sink._lock"])
def test_fork_while_a_lock_is_held_does_not_deadlock_the_child(tmp_path: Path, held: str) -> None:
    """B6: a child forked while the parent holds an exporter or sink lock records and flushes."""
    db = tmp_path / "b.db"
    code = child_code(
        """
        client = bitfab.Bitfab(db=sys.argv[1], schedule_delay=30)

        @client.trace(key="b6")
        def tagged(pid, i):
            return i

        tagged(os.getpid(), 0)
        client.flush(5)
        exporter = client._exporter
        lock = {"exporter._lock": exporter._lock, "exporter._cond": exporter._cond,
                "sink._lock": exporter.sink._lock}[sys.argv[2]]
        lock.acquire()
        pid = os.fork()
        if pid == 0:
            ok = [tagged(os.getpid(), i) for i in range(1, 11)] == list(range(1, 11))
            flushed = client.flush(5)
            os._exit(0 if ok and flushed and accounted(client) else 1)
        lock.release()
        print(json.dumps({"child_exit": reap(pid), "pids": [os.getpid(), pid],
                          "flushed": client.flush(5)}))
        """
    )
    child = run_python(code, str(db), held, cwd=tmp_path)

    assert (child.returncode, child.stderr) == (0, "")
    report = last_json_line(child.stdout)
    parent_pid, child_pid = report.pop("pids")
    assert report == {"child_exit": 0, "flushed": True}
    assert count_by_first_input(db) == {parent_pid: 1, child_pid: 10}


def test_preload_then_fork_four_workers_exports_every_worker(tmp_path: Path) -> None:
    """B7: import, record once, then fork four workers: each worker's spans are stored."""
    db = tmp_path / "b.db"
    code = child_code(
        """
        client = bitfab.Bitfab(db=sys.argv[1])

        @client.trace(key="b7")
        def tagged(pid, i):
            return i

        tagged(os.getpid(), 0)
        client.flush(5)
        pids = []
        for _ in range(4):
            pid = os.fork()
            if pid == 0:
                ok = [tagged(os.getpid(), i) for i in range(25)] == list(range(25))
                started = time.monotonic()
                flushed = client.flush(5)
                quick = time.monotonic() - started < 4
                os._exit(0 if ok and flushed and quick and accounted(client) else 1)
            pids.append(pid)
        print(json.dumps({"parent": os.getpid(), "children": pids,
                          "exits": [reap(pid) for pid in pids]}))
        """
    )
    child = run_python(code, str(db), cwd=tmp_path, timeout=30)

    assert (child.returncode, child.stderr) == (0, "")
    report = last_json_line(child.stdout)
    assert report["exits"] == [0, 0, 0, 0]
    expected = {report["parent"]: 1, **dict.fromkeys(report["children"], 25)}
    assert count_by_first_input(db) == expected


SPAWN_SCRIPT = """
import json, multiprocessing, os, sys
import bitfab

client = bitfab.Bitfab(db=os.environ["B8_DB"])


@client.trace(key="b8")
def tagged(task, i):
    return i


def work(task):
    ok = [tagged(task, i) for i in range(25)] == list(range(25))
    flushed = client.flush(10)
    s = client.stats()
    accounted = s.emitted == s.exported + sum(s.dropped.values()) + s.queued + s.in_flight
    return [task, ok, flushed, accounted, s.emitted, s.exported, s.dropped]


if __name__ == "__main__":
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        print(json.dumps(pool.map(work, range(4))))
"""


def test_spawn_workers_record_and_flush(tmp_path: Path) -> None:
    """B8: spawn-started workers build their own client from the module and store their spans."""
    db = tmp_path / "b.db"
    script = tmp_path / "spawn_app.py"
    script.write_text(SPAWN_SCRIPT)
    child = subprocess.run(
        [sys.executable, *QUIET_FORK, str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=30,
        env={**os.environ, "B8_DB": str(db)},
    )

    assert (child.returncode, child.stderr) == (0, "")
    reports = last_json_line(child.stdout)
    assert [report[:4] for report in reports] == [[task, True, True, True] for task in range(4)]
    for *_, emitted, exported, dropped in reports:
        assert (emitted, dropped) == (exported, {})
    assert count_by_first_input(db) == dict.fromkeys(range(4), 25)


def test_fork_after_the_client_was_collected_prints_nothing(tmp_path: Path) -> None:
    """B9: exporters and clients collected before fork leave nothing on the child's stderr."""
    db = tmp_path / "b.db"
    code = child_code(
        """
        import gc, weakref
        from bitfab.export.exporter import BatchExporter
        from bitfab.testing import MemorySink

        used = bitfab.Bitfab(sink=MemorySink())
        used.trace(key="b9.used")(lambda i: i)(1)
        used.flush(5)
        lone = BatchExporter(MemorySink())
        refs = [weakref.ref(used), weakref.ref(lone)]
        del used, lone
        gc.collect()
        collected = [ref() is None for ref in refs]
        pid = os.fork()
        if pid == 0:
            client = bitfab.Bitfab(db=sys.argv[1])
            ok = client.trace(key="b9")(lambda pid, i: i)(os.getpid(), 7) == 7
            os._exit(0 if ok and client.flush(5) and accounted(client) else 1)
        print(json.dumps({"collected": collected, "child_exit": reap(pid), "child": pid}))
        """
    )
    child = run_python(code, str(db), cwd=tmp_path)

    assert (child.returncode, child.stderr) == (0, "")
    report = last_json_line(child.stdout)
    assert report == {"collected": [True, True], "child_exit": 0, "child": report["child"]}
    assert count_by_first_input(db) == {report["child"]: 1}


def test_traced_call_in_an_atexit_hook_after_shutdown_is_dropped_quietly(tmp_path: Path) -> None:
    """B10: a traced call in an atexit hook run after bitfab's shutdown counts as `shutdown`."""
    db = tmp_path / "b.db"
    code = child_code(
        """
        import atexit
        client = bitfab.Bitfab(db=sys.argv[1])

        @client.trace(key="b10")
        def double(i):
            return i * 2

        def late():
            # atexit runs hooks last-registered first: this one runs after bitfab's shutdown.
            result = double(21)
            print(json.dumps({"result": result, "stats": stats_dict(client),
                              "accounted": accounted(client)}), flush=True)

        atexit.register(late)
        print(json.dumps([double(i) for i in range(5)]), flush=True)
        """
    )
    child = run_python(code, str(db), cwd=tmp_path)

    assert (child.returncode, child.stderr) == (0, "")
    assert last_json_line(child.stdout) == {
        "result": 42,
        "stats": {
            "emitted": 6,
            "exported": 5,
            "queued": 0,
            "in_flight": 0,
            "dropped": {"shutdown": 1},
        },
        "accounted": True,
    }
    assert count_by_first_input(db) == Counter(range(5))


def test_traced_call_in_an_atexit_hook_before_shutdown_is_stored(tmp_path: Path) -> None:
    """B10: a traced call in an atexit hook registered after bitfab's runs first and is stored."""
    db = tmp_path / "b.db"
    code = child_code(
        """
        import atexit
        client = bitfab.Bitfab(db=sys.argv[1])

        @client.trace(key="b10")
        def double(i):
            return i * 2

        print(json.dumps([double(i) for i in range(5)]), flush=True)
        atexit.register(lambda: print(json.dumps(double(21)), flush=True))
        """
    )
    child = run_python(code, str(db), cwd=tmp_path)

    assert (child.returncode, child.stderr) == (0, "")
    assert child.stdout.splitlines() == ["[0, 2, 4, 6, 8]", "42"]
    assert count_by_first_input(db) == Counter([*range(5), 21])
