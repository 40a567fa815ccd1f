"""The PostgreSQL store: several bitfab servers can share one database.

Same semantics as the SQLite store (the docstrings of :class:`~bitfab.store.base.Store`), over
a pool of connections (``psycopg_pool``). Writes that touch one trace from several servers at
once are kept consistent by advisory locks on traces (see ``write`` and :func:`trace_lock`), ``ON CONFLICT`` upserts
and a bounded retry of serialization failures and deadlocks. After ``fork()`` the child opens
a pool of its own on first use and never touches the parent's. The schema is versioned by
``postgres_schema``; statements are in ``postgres_sql``; connections, errors and the escaping
of NUL characters in ``postgres_conn``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psycopg

from bitfab.exceptions import StoreError
from bitfab.store import postgres_sql as sql
from bitfab.store.base import (
    ApiKey,
    FunctionStats,
    PruneResult,
    Store,
    TestRun,
    TestRunItem,
    TraceSummary,
    UnknownTestRunError,
    WriteResult,
    check_limit,
    check_search,
)
from bitfab.store.function_stats import (
    Call,
    Changes,
    call_of,
    stats_from_row,
)
from bitfab.store.postgres_conn import (
    Connections,
    escape,
    escape_row,
    lock_key,
    param,
    trace_lock,
    unescape,
    unescape_row,
)
from bitfab.store.postgres_schema import migrate
from bitfab.store.records import RecordError, SpanRow, dump_json, like_pattern, utc_now_iso
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

__all__ = ["PostgresStore"]

Conn = psycopg.Connection[Any]


class PostgresStore(Store):
    """A :class:`~bitfab.store.base.Store` in a PostgreSQL database (psycopg 3).

    Example::

        store = PostgresStore("postgresql://bitfab@db.internal/bitfab", schema="bitfab")
        store.write([span_record], [trace_record])
        store.close()

    The schema is chosen by ``schema=`` (created if missing), else by the connection's
    ``search_path``: a URL may carry one as ``?options=-csearch_path%3Dbitfab``.

    Args:
        url: a ``postgresql://`` URL (or libpq conninfo string).
        schema: the schema that holds the store's tables.
        min_size: connections kept open (default 1).
        max_size: connections opened at most, for the threads calling at once (default 10).
        connect_timeout: seconds to wait for the server when connecting (default 5).
        busy_timeout: seconds a call waits for a free connection, or for a lock another
            transaction holds, before :class:`~bitfab.store.base.StoreBusyError` (default 5).
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        busy_timeout: float = 5.0,
    ) -> None:
        self._conns = Connections(
            url,
            schema=schema,
            min_size=min_size,
            max_size=max_size,
            connect_timeout=connect_timeout,
            busy_timeout=busy_timeout,
        )
        # Opening waits for other servers' migrations, which take well under a minute.
        conn = self._conns.connect(lock_timeout=max(60.0, busy_timeout))
        try:
            name = self._conns.ensure_schema(conn)
            migrate(
                conn, lock_key("bitfab migrate " + name), self._conns.where + ", schema " + name
            )
        except psycopg.Error as exc:
            raise self._conns.error(exc, "opening") from exc
        finally:
            conn.close()
        self._trace_locks = lock_key("bitfab trace " + name)

    @property
    def schema(self) -> str:
        """The schema holding the store's tables."""
        return self._conns.schema

    def __repr__(self) -> str:
        return f"PostgresStore({self._conns.where!r}, schema={self.schema!r})"

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._conns.close()

    # -- writing ---------------------------------------------------------------------------

    def write(
        self, spans: Sequence[Mapping[str, Any]], traces: Sequence[Mapping[str, Any]] = ()
    ) -> WriteResult:
        incoming = split_batch(spans, traces)
        rejected = tuple(incoming.rejected)
        if not (incoming.spans or incoming.drops or incoming.completions):
            return WriteResult(rejected=rejected)
        # Rows in id order: two transactions inserting overlapping ids wait on each other in
        # the same order, never in a cycle. The sort is stable, so the first of two records
        # with one id is still the one inserted.
        span_params = sorted((_span_params(row, record) for row, record in incoming.spans), key=_id)
        # What each id's first record (the one inserted, if any is) adds to the summary.
        calls: dict[str, Call | None] = {}
        for row, _ in incoming.spans:
            calls.setdefault(escape(row.id), call_of(row))
        now_us = time.time_ns() // 1000
        drop_params = sorted(
            (escape_row((*row, trace_start_us(row, now_us))) for row in incoming.drops), key=_id
        )
        completion_params = sorted(
            (escape_row((*row, trace_start_us(row, now_us))) for row in incoming.completions),
            key=_id,
        )
        drop_ids = [p[0] for p in drop_params]
        span_trace_ids = list(dict.fromkeys(p[1] for p in span_params))
        # A drop and the spans of its trace, written at once by two servers: the drop holds
        # its trace's lock exclusively, span writers share it. Whichever commits second sees
        # the first (each statement below reads after the lock is held), so no span of a
        # dropped trace survives.
        exclusive: dict[int, bool] = {}
        for trace_id in span_trace_ids:
            exclusive[trace_lock(trace_id)] = False
        for trace_id in drop_ids:
            exclusive[trace_lock(trace_id)] = True
        lock_keys = sorted(exclusive)
        locks = {
            "space": self._trace_locks,
            "keys": lock_keys,
            "exclusive": [exclusive[k] for k in lock_keys],
        }

        def work(conn: Conn) -> tuple[int, int, int]:
            cur = conn.cursor()
            changes = Changes()
            if lock_keys:
                cur.execute(sql.LOCK_TRACES, locks)
            if drop_params:
                cur.executemany(sql.DROP_TRACE, drop_params)
                changes.remove(_counted(cur.execute(sql.DELETE_CALLS_OF_TRACES, (drop_ids,))))
            kept = span_params
            if span_params:
                dropped = {tid for (tid,) in cur.execute(sql.DROPPED_AMONG, (span_trace_ids,))}
                if dropped:
                    kept = [p for p in span_params if p[1] not in dropped]
            spans_inserted = traces_inserted = 0
            if kept:
                cur.executemany(sql.INSERT_SPAN_RETURNING, kept, returning=True)
                inserted = _returned_ids(cur)
                spans_inserted = len(inserted)
                changes.add(calls[span_id] for span_id in inserted)
            if completion_params:
                cur.executemany(sql.INSERT_TRACE, completion_params)
                traces_inserted = cur.rowcount
            # Last, after every other lock of the transaction is held: see _apply.
            _apply(cur, changes)
            return len(kept), spans_inserted, traces_inserted

        kept, spans_inserted, traces_inserted = self._conns.run(work, "writing to")
        return WriteResult(
            spans_inserted=spans_inserted,
            spans_duplicate=kept - spans_inserted,
            spans_discarded=len(span_params) - kept,
            traces_inserted=traces_inserted,
            traces_duplicate=len(completion_params) - traces_inserted,
            traces_dropped=len(drop_params),
            rejected=rejected,
        )

    # -- spans and traces ------------------------------------------------------------------

    def _rows(self, statement: str, params: Any, doing: str = "reading") -> list[tuple[Any, ...]]:
        def work(conn: Conn) -> list[tuple[Any, ...]]:
            return [unescape_row(row) for row in conn.execute(statement, params).fetchall()]

        return self._conns.run(work, doing, transaction=False)

    def _records(self, statement: str, params: Any) -> list[dict[str, Any]]:
        return [parse(record) for (record,) in self._rows(statement, params)]

    def get_span(self, span_id: str) -> dict[str, Any] | None:
        found = self._records(sql.GET_SPAN, (param(span_id),))
        return found[0] if found else None

    def trace_spans(self, trace_id: str) -> list[dict[str, Any]]:
        return self._records(sql.TRACE_SPANS, (param(trace_id),))

    def subtree(self, span_id: str) -> list[dict[str, Any]]:
        return self._records(sql.SUBTREE, (param(span_id),))

    def get_trace(self, trace_id: str) -> dict[str, Any] | None:
        found = self._records(sql.GET_TRACE, (param(trace_id),))
        return found[0] if found else None

    def trace_status(self, trace_ids_to_expected: Mapping[str, int]) -> list[str]:
        if not trace_ids_to_expected:
            return []
        counts = dict(self._rows(sql.COMPLETED_SPAN_COUNTS, (_ids(trace_ids_to_expected),)))
        return [
            trace_id
            for trace_id, expected in trace_ids_to_expected.items()
            if trace_id in counts and counts[trace_id] >= expected
        ]

    def newest_roots(self, key: str, limit: int) -> list[dict[str, Any]]:
        return self._records(sql.NEWEST_ROOTS, (param(key), check_limit(limit)))

    def roots_of_traces(self, trace_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        roots: dict[str, dict[str, Any] | None] = dict.fromkeys(trace_ids)
        if not roots:
            return roots
        for trace_id, record in self._rows(sql.ROOTS_OF_TRACES, (_ids(roots),)):
            if roots.get(trace_id) is None:
                roots[trace_id] = parse(record)
        return roots

    def functions(self) -> list[FunctionStats]:
        return [stats_from_row(row) for row in self._rows(sql.FUNCTIONS, ())]

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
            "key": None if key is None else param(key),
            "limit": check_limit(limit),
            "before_us": None if before_us is None else int(before_us),
            "errors_only": bool(errors_only),
            "include_replays": bool(include_replays),
            "pattern": None if term is None else like_pattern(term),
        }
        statement = sql.TRACES_OF_ALL_KEYS if key is None else sql.TRACES_OF_KEY

        def work(conn: Conn) -> tuple[list[tuple[Any, ...]], dict[str, TraceTotals]]:
            rows = [unescape_row(row) for row in conn.execute(statement, params)]
            return rows, _trace_totals(conn, [row[0] for row in rows])

        rows, totals = self._conns.run(work, "reading", snapshot=True)
        return trace_summaries(rows, totals)

    def replay_trace_ids(self, run_id: str) -> list[str]:
        rows = self._rows(sql.REPLAY_TRACE_IDS, {"run_id": param(run_id)})
        return [trace_id for (trace_id,) in rows]

    def token_totals(self, trace_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        asked = list(dict.fromkeys(trace_ids))
        if not asked:
            return {}
        totals = self._conns.run(lambda conn: _trace_totals(conn, asked), "reading")
        return token_dicts(asked, totals)

    def trace_models(self, trace_ids: Sequence[str]) -> dict[str, str | None]:
        asked = list(dict.fromkeys(trace_ids))
        if not asked:
            return {}
        totals = self._conns.run(lambda conn: _trace_totals(conn, asked), "reading")
        return {trace_id: totals.get(trace_id, NO_TOTALS).model for trace_id in asked}

    def count_spans(self) -> int:
        ((count,),) = self._rows(sql.COUNT_SPANS, ())
        return int(count)

    # -- test runs -------------------------------------------------------------------------

    def create_test_run(self, run: TestRun) -> None:
        row = escape_row(run_row(run))
        items = [escape_row(item) for item in item_rows(run.id, run.items)]

        def work(conn: Conn) -> None:
            cur = conn.cursor()
            if cur.execute(sql.INSERT_RUN, row).rowcount == 0:
                raise StoreError(f"a test run with id {run.id!r} already exists")
            if items:
                cur.executemany(sql.INSERT_ITEM, items)

        # Not run twice after a lost connection: the first may have committed.
        self._conns.run(work, "writing to", retry_lost_connection=False)

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
        update = escape_row(
            (status, json_field(summary, "summary"), completed_at or utc_now_iso(), run_id)
        )
        rows = [escape_row(item) for item in item_rows(run_id, items)]

        def work(conn: Conn) -> None:
            cur = conn.cursor()
            if cur.execute(sql.COMPLETE_RUN, update).rowcount == 0:
                raise UnknownTestRunError(run_id)
            cur.execute(sql.DELETE_ITEMS, (escape(run_id),))
            if rows:
                cur.executemany(sql.INSERT_ITEM, rows)

        self._conns.run(work, "writing to")

    def set_test_run_status(self, run_id: str, status: str) -> None:
        check_status(status)

        def work(conn: Conn) -> None:
            if conn.execute(sql.SET_RUN_STATUS, (status, param(run_id))).rowcount == 0:
                raise UnknownTestRunError(run_id)

        self._conns.run(work, "writing to")

    def get_test_run(self, run_id: str) -> TestRun | None:
        def work(conn: Conn) -> TestRun | None:
            found = conn.execute(sql.GET_RUN, (param(run_id),)).fetchone()
            if found is None:
                return None
            items = conn.execute(sql.GET_ITEMS, (found[0],)).fetchall()
            return run_from_row(
                unescape_row(found), tuple(item_from_row(unescape_row(i)) for i in items)
            )

        return self._conns.run(work, "reading", snapshot=True)

    def list_test_runs(self, key: str | None = None, *, limit: int = 50) -> list[TestRun]:
        params = {"key": None if key is None else param(key), "limit": check_limit(limit)}
        return [run_from_row(row, ()) for row in self._rows(sql.LIST_RUNS, params)]

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
            "key": None if key is None else param(key),
            "n": plan.batch_size,
        }

        def runs(after: tuple[int, str]) -> Batch:
            statement = sql.PRUNE_RUNS if key is None else sql.PRUNE_RUNS_OF_KEY

            def work(conn: Conn) -> int:
                return conn.execute(statement, params).rowcount

            deleted = self._conns.run(work, "pruning")
            return Batch(deleted, test_runs=deleted)

        def traces(after: tuple[int, str]) -> Batch:
            statement = sql.PRUNE_ROOTS if key is None else sql.PRUNE_ROOTS_OF_KEY
            keyset = {**params, "after_us": after[0], "after_id": escape(after[1])}

            def work(conn: Conn) -> tuple[list[tuple[Any, ...]], list[str], int]:
                cur = conn.cursor()
                rows = cur.execute(statement, keyset).fetchall()
                doomed = list(dict.fromkeys(trace_id for _, _, trace_id, kept in rows if not kept))
                spans = 0
                if doomed:
                    # No trace locks: these traces are older than the cutoff, and a span that
                    # reaches one of them while it is being deleted is kept (as one arriving
                    # just after would be). Locking them would hold up every writer sharing a
                    # lock bucket with one of them for the whole batch.
                    deleted = cur.execute(sql.DELETE_CALLS_OF_TRACES, (doomed,)).fetchall()
                    spans = len(deleted)
                    cur.execute(sql.DELETE_TRACES, (doomed,))
                    changes = Changes()
                    changes.remove(_counted(deleted))
                    _apply(cur, changes)
                return rows, doomed, spans

            rows, doomed, spans = self._conns.run(work, "pruning")
            kept = {trace_id for _, _, trace_id, kept in rows if kept}
            last = rows[-1] if rows else (0, "")
            return Batch(
                len(rows),
                (last[0], unescape(last[1])),
                traces=len(doomed),
                spans=spans,
                kept=len(kept),
            )

        def records(after: tuple[int, str]) -> Batch:
            keyset = {**params, "after_us": after[0], "after_id": escape(after[1])}

            def work(conn: Conn) -> tuple[list[tuple[Any, ...]], int]:
                rows = conn.execute(sql.PRUNE_TRACE_RECORDS, keyset).fetchall()
                doomed = [trace_id for _, trace_id, deletable in rows if deletable]
                if doomed:
                    conn.execute(sql.DELETE_TRACES, (doomed,))
                return rows, len(doomed)

            rows, deleted = self._conns.run(work, "pruning")
            last = rows[-1] if rows else (0, "")
            return Batch(len(rows), (last[0], unescape(last[1])), trace_records=deleted)

        return run_prune(plan, runs=runs, traces=traces, records=records)

    # -- API keys ----------------------------------------------------------------------------

    def create_api_key(self, key: ApiKey) -> None:
        row = escape_row(api_key_row(key))

        def work(conn: Conn) -> None:
            if conn.execute(sql.INSERT_KEY, row).rowcount == 0:
                raise StoreError(f"an API key with id {key.id!r} or the same secret already exists")

        self._conns.run(work, "writing to", retry_lost_connection=False)

    def api_keys(self) -> list[ApiKey]:
        return [key_from_row(row) for row in self._rows(sql.LIST_KEYS, ())]

    def find_api_key(self, key_hash: str) -> ApiKey | None:
        found = self._rows(sql.FIND_KEY, (param(key_hash),))
        return key_from_row(found[0]) if found else None

    def revoke_api_key(self, key_id: str, *, revoked_at: str | None = None) -> ApiKey | None:
        when = escape(revoked_at or utc_now_iso())

        def work(conn: Conn) -> tuple[Any, ...] | None:
            conn.execute(sql.REVOKE_KEY, (when, param(key_id)))
            return conn.execute(sql.GET_KEY, (param(key_id),)).fetchone()

        found = self._conns.run(work, "writing to")
        return None if found is None else key_from_row(unescape_row(found))

    def touch_api_key(self, key_id: str, *, used_at: str | None = None) -> None:
        when = escape(used_at or utc_now_iso())
        self._conns.run(
            lambda conn: conn.execute(sql.TOUCH_KEY, (when, param(key_id))),
            "writing to",
            transaction=False,
        )


