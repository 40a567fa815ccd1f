"""The SQLite store: one file in WAL mode, safe across threads, processes and forks.

Connections come from a small pool: a thread takes one for the length of one call and gives it
back, so each connection is used by one thread at a time (which is why they are opened with
``check_same_thread=False``: they move between threads, never shared at once). Writes are
serialized in-process by a lock and across processes by ``BEGIN IMMEDIATE`` plus SQLite's busy
timeout. After ``fork()`` the child never touches the parent's connections: it opens its own.

Every statement is a constant string with bound parameters.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from bitfab.exceptions import StoreError
from bitfab.store import sqlite_sql as sql
from bitfab.store.base import (
    ApiKey,
    FunctionStats,
    PruneResult,
    Store,
    StoreBusyError,
    TestRun,
    TestRunItem,
    TraceSummary,
    UnknownTestRunError,
    WriteResult,
    check_limit,
    check_search,
)
from bitfab.store.function_stats import Changes, call_of, stats_from_row
from bitfab.store.migrations import migrate
from bitfab.store.records import (
    SpanRow,
    like_pattern,
    query_text,
    utc_now_iso,
)
from bitfab.store.retention import Batch, PrunePlan, run_prune
from bitfab.store.rows import (
    NO_TOTALS,
    TraceTotals,
    api_key_row,
    check_status,
    item_from_row,
    item_rows,
    json_field,
    key_from_row,
    parse,
    run_from_row,
    run_row,
    split_batch,
    token_dicts,
    trace_start_us,
    trace_summaries,
)
from bitfab.store.sqlite_errors import BUSY_CODES, create_file, primary_code, sqlite_error

__all__ = ["SQLiteStore"]

# Connections a forked child inherited from its parent. The child must neither use nor close
# them (closing could checkpoint or delete the parent's WAL), so they are kept referenced here
# and never finalized.
_INHERITED: list[sqlite3.Connection] = []


class SQLiteStore(Store):
    """A :class:`~bitfab.store.base.Store` in one SQLite file.

    Example::

        store = SQLiteStore(".bitfab/bitfab.db")
        store.write([span_record], [trace_record])
        roots = store.newest_roots("triage", 5)
        store.close()

    Args:
        path: the database file; missing parent directories are created.
        busy_timeout: seconds a write waits for another writer before
            :class:`~bitfab.store.base.StoreBusyError`.
        max_idle_connections: connections kept open between calls; more are opened when more
            threads call at once, and closed when they are done.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        max_idle_connections: int = 8,
    ) -> None:
        text = os.fspath(path)
        if text in ("", ":memory:"):
            raise StoreError(
                f"the SQLite store needs a file path, not {text!r}; for tests use a file in a"
                " temporary directory"
            )
        if busy_timeout < 0:
            raise ValueError("busy_timeout must be >= 0 seconds")
        self._path = os.path.abspath(os.path.expanduser(text))
        self._busy_timeout = float(busy_timeout)
        self._max_idle = max(0, max_idle_connections)
        self._pid = os.getpid()
        self._lock = threading.Lock()  # guards _idle and _closed
        self._write_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._closed = False
        create_file(self._path)
        try:
            with self._reading("opening") as conn:
                migrate(conn, self._path)
        except BaseException:
            self.close()
            raise

    @property
    def path(self) -> str:
        """The absolute path of the database file."""
        return self._path

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r})"

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------

    def write(
        self, spans: Sequence[Mapping[str, Any]], traces: Sequence[Mapping[str, Any]] = ()
    ) -> WriteResult:
        incoming = split_batch(spans, traces)
        span_rows = [row for row, _ in incoming.spans]
        drops, completions, rejected = incoming.drops, incoming.completions, incoming.rejected
        if not (span_rows or drops or completions):
            return WriteResult(rejected=tuple(rejected))

        now_us = _now_us()
        with self._writing() as conn:
            changes = Changes()
            if drops:
                conn.executemany(
                    sql.DROP_TRACE, [(*row, trace_start_us(row, now_us)) for row in drops]
                )
                changes.remove(conn.execute(sql.CALLS_OF_TRACES, (_id_list(r.id for r in drops),)))
                conn.executemany(sql.DELETE_TRACE_SPANS, [(row.id,) for row in drops])
            kept = span_rows
            if span_rows:
                trace_ids = _id_list({row.trace_id for row in span_rows})
                dropped = {tid for (tid,) in conn.execute(sql.DROPPED_AMONG, (trace_ids,))}
                if dropped:
                    kept = [row for row in span_rows if row.trace_id not in dropped]
            spans_inserted = 0
            if kept:
                inserted = _insert_spans(conn, kept)
                spans_inserted = len(inserted)
                changes.add(map(call_of, inserted))
            traces_inserted = (
                conn.executemany(
                    sql.INSERT_TRACE, [(*row, trace_start_us(row, now_us)) for row in completions]
                ).rowcount
                if completions
                else 0
            )
            _apply(conn, changes)
        return WriteResult(
            spans_inserted=spans_inserted,
            spans_duplicate=len(kept) - spans_inserted,
            spans_discarded=len(span_rows) - len(kept),
            traces_inserted=traces_inserted,
            traces_duplicate=len(completions) - traces_inserted,
            traces_dropped=len(drops),
            rejected=tuple(rejected),
        )

    # -- spans and traces ------------------------------------------------------------------

    def get_span(self, span_id: str) -> dict[str, Any] | None:
        with self._reading() as conn:
            row = conn.execute(sql.GET_SPAN, (query_text(span_id),)).fetchone()
        return None if row is None else parse(row[0])

    def trace_spans(self, trace_id: str) -> list[dict[str, Any]]:
        with self._reading() as conn:
            rows = conn.execute(sql.TRACE_SPANS, (query_text(trace_id),)).fetchall()
        return [parse(record) for (record,) in rows]

    def subtree(self, span_id: str) -> list[dict[str, Any]]:
        with self._reading() as conn:
            rows = conn.execute(sql.SUBTREE, (query_text(span_id),)).fetchall()
        return [parse(record) for (record,) in rows]

    def get_trace(self, trace_id: str) -> dict[str, Any] | None:
        with self._reading() as conn:
            row = conn.execute(sql.GET_TRACE, (query_text(trace_id),)).fetchone()
        return None if row is None else parse(row[0])

    def trace_status(self, trace_ids_to_expected: Mapping[str, int]) -> list[str]:
        if not trace_ids_to_expected:
            return []
        with self._reading() as conn:
            counts = dict(
                conn.execute(sql.COMPLETED_SPAN_COUNTS, (_id_list(trace_ids_to_expected),))
            )
        return [
            trace_id
            for trace_id, expected in trace_ids_to_expected.items()
            if trace_id in counts and counts[trace_id] >= expected
        ]

    def newest_roots(self, key: str, limit: int) -> list[dict[str, Any]]:
        limit = check_limit(limit)
        with self._reading() as conn:
            rows = conn.execute(sql.NEWEST_ROOTS, (query_text(key), limit)).fetchall()
        return [parse(record) for (record,) in rows]

    def roots_of_traces(self, trace_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        roots: dict[str, dict[str, Any] | None] = dict.fromkeys(trace_ids)
        if not roots:
            return roots
        with self._reading() as conn:
            rows = conn.execute(sql.ROOTS_OF_TRACES, (_id_list(roots),)).fetchall()
        for trace_id, record in rows:
            if roots.get(trace_id) is None:
                roots[trace_id] = parse(record)
        return roots

    def functions(self) -> list[FunctionStats]:
        with self._reading() as conn:
            rows = conn.execute(sql.FUNCTIONS).fetchall()
        return [stats_from_row(row) for row in rows]

    def traces(
        self,
        key: str | None = None,
        *,
        limit: int = 50,
        before_us: int | None = None,
        errors_only: bool = False,
        include_replays: bool = False,
        search: str | None = None,
    ) -> list[TraceSummary]:
        term = check_search(search)
        params = {
            "key": None if key is None else query_text(key),
            "limit": check_limit(limit),
            "before_us": None if before_us is None else int(before_us),
            "errors_only": bool(errors_only),
            "include_replays": bool(include_replays),
            "pattern": None if term is None else like_pattern(term),
        }
        with self._reading(snapshot=True) as conn:
            rows = conn.execute(
                sql.TRACES_OF_ALL_KEYS if key is None else sql.TRACES_OF_KEY, params
            ).fetchall()
            totals = _trace_totals(conn, [row[0] for row in rows])
        return trace_summaries(rows, totals)

    def replay_trace_ids(self, run_id: str) -> list[str]:
        with self._reading() as conn:
            rows = conn.execute(sql.REPLAY_TRACE_IDS, {"run_id": query_text(run_id)}).fetchall()
        return [trace_id for (trace_id,) in rows]

    def token_totals(self, trace_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        asked = list(dict.fromkeys(trace_ids))
        if not asked:
            return {}
        with self._reading() as conn:
            totals = _trace_totals(conn, asked)
        return token_dicts(asked, totals)

    def trace_models(self, trace_ids: Sequence[str]) -> dict[str, str | None]:
        asked = list(dict.fromkeys(trace_ids))
        if not asked:
            return {}
        with self._reading() as conn:
            totals = _trace_totals(conn, asked)
        return {trace_id: totals.get(trace_id, NO_TOTALS).model for trace_id in asked}

    def count_spans(self) -> int:
        with self._reading() as conn:
            (count,) = conn.execute(sql.COUNT_SPANS).fetchone()
        return int(count)

    # -- test runs ---------------------------------------------------------------------------

    def create_test_run(self, run: TestRun) -> None:
        row = run_row(run)
        items = item_rows(run.id, run.items)
        with self._writing() as conn:
            if conn.execute(sql.INSERT_RUN, row).rowcount == 0:
                raise StoreError(f"a test run with id {run.id!r} already exists")
            conn.executemany(sql.INSERT_ITEM, items)

    def complete_test_run(
        self,
        run_id: str,
        *,
        items: Sequence[TestRunItem],
        summary: Mapping[str, Any],
        status: str = "completed",
        completed_at: str | None = None,
    ) -> None:
        check_status(status)
        summary_text = json_field(summary, "summary")
        rows = item_rows(run_id, items)
        when = completed_at or utc_now_iso()
        with self._writing() as conn:
            if conn.execute(sql.COMPLETE_RUN, (status, summary_text, when, run_id)).rowcount == 0:
                raise UnknownTestRunError(run_id)
            conn.execute(sql.DELETE_ITEMS, (run_id,))
            conn.executemany(sql.INSERT_ITEM, rows)

    def set_test_run_status(self, run_id: str, status: str) -> None:
        check_status(status)
        with self._writing() as conn:
            if conn.execute(sql.SET_RUN_STATUS, (status, run_id)).rowcount == 0:
                raise UnknownTestRunError(run_id)

    def get_test_run(self, run_id: str) -> TestRun | None:
        with self._reading(snapshot=True) as conn:
            row = conn.execute(sql.GET_RUN, (query_text(run_id),)).fetchone()
            if row is None:
                return None
            items = conn.execute(sql.GET_ITEMS, (row[0],)).fetchall()
        return run_from_row(row, tuple(item_from_row(item) for item in items))

    def list_test_runs(self, key: str | None = None, *, limit: int = 50) -> list[TestRun]:
        params = {"key": None if key is None else query_text(key), "limit": check_limit(limit)}
        with self._reading() as conn:
            rows = conn.execute(sql.LIST_RUNS, params).fetchall()
        return [run_from_row(row, ()) for row in rows]

    # -- retention ---------------------------------------------------------------------------

    def prune(
        self,
        older_than_us: int,
        *,
        key: str | None = None,
        batch_size: int = 500,
        include_test_runs: bool = False,
        max_batches: int | None = None,
    ) -> PruneResult:
        plan = PrunePlan(older_than_us, key, batch_size, include_test_runs, max_batches)
        params: dict[str, Any] = {
            "cutoff": plan.older_than_us,
            "key": None if key is None else query_text(key),
            "n": plan.batch_size,
        }

        def runs(after: tuple[int, str]) -> Batch:
            statement = sql.PRUNE_RUNS if key is None else sql.PRUNE_RUNS_OF_KEY
            with self._writing() as conn:
                deleted = conn.execute(statement, params).rowcount
            return Batch(deleted, test_runs=deleted)

        def traces(after: tuple[int, str]) -> Batch:
            statement = sql.PRUNE_ROOTS if key is None else sql.PRUNE_ROOTS_OF_KEY
            keyset = {**params, "after_us": after[0], "after_id": after[1]}
            spans = 0
            with self._writing() as conn:
                rows = conn.execute(statement, keyset).fetchall()
                doomed = list(dict.fromkeys(trace_id for _, _, trace_id, kept in rows if not kept))
                if doomed:
                    ids = _id_list(doomed)
                    changes = Changes()
                    changes.remove(conn.execute(sql.CALLS_OF_TRACES, (ids,)))
                    spans = conn.execute(sql.DELETE_SPANS_OF_TRACES, (ids,)).rowcount
                    conn.execute(sql.DELETE_TRACES, (ids,))
                    _apply(conn, changes)
            kept = {trace_id for _, _, trace_id, kept in rows if kept}
            last = rows[-1] if rows else (0, "")
            return Batch(
                len(rows), (last[0], last[1]), traces=len(doomed), spans=spans, kept=len(kept)
            )

        def records(after: tuple[int, str]) -> Batch:
            keyset = {**params, "after_us": after[0], "after_id": after[1]}
            with self._writing() as conn:
                rows = conn.execute(sql.PRUNE_TRACE_RECORDS, keyset).fetchall()
                doomed = [trace_id for _, trace_id, deletable in rows if deletable]
                if doomed:
                    conn.execute(sql.DELETE_TRACES, (_id_list(doomed),))
            last = rows[-1] if rows else (0, "")
            return Batch(len(rows), (last[0], last[1]), trace_records=len(doomed))

        return run_prune(plan, runs=runs, traces=traces, records=records)

    # -- API keys ----------------------------------------------------------------------------

    def create_api_key(self, key: ApiKey) -> None:
        row = api_key_row(key)
        with self._writing() as conn:
            if conn.execute(sql.INSERT_KEY, row).rowcount == 0:
                raise StoreError(f"an API key with id {key.id!r} or the same secret already exists")

    def api_keys(self) -> list[ApiKey]:
        with self._reading() as conn:
            rows = conn.execute(sql.LIST_KEYS).fetchall()
        return [key_from_row(row) for row in rows]

    def find_api_key(self, key_hash: str) -> ApiKey | None:
        with self._reading() as conn:
            row = conn.execute(sql.FIND_KEY, (query_text(key_hash),)).fetchone()
        return None if row is None else key_from_row(row)

    def revoke_api_key(self, key_id: str, *, revoked_at: str | None = None) -> ApiKey | None:
        with self._writing() as conn:
            conn.execute(sql.REVOKE_KEY, (revoked_at or utc_now_iso(), query_text(key_id)))
            row = conn.execute(sql.GET_KEY, (query_text(key_id),)).fetchone()
        return None if row is None else key_from_row(row)

    def touch_api_key(self, key_id: str, *, used_at: str | None = None) -> None:
        with self._writing() as conn:
            conn.execute(sql.TOUCH_KEY, (used_at or utc_now_iso(), query_text(key_id)))

    # -- connections -------------------------------------------------------------------------

    def close(self) -> None:
        self._forget_parent_connections()
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    @contextlib.contextmanager
    def _reading(
        self, doing: str = "reading", *, snapshot: bool = False
    ) -> Iterator[sqlite3.Connection]:
        conn = self._acquire()
        try:
            if snapshot:
                conn.execute("BEGIN")
            yield conn
            if snapshot:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            raise sqlite_error(exc, doing, self._path, self._busy_timeout) from exc
        except BaseException:
            _rollback(conn)
            raise
        finally:
            self._release(conn)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        self._forget_parent_connections()
        lock = self._write_lock
        if not lock.acquire(timeout=self._busy_timeout):
            raise StoreBusyError(
                f"writing to {self._path}: another thread kept writing for more than"
                f" {self._busy_timeout:g}s; retry later",
            )
        try:
            with self._reading("writing to") as conn:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
        finally:
            lock.release()

    def _acquire(self) -> sqlite3.Connection:
        self._forget_parent_connections()
        with self._lock:
            if self._closed:
                raise StoreError(f"the store at {self._path} is closed")
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _release(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if not self._closed and not conn.in_transaction and len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise sqlite_error(exc, "opening", self._path, self._busy_timeout) from exc
        try:
            # Takes effect only when the file is still empty; 16 KiB pages insert ~25% faster
            # than the 4 KiB default for records of a few hundred bytes to a few KiB.
            conn.execute("PRAGMA page_size = 16384")
            self._enable_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            # 32 MiB of page cache per connection: index pages of a large store stay in memory,
            # so inserts keep their speed as the file grows (the default is 2 MiB).
            conn.execute("PRAGMA cache_size = -32768")
        except sqlite3.Error as exc:
            conn.close()
            raise sqlite_error(exc, "opening", self._path, self._busy_timeout) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        # WAL mode is stored in the file, so this is a no-op after the first open. Switching a
        # fresh file needs an exclusive lock, and SQLite answers "locked" at once, without its
        # busy handler, when another connection is switching it too: retry until the timeout.
        # (Where the file system cannot do WAL, SQLite stays in its rollback-journal mode, which
        # is slower but correct.)
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if primary_code(exc) not in BUSY_CODES or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)

    def _forget_parent_connections(self) -> None:
        pid = os.getpid()
        if pid == self._pid:
            return
        # We are a forked child. Only this thread survived the fork, so a lock the parent's
        # other threads held would never be released: replace the locks, and set aside the
        # parent's connections without touching them.
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        _INHERITED.extend(self._idle)
        self._idle = []
        self._pid = pid


def _rollback(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        conn.rollback()


def _id_list(ids: Mapping[str, object] | Iterable[str]) -> bytes:
    """Ids as the statements' "ids" CTE takes them: each one's UTF-8 ended by a 0xFF byte."""
    return b"".join(query_text(i).encode() + b"\xff" for i in ids if isinstance(i, str))


def _insert_spans(conn: sqlite3.Connection, rows: list[SpanRow]) -> list[SpanRow]:
    """Insert span rows (keep-first by id); the rows that were inserted, for the summary."""
    # Nearly always every row is new, which one executemany's count shows. Otherwise the rows
    # inserted are those past the largest rowid before: SQLite gives a new row the largest
    # rowid plus one (bitfab never sets rowids, so they stay far below the 2**63 where it
    # would pick at random), and a batch's first record of an id is the one inserted.
    (before,) = conn.execute(sql.LAST_SPAN_ROWID).fetchone()
    if conn.executemany(sql.INSERT_SPAN, rows).rowcount == len(rows):
        return rows
    fresh = {span_id for (span_id,) in conn.execute(sql.SPAN_IDS_AFTER_ROWID, (before,))}
    inserted = []
    for row in rows:
        if row.id in fresh:
            fresh.discard(row.id)
            inserted.append(row)
    return inserted


def _apply(conn: sqlite3.Connection, changes: Changes) -> None:
    """Apply a transaction's summary changes: one upsert per key, then the ends of keys that
    lost calls read again, and keys left without calls removed."""
    if not changes:
        return
    conn.executemany(sql.UPSERT_FUNCTION_STATS, changes.params())
    removed = changes.removed_keys()
    if removed:
        conn.executemany(sql.REREAD_FUNCTION_ENDS, [{"key": key} for key in removed])
        conn.executemany(sql.DELETE_UNCALLED, [(key,) for key in removed])


def _trace_totals(conn: sqlite3.Connection, trace_ids: Sequence[str]) -> dict[str, TraceTotals]:
    if not trace_ids:
        return {}
    rows = conn.execute(sql.TRACE_TOTALS, (_id_list(trace_ids),)).fetchall()
    return {row[0]: TraceTotals._make(row[1:]) for row in rows}


def _now_us() -> int:
    return time.time_ns() // 1000
