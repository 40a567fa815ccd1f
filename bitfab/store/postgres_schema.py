"""The PostgreSQL schema, as an ordered list of migrations (like ``migrations.py`` for SQLite).

Migrations run under a session advisory lock whose key is derived from the schema name, so
several servers starting at once against one schema apply each migration once: the others
wait for the lock, then find the version recorded. Each migration runs in one transaction
with the row in ``bitfab_schema`` that records it.

Column choices, for every table:

* Every text column is ``COLLATE "C"``: comparisons and ``ORDER BY`` are by bytes, as SQLite's
  BINARY collation, whatever the database's locale (ids break ties in orderings).
* Records are ``text``, not ``jsonb``: ``get_span`` must return exactly what was written, and
  jsonb reorders keys, drops duplicate keys and rejects ``\\u0000``. No query needs to look
  inside a record on the server: the columns queries filter on are extracted once at write
  time (``records.span_row``), and the search reads ``search_input``, the root's input as JSON
  text in the same ASCII form as the record (``json``/``jsonb`` operators can't, as they fail
  on ``\\u0000``).
* Flags are ``smallint`` (0/1) as in SQLite, so one row tuple fits both backends.
* Text values are stored escaped (``postgres_conn.escape``): PostgreSQL text cannot hold NUL.

To change the schema, append a migration; never edit one that has shipped.
"""

from __future__ import annotations

from typing import Any

import psycopg

from bitfab.exceptions import StoreError
from bitfab.store import postgres_sql as sql
from bitfab.store.function_stats import Changes
from bitfab.store.migrations import Migration
from bitfab.store.postgres_conn import escape, unescape_row
from bitfab.store.records import utc_now_iso

__all__ = ["LATEST_VERSION", "MIGRATIONS", "migrate"]


