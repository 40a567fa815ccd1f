"""Threads, pools and many instances: the span follows work handed to threads (F4), never leaks
into unrelated work, and the exporter holds up under concurrent load (F1, F7)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from tracing_helpers import flushed, links

from bitfab import Bitfab, ExportStats
from bitfab.store import open_store
from bitfab.testing import FakeClock, MemorySink, SequentialIds


@pytest.fixture
def leaf(bf: Bitfab) -> Any:
    """A traced ``leaf(x)`` returning ``x``."""

    @bf.trace(key="leaf")
    def leaf(x: int) -> int:
        return x

    return leaf


def _by_id(records: list[dict[str, Any]]) -> list[tuple[str, int | None, int | None, int | None]]:
    return sorted(links(records), key=lambda link: link[1] or 0)


@pytest.mark.timeout(30)
def test_thread_and_pool_task_started_in_a_span_are_its_children(
    bf: Bitfab, sink: MemorySink, leaf: Any
) -> None:
    """``Thread.start`` (also of a subclass) and ``ThreadPoolExecutor.submit`` carry the span along."""

    class Worker(threading.Thread):
        def __init__(self) -> None:
            super().__init__()
            self.result: int | None = None

        def run(self) -> None:
            self.result = leaf(2)

    @bf.trace(key="root")
    def root() -> list[int | None]:
        results: list[int] = []
        thread = threading.Thread(target=lambda: results.append(leaf(1)))
        thread.start()
        thread.join()
        worker = Worker()
        worker.start()
        worker.join()
        with ThreadPoolExecutor(2) as pool:
            pooled = pool.submit(leaf, 3).result()
        return [results[0], worker.result, pooled]

    assert root() == [1, 2, 3]
    assert _by_id(flushed(bf, sink)) == [
        ("root", 1, None, 1),
        ("leaf", 2, 1, 1),
        ("leaf", 3, 1, 1),
        ("leaf", 4, 1, 1),
    ]


@pytest.mark.timeout(30)
def test_concurrent_pool_tasks_from_one_span_each_get_their_own_context(
    bf: Bitfab, sink: MemorySink
) -> None:
    """Two tasks of one span running at the same time do not share (and re-enter) one context."""
    barrier = threading.Barrier(2, timeout=10)

    @bf.trace(key="together")
    def together(x: int) -> int:
        barrier.wait()
        return x

    @bf.trace(key="fan-out")
    def fan_out() -> list[int]:
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(together, x) for x in (1, 2)]
            return [future.result() for future in futures]

    assert fan_out() == [1, 2]
    assert sorted(link[:3] for link in _by_id(flushed(bf, sink))) == [
        ("fan-out", 1, None),
        ("together", 2, 1),
        ("together", 3, 1),
    ]


@pytest.mark.timeout(30)
def test_run_in_executor_from_a_traced_coroutine_is_its_child(
    bf: Bitfab, sink: MemorySink, leaf: Any
) -> None:
    """``loop.run_in_executor`` and ``asyncio.to_thread`` inside a traced coroutine give children."""

    @bf.trace(key="aroot")
    async def aroot() -> list[int]:
        loop = asyncio.get_running_loop()
        first = await loop.run_in_executor(None, leaf, 1)
        return [first, await asyncio.to_thread(leaf, 2)]

    assert asyncio.run(aroot()) == [1, 2]
    assert _by_id(flushed(bf, sink)) == [
        ("aroot", 1, None, 1),
        ("leaf", 2, 1, 1),
        ("leaf", 3, 1, 1),
    ]


@pytest.mark.timeout(30)
def test_pool_created_in_a_span_does_not_leak_it_into_later_tasks(
    bf: Bitfab, sink: MemorySink, leaf: Any
) -> None:
    """Worker threads started inside a span do not keep it: later tasks outside any span are roots."""
    pools: list[ThreadPoolExecutor] = []

    @bf.trace(key="setup")
    def setup() -> int:
        pool = ThreadPoolExecutor(1)
        pools.append(pool)
        return pool.submit(leaf, 1).result()

    assert setup() == 1
    try:
        assert [pools[0].submit(leaf, x).result() for x in (2, 3)] == [2, 3]
    finally:
        pools[0].shutdown()
    thread = threading.Thread(target=leaf, args=(4,))
    thread.start()
    thread.join()
    assert _by_id(flushed(bf, sink)) == [
        ("setup", 1, None, 1),
        ("leaf", 2, 1, 1),
        ("leaf", 3, None, 3),
        ("leaf", 4, None, 4),
        ("leaf", 5, None, 5),
    ]


PROPAGATION_OFF = """
import json, threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from bitfab import Bitfab
from bitfab.testing import MemorySink, SequentialIds

