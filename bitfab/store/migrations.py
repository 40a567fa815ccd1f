"""The SQLite schema, as an ordered list of migrations.

Each migration runs in its own ``BEGIN IMMEDIATE`` transaction and records its version in
``bitfab_schema`` in that same transaction, so a crash leaves either all of it or none, and two
processes opening a fresh file at once apply it once: the second waits for the write lock,
then sees the version the first recorded and skips it.

To change the schema, append a migration; never edit one that has shipped.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bitfab.exceptions import StoreError
from bitfab.store import sqlite_sql as sql
from bitfab.store.function_stats import Changes
from bitfab.store.records import utc_now_iso

__all__ = ["LATEST_VERSION", "MIGRATIONS", "Migration", "migrate"]


@dataclass(frozen=True)
class Migration:
    """One step of the schema: its version, a name for people, and its statements.

    ``backfill``, if given, runs after the statements in the same transaction, with the
    migration's connection: for data that SQL alone cannot compute.
    """

    version: int
    name: str
    statements: tuple[str, ...]
    backfill: Callable[[Any], None] | None = None


def _backfill_function_stats(conn: sqlite3.Connection) -> None:
    changes = Changes()
    changes.add(conn.execute(sql.ALL_CALLS))
    conn.executemany(sql.UPSERT_FUNCTION_STATS, changes.params())


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "spans, traces, test runs",
        (
            """
            CREATE TABLE spans (
                id TEXT PRIMARY KEY NOT NULL,
                trace_id TEXT NOT NULL,
                parent_id TEXT,
                key TEXT,
                name TEXT,
                span_type TEXT,
                started_at TEXT,
                ended_at TEXT,
                start_us INTEGER,
                end_us INTEGER,
                duration_ms REAL,
                is_root INTEGER NOT NULL,
                error TEXT,
                test_run_id TEXT,
                input_source_span_id TEXT,
                mocked INTEGER NOT NULL DEFAULT 0,
                model TEXT,
                input_tokens INTEGER,
                output_tokens INTEGER,
                cached_tokens INTEGER,
                cost_usd REAL,
                replayable INTEGER NOT NULL DEFAULT 1,
                record TEXT NOT NULL
            )
            """,
            # Spans of a trace, and children of a span within its trace (the subtree walk):
            # one index for both, because every index costs ~15% of the insert rate.
            "CREATE INDEX spans_by_trace ON spans (trace_id, parent_id)",
            # Newest roots of a key, with test_run_id in the index so that skipping replay
            # roots needs no table lookup.
            "CREATE INDEX spans_roots_by_key ON spans (key, start_us, id, test_run_id)"
            " WHERE is_root = 1",
            "CREATE INDEX spans_roots_by_time ON spans (start_us, id, test_run_id)"
            " WHERE is_root = 1",
            "CREATE INDEX spans_by_test_run ON spans (test_run_id, trace_id)"
            " WHERE test_run_id IS NOT NULL",
            """
            CREATE TABLE traces (
                id TEXT PRIMARY KEY NOT NULL,
                key TEXT,
                completed INTEGER NOT NULL,
                expected_span_count INTEGER,
                test_run_id TEXT,
                input_source_trace_id TEXT,
                started_at TEXT,
                ended_at TEXT,
                dropped INTEGER NOT NULL DEFAULT 0,
                record TEXT NOT NULL
            )
            """,
            "CREATE INDEX traces_by_test_run ON traces (test_run_id) WHERE test_run_id IS NOT NULL",
            """
            CREATE TABLE test_runs (
                id TEXT PRIMARY KEY NOT NULL,
                key TEXT NOT NULL,
                name TEXT,
                status TEXT NOT NULL,
                created_at TEXT NOT NULL,
                created_us INTEGER,
                completed_at TEXT,
                options TEXT NOT NULL,
                code_version TEXT,
                summary TEXT,
                record TEXT NOT NULL
            )
            """,
            "CREATE INDEX test_runs_by_key ON test_runs (key, created_us)",
            "CREATE INDEX test_runs_by_time ON test_runs (created_us)",
            """
            CREATE TABLE test_run_items (
                run_id TEXT NOT NULL REFERENCES test_runs (id) ON DELETE CASCADE,
                idx INTEGER NOT NULL,
                original_trace_id TEXT,
                original_span_id TEXT,
                replay_trace_id TEXT,
                verdict TEXT,
                item TEXT NOT NULL,
                PRIMARY KEY (run_id, idx)
            )
            """,
        ),
    ),
    Migration(
        2,
        "api keys",
        (
            # The server's API keys: only a hash of each secret is kept (bitfab.store.keys).
            """
            CREATE TABLE api_keys (
                id TEXT PRIMARY KEY NOT NULL,
                name TEXT,
                scope TEXT NOT NULL,
                key_hash TEXT NOT NULL UNIQUE,
                created_at TEXT NOT NULL,
                revoked_at TEXT,
                last_used_at TEXT
            )
            """,
        ),
    ),
    Migration(
        3,
        "retention",
        (
            # When a trace record counts as stored, for prune: its externalTrace's start (else
            # its end, else the time it was written). Rows written before this migration get
            # theirs from the same columns, to the precision julianday() has (a few us).
            "ALTER TABLE traces ADD COLUMN start_us INTEGER",
            """
            UPDATE traces SET start_us = CAST(
                (COALESCE(julianday(started_at), julianday(ended_at), julianday('now'))
                 - 2440587.5) * 86400000000 AS INTEGER)
            """,
            # Prune walks trace records oldest first, and asks whether a test run item names
            # a trace (as its original or its replay).
            "CREATE INDEX traces_by_time ON traces (start_us, id)",
            "CREATE INDEX test_run_items_by_original ON test_run_items (original_trace_id)"
            " WHERE original_trace_id IS NOT NULL",
            "CREATE INDEX test_run_items_by_replay ON test_run_items (replay_trace_id)"
            " WHERE replay_trace_id IS NOT NULL",
        ),
    ),
    Migration(
        4,
        "function stats",
        (
            # One row per key for Store.functions(), kept by every write and delete in its
            # transaction (bitfab.store.function_stats); durations is a JSON histogram.
            """
            CREATE TABLE function_stats (
                key TEXT PRIMARY KEY NOT NULL,
                calls INTEGER NOT NULL,
                root_calls INTEGER NOT NULL,
                errors INTEGER NOT NULL,
                first_seen_us INTEGER,
                last_seen_us INTEGER,
                last_id TEXT,
                name TEXT,
                input_tokens INTEGER NOT NULL,
                output_tokens INTEGER NOT NULL,
                cached_tokens INTEGER NOT NULL,
                durations TEXT NOT NULL
            )
            """,
            # A key's calls in start order: after a delete, the key's first start and newest
            # call are two seeks here rather than a scan of the table.
            "CREATE INDEX spans_calls_by_key ON spans (key, start_us, id)"
            " WHERE key IS NOT NULL AND test_run_id IS NULL",
        ),
        _backfill_function_stats,
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version

_CREATE_VERSION_TABLE = """
    CREATE TABLE IF NOT EXISTS bitfab_schema (
        version INTEGER PRIMARY KEY NOT NULL,
        name TEXT NOT NULL,
        applied_at TEXT NOT NULL
    )