def _backfill_function_stats(conn: psycopg.Connection[Any]) -> None:
    changes = Changes()
    # A server-side cursor: the spans stream through in chunks, whatever the store's size.
    with conn.cursor(name="bitfab_backfill") as cur:
        cur.itersize = 10_000
        cur.execute(sql.ALL_CALLS)
        changes.add(unescape_row(row) for row in cur)
    if changes:
        conn.cursor().executemany(sql.UPSERT_FUNCTION_STATS, changes.params(escape))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "spans, traces, test runs, api keys",
        (
            """
            CREATE TABLE spans (
                id text COLLATE "C" PRIMARY KEY,
                trace_id text COLLATE "C" NOT NULL,
                parent_id text COLLATE "C",
                key text COLLATE "C",
                name text COLLATE "C",
                span_type text COLLATE "C",
                started_at text COLLATE "C",
                ended_at text COLLATE "C",
                start_us bigint,
                end_us bigint,
                duration_ms double precision,
                is_root smallint NOT NULL,
                error text COLLATE "C",
                test_run_id text COLLATE "C",
                input_source_span_id text COLLATE "C",
                mocked smallint NOT NULL DEFAULT 0,
                model text COLLATE "C",
                input_tokens bigint,
                output_tokens bigint,
                cached_tokens bigint,
                cost_usd double precision,
                replayable smallint NOT NULL DEFAULT 1,
                record text COLLATE "C" NOT NULL,
                search_input text COLLATE "C"
            )
            """,
            # Spans of a trace, and children of a span within its trace (the subtree walk).
            "CREATE INDEX spans_by_trace ON spans (trace_id, parent_id)",
            # Newest roots of a key (and of all keys) in the order the listings ask for, with
            # test_run_id included so that skipping replay roots needs no table lookup.
            "CREATE INDEX spans_roots_by_key ON spans (key, start_us DESC NULLS LAST, id DESC)"
            " INCLUDE (test_run_id) WHERE is_root = 1",
            "CREATE INDEX spans_roots_by_time ON spans (start_us DESC NULLS LAST, id DESC)"
            " INCLUDE (test_run_id) WHERE is_root = 1",
            "CREATE INDEX spans_by_test_run ON spans (test_run_id, trace_id)"
            " WHERE test_run_id IS NOT NULL",
            """
            CREATE TABLE traces (
                id text COLLATE "C" PRIMARY KEY,
                key text COLLATE "C",
                completed smallint NOT NULL,
                expected_span_count bigint,
                test_run_id text COLLATE "C",
                input_source_trace_id text COLLATE "C",
                started_at text COLLATE "C",
                ended_at text COLLATE "C",
                dropped smallint NOT NULL DEFAULT 0,
                record text COLLATE "C" NOT NULL,
                start_us bigint NOT NULL
            )
            """,
            "CREATE INDEX traces_by_test_run ON traces (test_run_id) WHERE test_run_id IS NOT NULL",
            "CREATE INDEX traces_by_time ON traces (start_us, id)",
            """
            CREATE TABLE test_runs (
                id text COLLATE "C" PRIMARY KEY,
                key text COLLATE "C" NOT NULL,
                name text COLLATE "C",
                status text COLLATE "C" NOT NULL,
                created_at text COLLATE "C" NOT NULL,
                created_us bigint,
                completed_at text COLLATE "C",
                options text COLLATE "C" NOT NULL,
                code_version text COLLATE "C",
                summary text COLLATE "C",
                record text COLLATE "C" NOT NULL
            )
            """,
            "CREATE INDEX test_runs_by_key ON test_runs (key, created_us)",
            "CREATE INDEX test_runs_by_time ON test_runs (created_us)",
            """
            CREATE TABLE test_run_items (
                run_id text COLLATE "C" NOT NULL REFERENCES test_runs (id) ON DELETE CASCADE,
                idx bigint NOT NULL,
                original_trace_id text COLLATE "C",
                original_span_id text COLLATE "C",
                replay_trace_id text COLLATE "C",
                verdict text COLLATE "C",
                item text COLLATE "C" NOT NULL,
                PRIMARY KEY (run_id, idx)
            )
            """,
            "CREATE INDEX test_run_items_by_original ON test_run_items (original_trace_id)"
            " WHERE original_trace_id IS NOT NULL",
            "CREATE INDEX test_run_items_by_replay ON test_run_items (replay_trace_id)"
            " WHERE replay_trace_id IS NOT NULL",
            """
            CREATE TABLE api_keys (
                id text COLLATE "C" PRIMARY KEY,
                name text COLLATE "C",
                scope text COLLATE "C" NOT NULL,
                key_hash text COLLATE "C" NOT NULL UNIQUE,
                created_at text COLLATE "C" NOT NULL,
                revoked_at text COLLATE "C",
                last_used_at text COLLATE "C"
            )
            """,
        ),
    ),
    Migration(
        2,
        "function stats",
        (
            # One row per key for Store.functions(), kept by every write and delete in its
            # transaction (bitfab.store.function_stats); durations is a histogram.
            """
            CREATE TABLE function_stats (
                key text COLLATE "C" PRIMARY KEY,
                calls bigint NOT NULL,
                root_calls bigint NOT NULL,
                errors bigint NOT NULL,
                first_seen_us bigint,
                last_seen_us bigint,
                last_id text COLLATE "C",
                name text COLLATE "C",
                input_tokens bigint NOT NULL,
                output_tokens bigint NOT NULL,
                cached_tokens bigint NOT NULL,
                durations jsonb NOT NULL
            )
            """,
            # A key's calls in start order: after a delete, the key's first start and newest
            # call are two short index walks rather than a scan of the table. NULLS FIRST, so
            # that walked backwards it gives the newest-first order (DESC NULLS LAST).
            "CREATE INDEX spans_calls_by_key ON spans (key, start_us NULLS FIRST, id)"
            " WHERE key IS NOT NULL AND test_run_id IS NULL",
        ),
        _backfill_function_stats,
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version

_LOCK = "SELECT pg_catalog.pg_advisory_lock(%s)"
_UNLOCK = "SELECT pg_catalog.pg_advisory_unlock(%s)"
_HAS_VERSION_TABLE = """
    SELECT 1 FROM pg_catalog.pg_tables
    WHERE schemaname = pg_catalog.current_schema() AND tablename = 'bitfab_schema'
"""
_HAS_OTHER_TABLES = """
    SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = pg_catalog.current_schema() LIMIT 1
"""
_CREATE_VERSION_TABLE = """
    CREATE TABLE IF NOT EXISTS bitfab_schema (
        version integer PRIMARY KEY,
        name text NOT NULL,
        applied_at text NOT NULL
    )
"""
_CURRENT_VERSION = "SELECT COALESCE(MAX(version), 0) FROM bitfab_schema"
_RECORD_VERSION = "INSERT INTO bitfab_schema (version, name, applied_at) VALUES (%s, %s, %s)"


def migrate(
    conn: psycopg.Connection[Any],
    lock_key: int,
    where: str,
    migrations: tuple[Migration, ...] = MIGRATIONS,
) -> int:
    """Apply the migrations the connection's current schema lacks; the version it is at now.

    ``conn`` must be in autocommit mode, its ``search_path`` on the store's schema.
    ``lock_key`` names the schema's advisory lock. Raises ``StoreError`` for a schema of a
    newer bitfab or of another application; psycopg errors are left to the caller.
    """
    latest = migrations[-1].version if migrations else 0
    conn.execute(_LOCK, (lock_key,))
    try:
        current = _version(conn)
        if current > latest:
            raise StoreError(
                f"{where} was written by a newer bitfab (schema version {current}; this bitfab"
                f" knows up to {latest}); upgrade bitfab to open it"
            )
        if current == 0 and conn.execute(_HAS_OTHER_TABLES).fetchone() is not None:
            raise StoreError(
                f"{where} holds tables of some other application, not a bitfab store; pass"
                " another schema (e.g. open_store(url, schema='bitfab'))"
            )
        for migration in migrations:
            if migration.version <= current:
                continue
            with conn.transaction():
                conn.execute(_CREATE_VERSION_TABLE)
                for statement in migration.statements:
                    conn.execute(statement)
                if migration.backfill is not None:
                    migration.backfill(conn)
                conn.execute(_RECORD_VERSION, (migration.version, migration.name, utc_now_iso()))
            current = migration.version
        return current
    finally:
        conn.execute(_UNLOCK, (lock_key,))


def _version(conn: psycopg.Connection[Any]) -> int:
    if conn.execute(_HAS_VERSION_TABLE).fetchone() is None:
        return 0
    row = conn.execute(_CURRENT_VERSION).fetchone()
    return int(row[0]) if row else 0
