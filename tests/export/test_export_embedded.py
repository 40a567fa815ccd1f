"""The embedded path end to end: traced calls -> exporter -> StoreSink -> the SQLite file."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from export_helpers import assert_accounted, outcomes

from bitfab import Bitfab
from bitfab.export.exporter import ExportStats
from bitfab.store import open_store
from bitfab.testing import FakeClock, MemorySink, SequentialIds, span_tree


@pytest.fixture
def clients() -> Iterator[list[Bitfab]]:
    made: list[Bitfab] = []
    yield made
    for client in made:
        client.shutdown(timeout=5.0)


def define(client: Bitfab) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    """The same three functions traced on ``client``: a root, a child that may fail, a leaf."""

    @client.trace(key="pipeline")
    def pipeline(tickets: list[str]) -> dict[str, Any]:
        labels = {}
        for ticket in tickets:
            try:
                labels[ticket] = classify(ticket)
            except ValueError as exc:
                labels[ticket] = f"error: {exc}"
        return {"labels": labels}

    @client.trace(key="classify", span_type="agent")
    def classify(ticket: str) -> str:
        if not ticket:
            raise ValueError("empty ticket")
        return score(ticket, threshold=0.5)

    @client.trace(key="score")
    def score(ticket: str, *, threshold: float) -> str:
        return "spam" if "win" in ticket else "ham"

    return pipeline, classify, score


def record_session(client: Bitfab) -> list[tuple[Any, ...]]:
    """Two traces: a nested pipeline with a failing child, then a root call that raises."""
    pipeline, classify, _ = define(client)
    return outcomes(pipeline, [["you win", "", "hello"]]) + outcomes(classify, [""])


def untraced_session() -> list[tuple[Any, ...]]:
    # Four calls on an instance that is off, so nothing is traced.
    pipeline, classify, _ = define(Bitfab(enabled=False))
    return outcomes(pipeline, [["you win", "", "hello"]]) + outcomes(classify, [""])


EXPECTED_TREES = [
    {
        "key": "pipeline",
        "name": "pipeline",
        "input": [["you win", "", "hello"]],
        "output": {"labels": {"you win": "spam", "": "error: empty ticket", "hello": "ham"}},
        "children": [
            {
                "key": "classify",
                "name": "classify",
                "input": ["you win"],
                "output": "spam",
                "children": [
                    {
                        "key": "score",
                        "name": "score",
                        "input": ["you win", {"threshold": 0.5}],
                        "output": "spam",
                        "children": [],
                    }
                ],
            },
            {
                "key": "classify",
                "name": "classify",
                "input": [""],
                "error": "empty ticket",
                "children": [],
            },
            {
                "key": "classify",
                "name": "classify",
                "input": ["hello"],
                "output": "ham",
                "children": [
                    {
                        "key": "score",
                        "name": "score",
                        "input": ["hello", {"threshold": 0.5}],
                        "output": "ham",
                        "children": [],
                    }
                ],
            },
        ],
    },
    {"key": "classify", "name": "classify", "input": [""], "error": "empty ticket", "children": []},
]


def test_recorded_calls_are_stored_as_recorded(tmp_path: Path, clients: list[Bitfab]) -> None:
    """Nested calls with errors land in the SQLite file exactly as the exporter produced them."""
    db = tmp_path / "b.db"
    stored_client = Bitfab(db=str(db), id_generator=SequentialIds(), clock=FakeClock())
    memory = MemorySink()
    twin = Bitfab(sink=memory, id_generator=SequentialIds(), clock=FakeClock())
    clients += [stored_client, twin]

    results = record_session(stored_client)
    assert record_session(twin) == results
    assert results == untraced_session()
    assert stored_client.flush(5.0) is True
    assert twin.flush(5.0) is True
    stats = stored_client.stats()
    assert stats == ExportStats(emitted=7, exported=7, queued=0, in_flight=0, dropped={})
    assert_accounted(stats)

    recorded = sorted(memory.spans, key=lambda record: record["id"])
    assert span_tree(recorded) == EXPECTED_TREES
    store = open_store(db)
    try:
        trace_ids = sorted({record["traceId"] for record in recorded})
        stored = sorted(
            (span for trace_id in trace_ids for span in store.trace_spans(trace_id)),
            key=lambda record: record["id"],
        )
        assert stored == recorded
        assert [store.get_trace(trace_id) for trace_id in trace_ids] == sorted(
            memory.traces, key=lambda record: record["id"]
        )
        assert store.count_spans() == 7
    finally:
        store.close()


def test_stored_rows_read_back_with_plain_sqlite(tmp_path: Path, clients: list[Bitfab]) -> None:
    """The file is ordinary SQLite: rows carry the span columns and the record as JSON text."""
    db = tmp_path / "b.db"
    client = Bitfab(db=str(db), id_generator=SequentialIds(), clock=FakeClock())
    clients.append(client)
    assert record_session(client) == untraced_session()
    assert client.flush(5.0) is True
    assert_accounted(client.stats())

    conn = sqlite3.connect(db)
    try:
        spans = conn.execute(
            "SELECT id, trace_id, parent_id, key, name, span_type, is_root, error, record"
            " FROM spans ORDER BY start_us, id"
        ).fetchall()
        traces = conn.execute(
            "SELECT id, key, completed, expected_span_count FROM traces ORDER BY id"
        ).fetchall()
        integrity = conn.execute("PRAGMA integrity_check").fetchone()
    finally:
        conn.close()

    def uuid(n: int) -> str:
        return f"00000000-0000-7000-8000-{n:012x}"

    assert [row[:8] for row in spans] == [
        (uuid(1), uuid(1), None, "pipeline", "pipeline", "function", 1, None),
        (uuid(2), uuid(1), uuid(1), "classify", "classify", "agent", 0, None),
        (uuid(3), uuid(1), uuid(2), "score", "score", "function", 0, None),
        (uuid(4), uuid(1), uuid(1), "classify", "classify", "agent", 0, "empty ticket"),
        (uuid(5), uuid(1), uuid(1), "classify", "classify", "agent", 0, None),
        (uuid(6), uuid(1), uuid(5), "score", "score", "function", 0, None),
        (uuid(7), uuid(7), None, "classify", "classify", "agent", 1, "empty ticket"),
    ]
    assert [(json.loads(row[8])["id"], json.loads(row[8])["traceId"]) for row in spans] == [
        (row[0], row[1]) for row in spans
    ]
    assert traces == [(uuid(1), "pipeline", 1, 6), (uuid(7), "classify", 1, 1)]
    assert integrity == ("ok",)


def test_burst_of_10000_calls_with_defaults_loses_nothing(
    tmp_path: Path, clients: list[Bitfab]
) -> None:
    """Ten thousand calls as fast as possible with default settings are all stored, none dropped."""
    db = tmp_path / "b.db"
    client = Bitfab(db=str(db))
    clients.append(client)

    @client.trace(key="burst")
    def burst(i: int) -> int:
        return i + 1

    results = [burst(i) for i in range(10_000)]
    assert results == list(range(1, 10_001))
    assert client.flush(30.0) is True
    stats = client.stats()
    assert stats == ExportStats(emitted=10_000, exported=10_000, queued=0, in_flight=0, dropped={})
    assert_accounted(stats)

    conn = sqlite3.connect(db)
    try:
        counts = conn.execute(
            "SELECT count(*), count(DISTINCT id),"
            " count(DISTINCT json_extract(record, '$.rawSpan.span_data.input[0]'))"
            " FROM spans WHERE key = 'burst'"
        ).fetchone()
    finally:
        conn.close()
    assert counts == (10_000, 10_000, 10_000)