"""
_HAS_VERSION_TABLE = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'bitfab_schema'"
_HAS_OTHER_TABLES = (
    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
)
_CURRENT_VERSION = "SELECT COALESCE(MAX(version), 0) FROM bitfab_schema"
_RECORD_VERSION = "INSERT INTO bitfab_schema (version, name, applied_at) VALUES (?, ?, ?)"


def migrate(
    conn: sqlite3.Connection,
    path: str,
    migrations: tuple[Migration, ...] = MIGRATIONS,
) -> int:
    """Apply the migrations ``conn``'s database lacks; return the version it is at now.

    ``conn`` must be in autocommit mode (``isolation_level=None``). Raises ``StoreError`` when
    the database was written by a newer bitfab, or is some other application's database;
    sqlite3 errors are left to the caller to translate.
    """
    latest = migrations[-1].version if migrations else 0
    current = _version(conn)
    _check_not_newer(current, latest, path)
    for migration in migrations:
        if migration.version <= current:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: another process may have migrated meanwhile.
            current = _version(conn)
            _check_not_newer(current, latest, path)
            if current == 0 and conn.execute(_HAS_OTHER_TABLES).fetchone() is not None:
                raise StoreError(
                    f"{path} is a SQLite database of some other application, not a bitfab"
                    " store; choose another path"
                )
            if migration.version > current:
                conn.execute(_CREATE_VERSION_TABLE)
                for statement in migration.statements:
                    conn.execute(statement)
                if migration.backfill is not None:
                    migration.backfill(conn)
                conn.execute(_RECORD_VERSION, (migration.version, migration.name, utc_now_iso()))
                current = migration.version
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.rollback()
            raise
    return current


def _version(conn: sqlite3.Connection) -> int:
    if conn.execute(_HAS_VERSION_TABLE).fetchone() is None:
        return 0
    row = conn.execute(_CURRENT_VERSION).fetchone()
    return int(row[0])


def _check_not_newer(current: int, latest: int, path: str) -> None:
    if current > latest:
        raise StoreError(
            f"{path} was written by a newer bitfab (schema version {current}; this bitfab knows"
            f" up to {latest}); upgrade bitfab to open it"
        )