sink = MemorySink()
bf = Bitfab(sink=sink, id_generator=SequentialIds(), propagate_threads=False)

@bf.trace(key="leaf")
def leaf(x):
    return x

@bf.trace(key="root")
def root():
    thread = threading.Thread(target=leaf, args=(1,))
    thread.start()
    thread.join()
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(leaf, 2).result()

root()
bf.flush()
print(json.dumps(sorted(
    (r["traceFunctionKey"], r["rawSpan"].get("parent_id") is not None) for r in sink.spans
)))
"""


def _run_python(code: str, cwd: Path) -> str:
    env = {name: value for name, value in os.environ.items() if not name.startswith("BITFAB_")}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.timeout(60)
def test_propagate_threads_false_makes_thread_work_roots(tmp_path: Path) -> None:
    """With ``propagate_threads=False`` (alone in a process) work in threads starts its own trace."""
    assert json.loads(_run_python(PROPAGATION_OFF, tmp_path)) == [
        ["leaf", False],
        ["leaf", False],
        ["root", False],
    ]


@pytest.mark.timeout(30)
def test_propagate_threads_false_is_honoured_when_another_instance_propagates(
    sink: MemorySink, make_bitfab: Callable[..., Bitfab]
) -> None:
    """An instance with ``propagate_threads=False`` keeps its spans out of threads, whatever others do."""
    other = make_bitfab(sink=MemorySink())
    other.trace(key="other")(lambda: None)()  # an instance with the default installs propagation
    bf = make_bitfab(
        sink=sink, id_generator=SequentialIds(), clock=FakeClock(), propagate_threads=False
    )

    @bf.trace(key="leaf")
    def leaf(x: int) -> int:
        return x

    @bf.trace(key="root")
    def root() -> int:
        thread = threading.Thread(target=leaf, args=(1,))
        thread.start()
        thread.join()
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(leaf, 2).result()

    assert root() == 2
    assert _by_id(flushed(bf, sink)) == [
        ("root", 1, None, 1),
        ("leaf", 2, None, 2),
        ("leaf", 3, None, 3),
    ]


@pytest.mark.timeout(60)
def test_eight_threads_of_2000_calls_keep_ids_unique_and_the_accounts_balanced(
    make_bitfab: Callable[..., Bitfab],
) -> None:
    """8 threads x 2000 traced calls: no deadlock, unique ids, no drops, and the books balance (F1)."""
    sink = MemorySink()
    bf = make_bitfab(sink=sink)  # random ids and the real clock

    @bf.trace(key="f1-leaf")
    def leaf(i: int) -> int:
        return i

    @bf.trace(key="f1-root")
    def root(i: int) -> int:
        return leaf(i) + 1

    snapshots: list[ExportStats] = []
    running = threading.Event()
    running.set()

    def sample() -> None:
        while running.is_set():
            snapshots.append(bf.stats())

    def work() -> None:
        for i in range(2000):
            assert root(i) == i + 1

    sampler = threading.Thread(target=sample)
    workers = [threading.Thread(target=work) for _ in range(8)]
    sampler.start()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(50)
    assert bf.flush(timeout=30)
    running.clear()
    sampler.join(10)
    stats = bf.stats()
    records = sink.spans
    assert (stats, len(records), len({record["id"] for record in records})) == (
        ExportStats(emitted=32_000, exported=32_000, queued=0, in_flight=0, dropped={}),
        32_000,
        32_000,
    )
    unbalanced = [
        s for s in snapshots if s.emitted != s.exported + s.dropped_total + s.queued + s.in_flight
    ]
    assert (len(snapshots) > 0, unbalanced) == (True, [])
    assert sorted(trace["expectedSpanCount"] for trace in sink.traces) == [2] * 16_000


@pytest.mark.timeout(60)
def test_a_hundred_instances_on_one_database_share_one_exporter(
    tmp_path: Path, make_bitfab: Callable[..., Bitfab]
) -> None:
    """100 instances writing to one SQLite file start one exporter thread between them (F7)."""
    path = str(tmp_path / "x.db")

    def exporters() -> int:
        return sum(thread.name == "bitfab-exporter" for thread in threading.enumerate())

    threads_before, exporters_before = threading.active_count(), exporters()
    instances = []
    for i in range(100):
        instance = make_bitfab(db=path)
        instance.trace(key=f"f7-{i}")(lambda x: x)(i)
        instances.append(instance)
    assert (threading.active_count() - threads_before, exporters() - exporters_before) == (1, 1)
    assert all(instance.flush(timeout=10) for instance in instances)
    shared = ExportStats(emitted=100, exported=100, queued=0, in_flight=0, dropped={})
    assert [instance.stats() for instance in instances] == [shared] * 100
    store = open_store(path)
    try:
        assert store.count_spans() == 100
    finally:
        store.close()