def _returned_ids(cur: psycopg.Cursor[Any]) -> list[str]:
    """The ids an ``executemany(..., returning=True)`` of INSERT_SPAN_RETURNING inserted."""
    ids: list[str] = []
    while True:
        ids.extend(row[0] for row in cur.fetchall())
        if not cur.nextset():
            return ids


def _counted(deleted: Iterable[tuple[Any, ...]]) -> list[Call]:
    """The calls among spans deleted with DELETE_CALLS_OF_TRACES: keyed, not replays."""
    return [unescape_row(row[:10]) for row in deleted if row[0] is not None and row[10] is None]


def _apply(cur: psycopg.Cursor[Any], changes: Changes) -> None:
    """Apply a transaction's summary changes: one upsert per key, in key order, then the ends
    of keys that lost calls read again, and keys left without calls removed.

    Runs last in its transaction: every other lock it takes (trace locks, span and trace
    rows) is then held already, so transactions wait for summary rows only while holding
    summary rows, which they all lock in key order: never in a cycle.
    """
    if not changes:
        return
    cur.executemany(sql.UPSERT_FUNCTION_STATS, changes.params(escape))
    removed = [escape(key) for key in changes.removed_keys()]
    if removed:
        cur.executemany(sql.REREAD_FUNCTION_ENDS, [{"key": key} for key in removed])
        cur.execute(sql.DELETE_UNCALLED, (removed,))


