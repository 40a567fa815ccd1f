"""Overload and store faults (RELIABILITY.md E9, E12, B14): 429/503 with Retry-After, 507, no 500."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from server_helpers import Api, check_answer, span_record

from bitfab.exceptions import StoreError
from bitfab.server import Limits, create_app
from bitfab.store import SQLiteStore, StoreFullError

INGEST = "/api/bitfab/v1/ingest"


class SlowStore:
    """A store whose writes take a while, so requests pile up."""

    def __init__(self, store: SQLiteStore, delay: float) -> None:
        self._store = store
        self._delay = delay

    def write(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(self._delay)
        return self._store.write(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_a_flood_gets_429_with_retry_after_and_no_500(make_api: Any, store: SQLiteStore) -> None:
    """E9: 20 clients at once against a limit of 2 recording requests in flight."""
    api = make_api(
        app=create_app(SlowStore(store, 0.2), limits=Limits(max_ingest_in_flight=2))  # type: ignore[arg-type]
    )

    async def flood() -> list[Any]:
        return await asyncio.gather(
            *(
                api.client.post(INGEST, json={"spans": [span_record(f"s{n}", f"t{n}")]})
                for n in range(20)
            )
        )

    answers = api.run(flood)
    for answer in answers:
        api.check(answer)
    statuses = sorted(answer.status_code for answer in answers)
    assert set(statuses) == {200, 429}
    assert statuses.count(200) >= 2
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    assert "more than 2 recording requests" in refused.json()["detail"]
    assert store.count_spans() == statuses.count(200)


def test_reads_are_not_held_back_by_the_ingest_limit(make_api: Any, store: SQLiteStore) -> None:
    """The in-flight limit is on recording only: reads still answer during a flood."""
    api = make_api(
        app=create_app(SlowStore(store, 0.3), limits=Limits(max_ingest_in_flight=1))  # type: ignore[arg-type]
    )

    async def mixed() -> list[Any]:
        writes = [api.client.post(INGEST, json={"spans": []}) for _ in range(3)]
        return await asyncio.gather(*writes, api.client.get("/api/v1/functions"))

    *_, read = api.run(mixed)
    assert read.status_code == 200


def test_concurrent_writers_on_one_sqlite_file_get_2xx_or_503(
    db: Path, keys: dict[str, str]
) -> None:
    """E12: 16 writers and 4 readers through two stores on one file (as two server processes):
    every answer is 2xx or 503 + Retry-After, never 500, and every acknowledged span is stored."""
    stores = [SQLiteStore(db, busy_timeout=0.05) for _ in range(2)]
    apis = [Api(create_app(s), key=keys["all"], secrets=keys.values()) for s in stores]
    results: list[tuple[int, list[str]]] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        api = apis[n % 2]
        for batch in range(5):
            ids = [f"w{n}-b{batch}-s{i}" for i in range(20)]
            answer = api.post(INGEST, json={"spans": [span_record(i, f"t-{i}") for i in ids]})
            with lock:
                results.append((answer.status_code, ids))

    def reader(n: int) -> None:
        api = apis[n % 2]
        for _ in range(5):
            for path in ("/api/v1/functions", "/api/v1/traces?limit=100"):
                answer = api.get(path)
                with lock:
                    results.append((answer.status_code, []))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
    threads += [threading.Thread(target=reader, args=(n,)) for n in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        statuses = {status for status, _ in results}
        assert statuses <= {200, 503}, statuses
        assert len(results) == 16 * 5 + 4 * 10
        acked = {i for status, ids in results if status == 200 for i in ids}
        with contextlib.closing(sqlite3.connect(db)) as conn:
            stored = {row[0] for row in conn.execute("SELECT id FROM spans")}
        assert acked <= stored
    finally:
        for api in apis:
            api.close()
        for s in stores:
            s.close()


def test_a_locked_store_answers_503_with_retry_after(api: Api, store: SQLiteStore) -> None:
    """B14: another connection holds BEGIN EXCLUSIVE: 503 + Retry-After; after it, 200."""
    holder = sqlite3.connect(store.path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        started = time.perf_counter()
        answer = api.post(INGEST, json={"spans": [span_record("s", "t")]})
        assert (answer.status_code, answer.json()["error"]) == (503, "store_busy")
        assert answer.headers["retry-after"] == "1"
        assert time.perf_counter() - started < 3
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert api.post(INGEST, json={"spans": [span_record("s", "t")]}).status_code == 200


def test_a_full_disk_answers_507(
    api: Api, store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B14: StoreFullError is 507 with an actionable message and no path."""

    def full(*args: Any, **kwargs: Any) -> Any:
        raise StoreFullError(f"writing to {store.path} failed: database or disk is full")

    monkeypatch.setattr(store, "write", full)
    for path, body in (
        (INGEST, {"spans": [span_record("s", "t")]}),
        ("/api/sdk/externalSpans", span_record("s", "t")),
    ):
        answer = api.post(path, json=body)
        assert (answer.status_code, answer.json()["error"]) == (507, "store_full")
        assert "free space" in answer.json()["detail"]


def test_another_store_failure_is_a_500_without_the_message(
    api: Api, store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store error other than busy/full: 500 store_error; its text (with the path) only logged."""

    def corrupt(*args: Any, **kwargs: Any) -> Any:
        raise StoreError(f"{store.path} is corrupt; restore it from a backup")

    monkeypatch.setattr(store, "get_span", corrupt)
    answer = api.get("/api/v1/spans/x")
    assert (answer.status_code, answer.json()["error"]) == (500, "store_error")
    check_answer(answer, [store.path])
