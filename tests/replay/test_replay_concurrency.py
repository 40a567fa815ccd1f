"""Concurrency of a replay: sync functions on up to ``max_concurrency`` threads, async ones as
tasks under a semaphore, results in the order of the recorded items.

Concurrency is shown with barriers and counters of simultaneous calls, never with timings.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bitfab import Bitfab
from bitfab.testing import FakeClock

WAIT = 5.0  # seconds a barrier waits before the test counts the concurrency as missing


class Gauge:
    """Counts calls in progress and remembers the most at once."""

    def __init__(self) -> None:
        self.active = 0
        self.most = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            self.active += 1
            self.most = max(self.most, self.active)

    def leave(self) -> None:
        with self._lock:
            self.active -= 1


@pytest.fixture
def ordered_bf(db: Path) -> Iterator[Bitfab]:
    """A recorder with a fake clock, so that recorded calls have distinct, ordered start times."""
    client = Bitfab(db=str(db), clock=FakeClock())
    yield client
    client.shutdown(timeout=5)


def test_sync_items_run_on_max_concurrency_threads_at_once(bf: Bitfab) -> None:
    """20 items at ``max_concurrency=10``: a barrier of 10 is passed twice, never more than 10 run."""
    gauge = Gauge()
    barrier = threading.Barrier(10, timeout=WAIT)

    @bf.trace(key="slow")
    def slow(n: int) -> int:
        if bf.is_replaying():
            gauge.enter()
            try:
                barrier.wait()
            finally:
                gauge.leave()
        return n

    for n in range(20):
        slow(n)

    result = slow.replay(limit=20, max_concurrency=10)

    assert [i.verdict for i in result] == ["same"] * 20
    assert gauge.most == 10


def test_max_concurrency_one_runs_the_items_one_at_a_time(bf: Bitfab) -> None:
    """``max_concurrency=1``: never two calls at once, all on one replay thread."""
    gauge = Gauge()
    threads: set[str] = set()

    @bf.trace(key="serial")
    def serial(n: int) -> int:
        if bf.is_replaying():
            gauge.enter()
            threads.add(threading.current_thread().name)
            time.sleep(0.01)  # leaves room for a second call to overlap, if one could
            gauge.leave()
        return n

    for n in range(5):
        serial(n)

    result = serial.replay(max_concurrency=1)

    assert [i.verdict for i in result] == ["same"] * 5
    assert gauge.most == 1
    assert len(threads) == 1


def test_async_items_run_as_tasks_under_the_semaphore(bf: Bitfab) -> None:
    """12 async items at ``max_concurrency=4``: four are in flight together, never five."""
    gauge = Gauge()

    @bf.trace(key="fetch")
    async def fetch(n: int) -> int:
        if bf.is_replaying():
            gauge.enter()
            try:
                deadline = time.monotonic() + WAIT
                while gauge.most < 4 and time.monotonic() < deadline:
                    await asyncio.sleep(0.001)
                await asyncio.sleep(0.001)
            finally:
                gauge.leave()
        return n

    async def record() -> None:
        for n in range(12):
            await fetch(n)

    asyncio.run(record())

    result = fetch.replay(limit=12, max_concurrency=4)

    assert [i.verdict for i in result] == ["same"] * 12
    assert gauge.most == 4


def test_areplay_of_a_sync_function_uses_max_concurrency_threads(bf: Bitfab) -> None:
    """``await fn.areplay(max_concurrency=10)`` of a sync function runs 10 calls at once, as
    ``fn.replay(max_concurrency=10)`` does, whatever the size of the loop's default executor."""
    gauge = Gauge()
    barrier = threading.Barrier(10, timeout=2.0)

    @bf.trace(key="blocking")
    def blocking(n: int) -> int:
        if bf.is_replaying():
            gauge.enter()
            try:
                barrier.wait()
            finally:
                gauge.leave()
        return n

    for n in range(10):
        blocking(n)

    async def main() -> list[str]:
        small = ThreadPoolExecutor(max_workers=2)
        asyncio.get_running_loop().set_default_executor(small)
        result = await blocking.areplay(limit=10, max_concurrency=10)
        return [item.verdict for item in result]

    verdicts = asyncio.run(main())

    assert gauge.most == 10
    assert verdicts == ["same"] * 10


def test_results_keep_the_order_of_the_recorded_items(ordered_bf: Bitfab) -> None:
    """Items that finish in reverse order still come back newest recorded call first, by index."""
    bf = ordered_bf
    finished: list[int] = []
    turn = threading.Condition()

    @bf.trace(key="staggered")
    def staggered(n: int) -> int:
        if bf.is_replaying():
            with turn:  # finish in recording order: n waits until 0..n-1 are done
                assert turn.wait_for(lambda: len(finished) == n, timeout=WAIT)
                finished.append(n)
                turn.notify_all()
        return n * n

    for n in range(6):
        staggered(n)

    result = staggered.replay(limit=6, max_concurrency=6)

    assert finished == [0, 1, 2, 3, 4, 5]
    assert [(i.index, i.input["args"], i.result, i.verdict) for i in result] == [
        (index, [n], n * n, "same") for index, n in enumerate(range(5, -1, -1))
    ]


def test_async_results_keep_the_order_of_the_recorded_items(ordered_bf: Bitfab) -> None:
    """The async path too: completion order does not change the order of the items."""
    bf = ordered_bf
    finished: list[int] = []

    @bf.trace(key="staggered_async")
    async def staggered_async(n: int) -> int:
        if bf.is_replaying():
            deadline = time.monotonic() + WAIT
            while len(finished) != n and time.monotonic() < deadline:
                await asyncio.sleep(0.001)
            finished.append(n)
        return -n

    async def record() -> None:
        for n in range(6):
            await staggered_async(n)

    asyncio.run(record())

    result = staggered_async.replay(limit=6, max_concurrency=6)

    assert finished == [0, 1, 2, 3, 4, 5]
    assert [(i.index, i.result) for i in result] == [(i, -(5 - i)) for i in range(6)]