def _id(row: tuple[Any, ...]) -> str:
    value: str = row[0]
    return value


def _ids(ids: Mapping[str, object] | Sequence[str]) -> list[str]:
    return [param(i) for i in ids if isinstance(i, str)]


def _span_params(row: SpanRow, record: Mapping[str, Any]) -> tuple[Any, ...]:
    # Every column comes from the record, and JSON writes U+0000 and U+0001 as \u escapes:
    # a record without "\u000" has nothing to escape (nearly all of them).
    values = escape_row(row) if "\\u000" in row.record else tuple(row)
    return (*values, _search_input(record) if row.is_root else None)


def _search_input(record: Mapping[str, Any]) -> str | None:
    """The root's ``rawSpan.span_data.input`` as JSON text, in the record's ASCII form."""
    raw = record.get("rawSpan")
    data = raw.get("span_data") if isinstance(raw, Mapping) else None
    if not isinstance(data, Mapping) or "input" not in data:
        return None
    try:
        return dump_json(data["input"])
    except RecordError:  # the whole record was dumped, so its parts can be; kept safe anyway
        return None


def _trace_totals(conn: Conn, trace_ids: Sequence[str]) -> dict[str, TraceTotals]:
    if not trace_ids:
        return {}
    rows = conn.execute(sql.TRACE_TOTALS, ([param(t) for t in trace_ids],)).fetchall()
    return {row[0]: TraceTotals._make(row[1:]) for row in map(unescape_row, rows)}
