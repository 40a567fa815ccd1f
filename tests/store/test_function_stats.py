"""The per-key summary behind functions(): kept exact through writes, duplicates, drops, prunes,
concurrent writers and the migration that backfills it; the median within ACCURACY."""

from __future__ import annotations

import contextlib
import random
import sqlite3
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest

from bitfab.store import FunctionStats, SQLiteStore, Store
from bitfab.store.function_stats import ACCURACY, Changes, bucket, bucket_value, median
from bitfab.store.migrations import MIGRATIONS, migrate

from .factories import BASE_US, span, trace
from .processes import start_child

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pg import PG_URL, SKIP_REASON, fresh_schema

EXACT = (
    "key",
    "name",
    "calls",
    "root_calls",
    "errors",
    "first_seen_us",
    "last_seen_us",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "total_tokens",
)


def exact(stats: list[FunctionStats]) -> list[tuple[Any, ...]]:
    return [tuple(getattr(s, f) for f in EXACT) for s in stats]


def expected(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What functions() must say of stored records, computed from the records themselves."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if "testRunId" not in r:
            by_key.setdefault(r["traceFunctionKey"], []).append(r)
    rows = []
    for key in sorted(by_key):
        calls = by_key[key]
        starts = [
            (s["rawSpan"]["started_at"], s["id"], s["rawSpan"]["span_data"]["name"]) for s in calls
        ]
        newest = max(starts)
        usage = [c for s in calls for c in s["rawSpan"]["span_data"]["contexts"]]
        inp = sum(u["inputTokens"] for u in usage)
        out = sum(u["outputTokens"] for u in usage)
        rows.append(
            (
                key,
                newest[2],
                len(calls),
                sum("parent_id" not in s["rawSpan"] for s in calls),
                sum(s["rawSpan"]["span_data"]["error"] is not None for s in calls),
                BASE_US + _ms(min(starts)[0]) * 1000,
                BASE_US + _ms(newest[0]) * 1000,
                inp,
                out,
                sum(u["cachedInputTokens"] for u in usage),
                inp + out,
            )
        )
    return rows


def _ms(iso_text: str) -> int:
    from datetime import datetime

    from .factories import BASE_TIME

    moment = datetime.fromisoformat(iso_text.replace("Z", "+00:00"))
    return round((moment - BASE_TIME).total_seconds() * 1000)


def test_bucket_values_are_within_the_accuracy() -> None:
    """Every duration's bucket stands for a value within ACCURACY of it, of either sign."""
    rng = random.Random(5)
    values = [rng.lognormvariate(3, 3) for _ in range(5000)] + [0.001, 1.0, 1e9]
    for value in values + [-v for v in values]:
        assert abs(bucket_value(bucket(value)) - value) <= ACCURACY * abs(value) * (1 + 1e-9)
    assert bucket(0.0) == "z" and bucket_value("z") == 0.0


def test_median_is_within_the_accuracy_of_the_exact_median() -> None:
    """Odd and even counts, ties and one value: the histogram's median is within ACCURACY."""
    rng = random.Random(7)
    for n in [1, 2, 3, 4, 10, 11, 500, 501]:
        durations = [round(rng.lognormvariate(4, 1.5), 3) for _ in range(n)]
        changes = Changes()
        changes.add(("k", 1, False, 0, str(i), None, d, 0, 0, 0) for i, d in enumerate(durations))
        got = median(changes.keys["k"].durations)
        assert got == pytest.approx(statistics.median(durations), rel=ACCURACY)
    assert median({}) is None
    assert median({"p10": 0, "p11": -1}) is None


def test_duplicates_discarded_and_replay_spans_count_nothing(store: Store) -> None:
    """Only spans actually inserted count: a repeated id, a span of a dropped trace and replay
    spans change nothing, nor do spans without a key."""
    first = span("a", start_ms=10, duration_ms=20, name="first")
    store.write([first, span("a", start_ms=99, name="again")])
    store.write([span("a", start_ms=50, name="later copy")])
    store.write([], [trace("t-gone", dropped=True)])
    store.write([span("g", trace="t-gone", start_ms=500)])
    store.write([span("r", start_ms=600, test_run="run-1", source_span="a")])
    no_key = span("nk", start_ms=700)
    del no_key["traceFunctionKey"]
    store.write([no_key])

    (stats,) = store.functions()

    assert exact([stats]) == expected([first])
    assert stats.p50_duration_ms == pytest.approx(20.0, rel=ACCURACY)


def test_a_drop_removes_its_calls_and_the_newest_call_is_read_again(store: Store) -> None:
    """Dropping the trace of the newest call gives the previous newest name and start; a key
    whose calls are all dropped disappears."""
    kept = [
        span("k1", start_ms=100, duration_ms=10, name="old"),
        span("k2", start_ms=200, duration_ms=30, name="middle", error="boom"),
    ]
    newest = span("n1", trace="t-new", start_ms=300, duration_ms=50, name="newest")
    nested = span("n2", trace="t-new", parent="n1", key="llm", start_ms=301, duration_ms=5)
    store.write([*kept, newest, nested])
    assert [s.name for s in store.functions()] == ["llm", "newest"]

    result = store.write([], [trace("t-new", dropped=True)])

    assert result.traces_dropped == 1
    stats = store.functions()
    assert exact(stats) == expected(kept)
    assert stats[0].p50_duration_ms == pytest.approx(20.0, rel=ACCURACY)


def test_prune_keeps_the_summary_exact(store: Store) -> None:
    """After pruning old traces (in small batches), first start, counts, tokens and the median
    are those of the spans left."""
    records = []
    for i in range(12):
        root = span(f"r{i:02d}", start_ms=i * 1000, duration_ms=10 + i, name=f"v{i % 3}")
        child = span(
            f"c{i:02d}",
            trace=f"t-r{i:02d}",
            parent=f"r{i:02d}",
            key="llm",
            start_ms=i * 1000 + 5,
            duration_ms=2 + i,
            contexts=[{"inputTokens": i, "outputTokens": 1, "cachedInputTokens": 0}],
        )
        records += [root, child]
    store.write(records)

    result = store.prune(BASE_US + 6_000_000, batch_size=2)

    assert result.traces == 6
    left = [r for r in records if int(r["id"][1:]) >= 6]
    stats = store.functions()
    assert exact(stats) == expected(left)
    assert [s.p50_duration_ms for s in stats] == [
        pytest.approx(statistics.median(2 + i for i in range(6, 12)), rel=ACCURACY),
        pytest.approx(statistics.median(10 + i for i in range(6, 12)), rel=ACCURACY),
    ]

    store.prune(BASE_US + 60_000_000)
    assert store.functions() == []


def test_migration_4_backfills_the_summary_of_an_older_file(tmp_path: Path) -> None:
    """A version-3 file opened by this bitfab gets function_stats from the spans it holds."""
    path = tmp_path / "bitfab.db"
    records = [
        span("a", start_ms=1, duration_ms=4, name="one"),
        span("b", start_ms=2, duration_ms=8, name="two", error="x"),
        span("c", trace="t-b", parent="b", key="llm", start_ms=3, duration_ms=1),
        span("r", start_ms=9, test_run="run-1", source_span="a"),
    ]
    with SQLiteStore(tmp_path / "reference.db") as reference:
        reference.write(records)
        want = reference.functions()
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        migrate(conn, str(path), MIGRATIONS[:3])
        with contextlib.closing(sqlite3.connect(tmp_path / "reference.db")) as source:
            rows = source.execute("SELECT * FROM spans").fetchall()
        conn.executemany(f"INSERT INTO spans VALUES ({', '.join('?' * len(rows[0]))})", rows)

    with SQLiteStore(path) as store:
        assert store.functions() == want
        assert exact(want) == expected(records)


@pytest.mark.skipif(PG_URL is None, reason=SKIP_REASON)
def test_postgres_migration_2_backfills_the_summary() -> None:
    """A version-1 PostgreSQL schema opened by this bitfab gets function_stats from its spans
    (NUL and U+0001 in keys and names included)."""
    import psycopg
    from psycopg import sql

    from bitfab.store.postgres import PostgresStore
    from bitfab.store.postgres_conn import lock_key
    from bitfab.store.postgres_schema import MIGRATIONS as PG_MIGRATIONS
    from bitfab.store.postgres_schema import migrate as pg_migrate

    records = [
        span("a", start_ms=1, duration_ms=4, key="k\x00", name="n\x01"),
        span("b", start_ms=2, duration_ms=8, name="two", error="x"),
        span("c", trace="t-b", parent="b", key="llm", start_ms=3, duration_ms=1),
        span("r", start_ms=9, test_run="run-1", source_span="a"),
    ]
    with fresh_schema() as (url, schema), fresh_schema() as (other_url, other):
        with PostgresStore(other_url) as reference:
            reference.write(records)
            want = reference.functions()
        with psycopg.connect(url, autocommit=True) as conn:
            pg_migrate(conn, lock_key("test " + schema), schema, PG_MIGRATIONS[:1])
            conn.execute(
                sql.SQL("INSERT INTO spans SELECT * FROM {}.spans").format(sql.Identifier(other))
            )

        with PostgresStore(url) as store:
            assert store.functions() == want
    assert exact(want) == expected(records)


WRITER = """
import random
from bitfab.store import StoreBusyError, open_store

target, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(n)
store = open_store(target)
for b in range(15):
    batch = []
    for i in range(30):
        # Ids and traces shared by the writers: duplicates and racing drops on purpose.
        rec = record(f"s{rng.randrange(1500)}", f"t{rng.randrange(60)}")
        rec["traceFunctionKey"] = rng.choice(["a", "b", "c", "d"])
        second = rng.randrange(60)
        rec["rawSpan"]["started_at"] = f"2026-11-27T10:00:{second:02d}.000000Z"
        rec["rawSpan"]["ended_at"] = f"2026-11-27T10:01:{rng.randrange(second, 60):02d}.000000Z"
        rec["rawSpan"]["span_data"]["name"] = f"n{n}-{b}-{i}"
        if rng.random() < 0.5:
            rec["rawSpan"]["parent_id"] = "p"
        if rng.random() < 0.2:
            rec["rawSpan"]["span_data"]["error"] = "boom"
        batch.append(rec)
    drops = [{"id": f"t{rng.randrange(60)}", "dropped": True}] if n == 0 and b % 3 == 0 else []
    while True:
        try:
            store.write(batch, drops)
            break
        except StoreBusyError:
            time.sleep(0.01)
store.close()
"""


def _from_spans(store: Store) -> tuple[list[tuple[Any, ...]], list[float | None]]:
    """The exact fields and the histogram medians, computed straight from the spans table."""
    if isinstance(store, SQLiteStore):
        from bitfab.store import sqlite_sql as lite

        with contextlib.closing(sqlite3.connect(store.path)) as conn:
            calls = conn.execute(lite.ALL_CALLS).fetchall()
    else:
        import psycopg

        from bitfab.store import postgres_sql as pg

        assert PG_URL is not None
        with psycopg.connect(PG_URL) as conn:
            conn.execute("SELECT set_config('search_path', %s, false)", (store.schema,))  # type: ignore[attr-defined]
            calls = conn.execute(pg.ALL_CALLS).fetchall()
    changes = Changes()
    changes.add(calls)
    rows, medians = [], []
    for key in sorted(changes.keys):
        c = changes.keys[key]
        rows.append(
            (
                key,
                c.name,
                c.calls,
                c.root_calls,
                c.errors,
                c.first_seen_us,
                c.last_seen_us,
                c.input_tokens,
                c.output_tokens,
                c.cached_tokens,
                c.input_tokens + c.output_tokens,
            )
        )
        medians.append(median(c.durations))
    return rows, medians


def _targets(store: Store) -> str:
    if isinstance(store, SQLiteStore):
        return store.path
    from pg import schema_url

    assert PG_URL is not None
    return schema_url(PG_URL, store.schema)  # type: ignore[attr-defined]


def test_concurrent_writers_of_the_same_keys_and_a_racing_drop_keep_it_exact(store: Store) -> None:
    """Four processes write spans of the same keys (shared ids and traces, one of them dropping
    traces meanwhile): functions() then equals the aggregate of the spans table."""
    children = [start_child(WRITER, _targets(store), str(n)) for n in range(4)]
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err

    rows, medians = _from_spans(store)
    stats = store.functions()

    assert store.count_spans() > 0
    assert exact(stats) == rows
    assert [s.p50_duration_ms for s in stats] == medians
