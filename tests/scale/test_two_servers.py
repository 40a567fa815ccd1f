"""Two real `bitfab serve` processes on one PostgreSQL database (issue: scale out).

Each test starts both servers on a fresh schema. Nothing is shared between them but the
database, so whatever one server was told, the other must answer; whatever both were told at
once must be stored exactly once.

- ingest: several clients at once, the spans of one trace split between the servers (and
  some sent to both, as a retry after a lost answer would), SDK clients recording into each;
- replay: ``replay/start``, the span fetches and ``replay/complete`` of one run alternate
  between the servers, through a round-robin transport (a load balancer in miniature);
- RELIABILITY.md B12 on PostgreSQL: one server is killed with SIGKILL inside an ingest request
  while the other keeps taking a second client's spans.
"""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from e2e_helpers import ServerProcess, child_env, create_key

from bitfab import Bitfab
from bitfab.playback.engine import run_replay
from bitfab.playback.remote import RemoteBackend

pytestmark = pytest.mark.timeout(180)

SDK_CLIENT = """
import sys
from bitfab import Bitfab

url, key, tag, calls = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
client = Bitfab(url=url, api_key=key, max_batch_size=40, schedule_delay=0.05)

@client.trace(key="scale.inner")
def inner(n):
    return n + 1

@client.trace(key="scale.outer")
def outer(tag, n):
    return {"tag": tag, "n": inner(n)}

for n in range(calls):
    outer(tag, n)
assert client.flush(timeout=60)
stats = client.stats()
assert stats.dropped_total == 0, stats
print(stats.exported)
"""


@pytest.fixture
def servers(pg_url: str) -> Iterator[tuple[ServerProcess, ServerProcess, str]]:
    """Two servers on one fresh schema (they migrate it at once), and a key of scope all."""
    key = create_key(pg_url)  # type: ignore[arg-type]
    started: list[ServerProcess] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            started.append(ServerProcess(pg_url))  # type: ignore[arg-type]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert not errors, errors
        yield started[0], started[1], key
    finally:
        for server in started:
            server.stop()


def _rows(pg_url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        return conn.execute(sql).fetchall()  # type: ignore[arg-type]


def _span(span_id: str, trace_id: str, parent: str | None, key: str, n: int) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "id": span_id,
        "trace_id": trace_id,
        "started_at": f"2026-11-27T10:00:{n % 60:02d}.{n:06d}Z",
        "ended_at": f"2026-11-27T10:00:{n % 60:02d}.{n + 500:06d}Z",
        "span_data": {"name": key, "type": "function", "input": [n], "output": {"n": n}},
    }
    if parent is not None:
        raw["parent_id"] = parent
    return {"id": span_id, "traceId": trace_id, "traceFunctionKey": key, "rawSpan": raw}


def _trace(trace_id: str, spans: int) -> dict[str, Any]:
    return {
        "id": trace_id,
        "traceFunctionKey": "scale.raw",
        "completed": True,
        "expectedSpanCount": spans,
    }


