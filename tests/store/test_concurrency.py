"""Many threads on one store, on every backend (RELIABILITY.md E12)."""

from __future__ import annotations

import threading
import time

from bitfab.store import Store, StoreBusyError

from .factories import span


def test_sixteen_writers_and_four_readers_lose_nothing(store: Store) -> None:
    """E12: every acknowledged write is stored; nothing but StoreBusyError (retried) is raised."""
    acknowledged: list[str] = []
    unexpected: list[BaseException] = []
    writers_done = threading.Event()
    busy = [0]

    def writer(n: int) -> None:
        try:
            for batch in range(10):
                records = [span(f"w{n}-b{batch}-s{i}", trace=f"t-w{n}-b{batch}") for i in range(20)]
                while True:
                    try:
                        result = store.write(records)
                        break
                    except StoreBusyError:
                        busy[0] += 1
                        time.sleep(0.01)
                assert result.spans_inserted == 20
                acknowledged.extend(r["id"] for r in records)
        except BaseException as exc:
            unexpected.append(exc)

    def reader() -> None:
        try:
            while not writers_done.is_set():
                store.count_spans()
                store.newest_roots("triage", 20)
                store.traces(limit=20)
                store.trace_spans("t-w0-b0")
        except BaseException as exc:
            unexpected.append(exc)

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
    readers = [threading.Thread(target=reader) for _ in range(4)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join()
    writers_done.set()
    for thread in readers:
        thread.join()
    stored = {record["id"] for record in store.trace_spans("t-w15-b9")}
    total = store.count_spans()
    missing = [span_id for span_id in acknowledged if store.get_span(span_id) is None]

    assert unexpected == []
    assert len(acknowledged) == 16 * 10 * 20 == total
    assert missing == []
    assert stored == {f"w15-b9-s{i}" for i in range(20)}
