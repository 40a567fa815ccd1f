"""Process faults in remote mode (RELIABILITY.md B1, B2, B4, B5, B6, B7, B8), in child processes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
from fake_server import API_KEY, FakeBitfabServer, closed_port
from remote_helpers import run_python

PRELUDE = """
import json, os, sys, time
import bitfab

def stats_dict(client):
    s = client.stats()
    return {"emitted": s.emitted, "exported": s.exported, "queued": s.queued,
            "in_flight": s.in_flight, "dropped": s.dropped}

def accounted(client):
    s = client.stats()
    return s.emitted == s.exported + sum(s.dropped.values()) + s.queued + s.in_flight

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


def _inputs(server: FakeBitfabServer) -> Counter[object]:
    counts: Counter[object] = Counter()
    for span_id in server.stored_ids():
        record = server.store.get_span(span_id)
        assert record is not None
        counts[record["rawSpan"]["span_data"]["input"][0]] += 1
    return counts


def test_exit_sends_every_queued_span(server: FakeBitfabServer, tmp_path: Path) -> None:
    """B1: 100 spans still queued when the script ends all reach the server at exit."""
    code = (
        PRELUDE
        + """
client = bitfab.Bitfab(url=sys.argv[1], api_key=sys.argv[2], schedule_delay=30)

@client.trace(key="b1")
def work(i):
    return str(i)

for i in range(100):
    work(i)
print(json.dumps(stats_dict(client)))
"""
    )
    child = run_python(code, server.url, API_KEY, cwd=tmp_path)

    assert (child.returncode, child.stderr) == (0, "")
    assert json.loads(child.stdout)["queued"] == 100
    assert _inputs(server) == Counter(range(100))


@pytest.mark.parametrize("down", ["refused", "blackhole"])
def test_exit_with_the_server_down_is_bounded_and_keeps_the_exit_code(
    server: FakeBitfabServer, tmp_path: Path, down: str
) -> None:
    """B2: with the server refusing or never answering, exit takes at most shutdown_timeout
    plus a little, keeps ``sys.exit(3)``, says once what was lost, and never shows the key."""
    if down == "blackhole":
        server.mode = "blackhole"
        url = server.url
    else:
        url = f"http://127.0.0.1:{closed_port()}"
    code = (
        PRELUDE
        + """
client = bitfab.Bitfab(url=sys.argv[1], api_key=sys.argv[2], shutdown_timeout=1.0,
                       schedule_delay=0.05)

@client.trace(key="b2")
def work(i):
    return i

results = [work(i) for i in range(20)]
time.sleep(0.5)  # the worker is now waiting on the server or in a backoff
print(json.dumps({"ok": results == list(range(20)) and accounted(client),
                  "exiting_at": time.time()}), flush=True)
sys.exit(3)
"""
    )
    child = run_python(code, url, API_KEY, cwd=tmp_path)
    ended = time.time()

    report = json.loads(child.stdout)
    assert child.returncode == 3
    assert report["ok"] is True
    assert ended - report["exiting_at"] < 1.0 + 0.75
    lines = child.stderr.strip().splitlines()
    summary = [line for line in lines if "not exported" in line or "dropped 20 spans" in line]
    assert len(summary) == 1, child.stderr
    assert API_KEY not in child.stderr


def test_a_forked_child_does_not_resend_the_parents_spans(
    server: FakeBitfabServer, tmp_path: Path
) -> None:
    """B5: spans queued before fork are sent once, by the parent; the child sends its own with
    a new HTTP client."""
    code = (
        PRELUDE
        + """
client = bitfab.Bitfab(url=sys.argv[1], api_key=sys.argv[2], schedule_delay=30)

@client.trace(key="b5")
def work(tag):
    return tag

work("warm")
assert client.flush(5)
sink = client._exporter.sink
parent_http = sink._client
for i in range(5):
    work(f"parent-{i}")

pid = os.fork()
if pid == 0:
    work("child")
    ok = client.flush(5) and sink._client is not None and sink._client is not parent_http
    ok = ok and client.stats().exported == 1 and client.stats().emitted == 1
    os._exit(0 if ok else 1)
child = reap(pid)
print(json.dumps({"child": child, "flushed": client.flush(5), "stats": stats_dict(client),
                  "accounted": accounted(client)}))
"""
    )
    child = run_python(code, server.url, API_KEY, cwd=tmp_path)

    assert (child.returncode, child.stderr) == (0, "")
    report = json.loads(child.stdout)
    assert (report["child"], report["flushed"]) == (0, True)
    assert report["stats"]["exported"] == 6
    assert report["accounted"] is True
    assert _inputs(server) == Counter(["warm", "child"] + [f"parent-{i}" for i in range(5)])