def test_concurrent_ingest_into_both_servers_is_exactly_once(
    servers: tuple[ServerProcess, ServerProcess, str], pg_url: str, tmp_path: Path
) -> None:
    a, b, key = servers
    headers = {"Authorization": f"Bearer {key}"}
    traces = 48
    per_trace = 6
    plan: dict[str, list[dict[str, Any]]] = {}
    for t in range(traces):
        trace_id = str(uuid.uuid4())
        root = str(uuid.uuid4())
        spans = [_span(root, trace_id, None, "scale.raw", t)]
        spans += [
            _span(str(uuid.uuid4()), trace_id, root, "scale.raw.step", t * 10 + i)
            for i in range(1, per_trace)
        ]
        plan[trace_id] = spans

    def post(url: str, spans: list[dict[str, Any]], trace: list[dict[str, Any]]) -> None:
        answer = httpx.post(
            f"{url}/api/bitfab/v1/ingest",
            json={"spans": spans, "traces": trace},
            headers=headers,
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["rejected"] == []

    def raw_client(part: int) -> None:
        # The first half of each trace's spans to A and the rest to B, one request each at
        # the same moment; the completion record to the other server; the middle span to
        # both (a retry after a lost answer).
        for trace_id in list(plan)[part::4]:
            spans = plan[trace_id]
            half = per_trace // 2
            to_a = [*spans[:half], spans[half]]
            to_b = spans[half:]
            sides = [
                threading.Thread(target=post, args=(a.url, to_a, [])),
                threading.Thread(target=post, args=(b.url, to_b, [_trace(trace_id, per_trace)])),
            ]
            for side in sides:
                side.start()
            for side in sides:
                side.join()

    script = tmp_path / "sdk_client.py"
    script.write_text(SDK_CLIENT)
    sdk = [
        subprocess.Popen(
            [sys.executable, str(script), server.url, key, tag, "150"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        for server, tag in ((a, "to-a"), (b, "to-b"))
    ]
    raw = [threading.Thread(target=raw_client, args=(part,)) for part in range(4)]
    for thread in raw:
        thread.start()
    for thread in raw:
        thread.join()
    for process in sdk:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert int(out) == 300  # 150 calls of 2 spans, all exported

    sent = {span["id"] for spans in plan.values() for span in spans}
    stored = _rows(pg_url, "SELECT id FROM spans WHERE key LIKE 'scale.raw%'")
    assert len(stored) == len(sent) and {row[0] for row in stored} == sent
    assert _rows(pg_url, "SELECT COUNT(*), COUNT(DISTINCT id) FROM spans") == [(600 + 288, 888)]
    assert _rows(
        pg_url,
        "SELECT COUNT(*) FROM traces WHERE key = 'scale.raw' AND completed = 1",
    ) == [(traces,)]

    # Both servers answer the same for every trace, and see every SDK call.
    for trace_id in itertools.islice(plan, 0, traces, 5):
        answers = [
            httpx.get(f"{s.url}/api/v1/traces/{trace_id}", headers=headers, timeout=30).json()
            for s in (a, b)
        ]
        assert answers[0] == answers[1]
        assert {span["id"] for span in answers[0]["spans"]} == {s["id"] for s in plan[trace_id]}
        assert answers[0]["completion"] is not None
    functions = [
        httpx.get(f"{s.url}/api/v1/functions", headers=headers, timeout=30).json() for s in (a, b)
    ]
    assert functions[0] == functions[1]
    calls = {row["key"]: row["calls"] for row in functions[0]["functions"]}
    assert calls["scale.outer"] == calls["scale.inner"] == 300
    assert calls["scale.raw"] == traces and calls["scale.raw.step"] == traces * (per_trace - 1)


class RoundRobin(httpx.BaseTransport):
    """Sends each request to the next server in turn, like a load balancer without affinity."""

    def __init__(self, urls: list[str]) -> None:
        self.targets = [httpx.URL(url) for url in urls]
        self.turn = itertools.cycle(range(len(urls)))
        self.inner = httpx.HTTPTransport()
        self.seen: list[tuple[int, str, str]] = []
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            index = next(self.turn)
            self.seen.append((index, request.method, request.url.path))
        target = self.targets[index]
        request.url = request.url.copy_with(host=target.host, port=target.port)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_a_replay_spread_over_both_servers(
    servers: tuple[ServerProcess, ServerProcess, str],
) -> None:
    a, b, key = servers
    client = Bitfab(url=a.url, api_key=key, schedule_delay=0.05)
    try:

        @client.trace(key="scale.rate", mock_on_replay=True)
        def rate(item: str) -> float:
            return {"apple": 3.0, "pear": 4.0}.get(item, 1.0)

        version = [1]

        @client.trace(key="scale.price")
        def price(item: str, qty: int) -> float:
            total = rate(item) * qty
            return total if version[0] == 1 or qty < 5 else total * 0.9

        for qty in range(1, 9):
            price("apple" if qty % 2 else "pear", qty)
        assert client.flush(timeout=30)

        version[0] = 2
        transport = RoundRobin([a.url, b.url])
        backend = RemoteBackend(a.url, key, transport=transport)
        try:
            result = run_replay(client, price, limit=8, max_concurrency=4, backend=backend)
        finally:
            backend.close()
        assert client.flush(timeout=30)
    finally:
        client.shutdown()

    assert len(result.items) == 8 and result.completed
    assert sorted(item.verdict for item in result.items) == ["changed"] * 4 + ["same"] * 4
    # every kind of call reached both servers
    by_server: dict[int, set[str]] = {0: set(), 1: set()}
    for index, method, path in transport.seen:
        by_server[index].add(f"{method} {path.rsplit('/', 1)[0] if 'spanTree' in path else path}")
    assert "POST /api/sdk/replay/start" in by_server[0] | by_server[1]
    assert "POST /api/sdk/replay/complete" in by_server[0] | by_server[1]
    assert all(any("GET" in call for call in calls) for calls in by_server.values())

    headers = {"Authorization": f"Bearer {key}"}
    runs = [
        httpx.get(f"{s.url}/api/v1/runs/{result.test_run_id}", headers=headers, timeout=30).json()
        for s in (a, b)
    ]
    assert runs[0] == runs[1]
    run = runs[0]["run"]
    assert run["status"] == "completed" and len(run["items"]) == 8
    assert sorted(i["verdict"] for i in run["items"]) == sorted(i.verdict for i in result.items)
    # the replay's own spans, recorded into A, are tagged with the run and visible from B
    replayed = httpx.get(
        f"{b.url}/api/v1/traces",
        params={"key": "scale.price", "include_replays": "true", "limit": 100},
        headers=headers,
        timeout=30,
    ).json()["traces"]
    assert sum(1 for t in replayed if t["test_run_id"] == result.test_run_id) == 8


@pytest.mark.parametrize("point", ["before_commit", "mid_batch", "after_commit_before_response"])
def test_kill_9_of_one_server_mid_ingest_loses_and_duplicates_nothing(
    pg_url: str, point: str
) -> None:
    """B12 on PostgreSQL, with a second server taking another client's spans meanwhile."""
    key = create_key(pg_url)  # type: ignore[arg-type]
    steady = ServerProcess(pg_url)  # type: ignore[arg-type]
    doomed = ServerProcess(
        pg_url,  # type: ignore[arg-type]
        env={"BITFAB_TEST_CRASH_AT": point, "BITFAB_TEST_CRASH_AFTER": "2"},
    )
    port = doomed.port
    clients = [
        Bitfab(url=url, api_key=key, max_batch_size=30, schedule_delay=0.05)
        for url in (doomed.url, steady.url)
    ]
    restarted: ServerProcess | None = None
    try:
        funcs = []
        for n, client in enumerate(clients):

            @client.trace(key=f"crash.k{n}")
            def job(i: int) -> int:
                return i

            funcs.append(job)
        for i in range(30):  # batch 1 to the doomed server: acknowledged
            funcs[0](i)
        assert clients[0].flush(timeout=30)
        for i in range(30):  # batch 2: the server kills itself inside this request
            funcs[0](100 + i)
        for i in range(200):
            funcs[1](i)
        assert doomed.wait_exit(30) == -signal.SIGKILL
        assert clients[1].flush(timeout=60)  # the steady server never noticed
        restarted = ServerProcess(pg_url, port=port)  # type: ignore[arg-type]
        assert clients[0].flush(timeout=60)  # the retry lands on the restarted server
        exported = [client.stats().exported for client in clients]
        assert exported == [60, 200]
    finally:
        for client in clients:
            client.shutdown()
        for server in (steady, doomed, restarted):
            if server is not None:
                server.stop()
    rows = _rows(pg_url, "SELECT key, COUNT(*), COUNT(DISTINCT id) FROM spans GROUP BY key")
    assert sorted(rows) == [("crash.k0", 60, 60), ("crash.k1", 200, 200)]