def test_fork_in_the_middle_of_a_request_does_not_deadlock_the_child(
    server: FakeBitfabServer, tmp_path: Path
) -> None:
    """B6: forking while the worker waits on a (slow) request: the child exports through a new
    client, and both processes' spans arrive once."""
    server.mode, server.delay = "slow", 0.6
    code = (
        PRELUDE
        + """
client = bitfab.Bitfab(url=sys.argv[1], api_key=sys.argv[2], schedule_delay=0.01)

@client.trace(key="b6")
def work(tag):
    return tag

work("parent")
time.sleep(0.2)  # the worker is now inside the POST, holding the pool's connection
assert client.stats().in_flight == 1
pid = os.fork()
if pid == 0:
    work("child")
    ok = client.flush(5) and client.stats().exported == 1 and accounted(client)
    os._exit(0 if ok else 1)
child = reap(pid)
print(json.dumps({"child": child, "flushed": client.flush(5) and accounted(client)}))
"""
    )
    child = run_python(code, server.url, API_KEY, cwd=tmp_path)

    assert (child.returncode, child.stderr) == (0, "")
    assert json.loads(child.stdout) == {"child": 0, "flushed": True}
    assert _inputs(server) == Counter(["parent", "child"])


def test_spawned_workers_record_to_the_server(server: FakeBitfabServer, tmp_path: Path) -> None:
    """B8: processes started with ``spawn`` build their own client from the environment."""
    code = (
        PRELUDE
        + """
import multiprocessing

def worker(n):
    client = bitfab.Bitfab()

    @client.trace(key="b8")
    def work(tag):
        return tag

    work(f"spawned-{n}")
    return client.flush(5)

if __name__ == "__main__":
    os.environ["BITFAB_URL"], os.environ["BITFAB_API_KEY"] = sys.argv[1], sys.argv[2]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        print(json.dumps(pool.map(worker, range(2))))
"""
    )
    script = tmp_path / "spawned.py"
    script.write_text(code)
    child = run_python(
        f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')",
        server.url,
        API_KEY,
        cwd=tmp_path,
    )

    assert (child.returncode, child.stderr) == (0, "")
    assert json.loads(child.stdout) == [True, True]
    assert _inputs(server) == Counter(["spawned-0", "spawned-1"])


def test_preloaded_workers_forked_after_import_all_export(
    server: FakeBitfabServer, tmp_path: Path
) -> None:
    """B7: gunicorn --preload style: set up and trace in the parent, fork 4 workers; every
    worker's spans reach the server and no flush waits on a queue nothing drains."""
    code = (
        PRELUDE
        + """
client = bitfab.Bitfab(url=sys.argv[1], api_key=sys.argv[2], schedule_delay=30)

@client.trace(key="b7")
def work(tag):
    return tag

work("master")
assert client.flush(5)
children = []
for n in range(4):
    pid = os.fork()
    if pid == 0:
        for i in range(3):
            work(f"worker{n}-{i}")
        os._exit(0 if client.flush(5) and accounted(client) else 1)
    children.append(pid)
print(json.dumps({"children": [reap(pid) for pid in children], "flushed": client.flush(5)}))
"""
    )
    child = run_python(code, server.url, API_KEY, cwd=tmp_path)

    assert (child.returncode, child.stderr) == (0, "")
    report = json.loads(child.stdout)
    assert report == {"children": [0, 0, 0, 0], "flushed": True}
    expected = ["master"] + [f"worker{n}-{i}" for n in range(4) for i in range(3)]
    assert _inputs(server) == Counter(expected)


def test_sigterm_with_a_handler_that_exits_sends_every_span(
    server: FakeBitfabServer, tmp_path: Path
) -> None:
    """B4: SIGTERM handled with sys.exit (gunicorn, Kubernetes) still runs the exit flush."""
    code = (
        PRELUDE
        + """
import signal
client = bitfab.Bitfab(url=sys.argv[1], api_key=sys.argv[2], schedule_delay=30)

@client.trace(key="b4")
def work(i):
    return i

signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
for i in range(50):
    work(i)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""
    )
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), server.url, API_KEY],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        process.terminate()
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (process.returncode, stderr) == (0, "")
    assert _inputs(server) == Counter(range(50))
