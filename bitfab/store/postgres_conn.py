"""Connections of the PostgreSQL store: the pool, fork safety, retries, errors, NUL escaping.

Everything psycopg-specific that is not a statement lives here, so ``postgres.py`` reads as the
store's logic. No psycopg exception leaves this module's :meth:`Connections.run`: each becomes
a :class:`~bitfab.exceptions.StoreError` (or its busy/full subclasses) naming where the
database is, never the password.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from bitfab.exceptions import StoreError
from bitfab.store.base import StoreBusyError, StoreFullError
from bitfab.store.records import query_text

__all__ = [
    "Connections",
    "escape",
    "escape_row",
    "lock_key",
    "param",
    "unescape",
    "unescape_row",
]

T = TypeVar("T")

# Pools a forked child inherited from its parent. The child must neither use nor close them
# (closing would end the parent's sessions on the shared sockets), so they are kept referenced
# here and never finalized; psycopg itself skips PQfinish for connections of another pid.
_INHERITED: list[ConnectionPool[Any]] = []

# Transactions that lost a serialization or deadlock race, or found PostgreSQL's lock table
# full, are run again this many times in all.
_ATTEMPTS = 5

# Failures of a transaction that leave nothing behind (it was rolled back) and that another
# attempt a moment later usually avoids. OutOfMemory (53200) is, in practice, "out of shared
# memory": the lock table (about max_locks_per_transaction x max_connections, 64 x 100 by
# default, for the whole database server) is full. A write holds at most TRACE_LOCK_BUCKETS
# advisory locks, so bitfab alone fills it only with ~100 writes at once; other applications
# on the same server may hold locks too. It empties as transactions commit.
_TRANSIENT = (
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.OutOfMemory,
)

# -- NUL escaping ----------------------------------------------------------------------------
#
# PostgreSQL text cannot hold U+0000. Every text value the store writes goes through
# ``escape``: U+0001 becomes U+0001 U+0002 and U+0000 becomes U+0001 U+0001; ``unescape``
# undoes it. The mapping is injective (so equality is kept) and keeps byte order (so
# ``ORDER BY`` under COLLATE "C" sorts as SQLite's BINARY does), and it is the identity on
# text with neither character, which is nearly all text and every stored JSON record (JSON
# writes control characters as \u escapes).

_ESCAPED = re.compile("\x01([\x01\x02])")


def escape(value: str) -> str:
    """``value`` with U+0000 and U+0001 escaped, as the PostgreSQL store stores text."""
    if "\x00" in value or "\x01" in value:
        return value.replace("\x01", "\x01\x02").replace("\x00", "\x01\x01")
    return value


def _unescaped(match: re.Match[str]) -> str:
    return "\x00" if match.group(1) == "\x01" else "\x01"


def unescape(value: str) -> str:
    """The text ``escape`` was given."""
    if "\x01" not in value:
        return value
    return _ESCAPED.sub(_unescaped, value)


def param(value: object) -> str:
    """A text query parameter: surrogates replaced (as in stored columns), then escaped."""
    return escape(query_text(value))


def escape_row(row: Sequence[Any]) -> tuple[Any, ...]:
    """A row of values with every string escaped."""
    return tuple(escape(v) if isinstance(v, str) else v for v in row)


def unescape_row(row: Sequence[Any]) -> tuple[Any, ...]:
    """A row read back with every string unescaped."""
    return tuple(unescape(v) if isinstance(v, str) else v for v in row)


TRACE_LOCK_BUCKETS = 64
"""Traces share this many advisory locks (a trace's is :func:`trace_lock`).

One lock per trace made a batch of 512 one-span traces hold 512 locks until it committed, and
PostgreSQL's lock table (about max_locks_per_transaction x max_connections, 6,400 by default,
for the whole database server) filled up with ~15 such batches in flight. Sharing buckets
costs nothing for span writers, whose locks are shared; only a drop (exclusive, one trace,
rare) waits for the writers of its bucket."""


def trace_lock(trace_id: str) -> int:
    """The advisory lock (within the store's lock space) that guards ``trace_id``."""
    return lock_key(trace_id) % TRACE_LOCK_BUCKETS


def lock_key(text: str) -> int:
    """A signed 32-bit key for an advisory lock named by ``text``; the same in every process."""
    value = zlib.crc32(text.encode("utf-8", "surrogatepass"))
    return value - 2**32 if value >= 2**31 else value


# -- connections -----------------------------------------------------------------------------


class Connections:
    """A pool of autocommit connections to one database and schema, safe across forks.

    Args:
        url: a libpq URL or conninfo string.
        schema: the schema to use (created if missing), or None for the connection's
            ``search_path``.
        min_size, max_size: connections the pool keeps open at least, and opens at most.
        connect_timeout: seconds to wait for the server when connecting.
        busy_timeout: seconds a call waits for a free connection or for a lock held by
            another transaction before :class:`StoreBusyError`.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None,
        min_size: int,
        max_size: int,
        connect_timeout: float,
        busy_timeout: float,
    ) -> None:
        try:
            info = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise StoreError(f"not a PostgreSQL URL or conninfo string: {exc}") from None
        if min_size < 0 or max_size < 1 or min_size > max_size:
            raise ValueError("need 0 <= min_size <= max_size and max_size >= 1")
        if connect_timeout <= 0 or busy_timeout < 0:
            raise ValueError("connect_timeout must be > 0 and busy_timeout >= 0 seconds")
        host = str(info.get("host") or info.get("hostaddr") or "localhost")
        port = str(info.get("port") or "5432")
        self.where = f"PostgreSQL at {host}:{port}/{info.get('dbname') or info.get('user') or ''}"
        self._url = url
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            # libpq takes whole seconds; at least 2, as it advises.
            "connect_timeout": max(2, math.ceil(connect_timeout)),
        }
        if "application_name" not in info:
            self._kwargs["application_name"] = "bitfab"
        self._requested_schema = schema
        self.schema = schema or ""
        self._min_size = min_size
        self._max_size = max_size
        self._busy_timeout = float(busy_timeout)
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._pool: ConnectionPool[Any] | None = None
        self._closed = False

    # -- opening -------------------------------------------------------------------------

    def connect(self, *, lock_timeout: float | None = None) -> psycopg.Connection[Any]:
        """A new connection outside the pool, configured; errors as :class:`StoreError`."""
        try:
            conn = psycopg.connect(self._url, **self._kwargs)
        except psycopg.Error as exc:
            raise self.error(exc, "connecting to") from exc
        try:
            self._configure(conn, lock_timeout)
        except psycopg.Error as exc:
            conn.close()
            raise self.error(exc, "connecting to") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _configure(self, conn: psycopg.Connection[Any], lock_timeout: float | None = None) -> None:
        timeout = self._busy_timeout if lock_timeout is None else lock_timeout
        # lock_timeout turns a wait for a row or advisory lock into SQLSTATE 55P03 (busy).
        conn.execute(
            "SELECT pg_catalog.set_config('lock_timeout', %s, false)",
            (f"{max(1, round(timeout * 1000))}ms",),
        )
        # The store's queries are short index walks; JIT compiling only pays off for long
        # analytic scans, and on a table not yet analyzed (a new or bulk-loaded store) the
        # planner's estimates cross the JIT threshold and one replay/start spent ~240 ms of
        # ~300 ms compiling (benchmarks/scale.py).
        conn.execute("SELECT pg_catalog.set_config('jit', 'off', false)")
        if self._requested_schema is not None:
            conn.execute(
                "SELECT pg_catalog.set_config('search_path', %s, false)",
                (pgsql.Identifier(self._requested_schema).as_string(conn),),
            )

    def ensure_schema(self, conn: psycopg.Connection[Any]) -> str:
        """Create the requested schema if missing; the schema the store's tables live in."""
        if self._requested_schema is not None:
            statement = pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                pgsql.Identifier(self._requested_schema)
            )
            with contextlib.suppress(psycopg.errors.UniqueViolation):
                conn.execute(statement)  # two processes at once: one of them wins the race
        row = conn.execute("SELECT pg_catalog.current_schema()").fetchone()
        if row is None or row[0] is None:
            search_path = conn.execute("SHOW search_path").fetchone()
            raise StoreError(
                f"{self.where}: no schema of the search_path ({search_path[0] if search_path else ''})"
                " exists; create it, or pass schema= (e.g. open_store(url, schema='bitfab'))"
            )
        self.schema = str(row[0])
        return self.schema

    def _new_pool(self) -> ConnectionPool[Any]:
        return ConnectionPool(
            self._url,
            kwargs=self._kwargs,
            min_size=self._min_size,
            max_size=self._max_size,
            timeout=self._busy_timeout,
            configure=self._configure,
            name="bitfab",
            open=True,
        )

    # -- running -------------------------------------------------------------------------

    def run(
        self,
        work: Callable[[psycopg.Connection[Any]], T],
        doing: str,
        *,
        transaction: bool = True,
        snapshot: bool = False,
        retry_lost_connection: bool = True,
    ) -> T:
        """``work(conn)`` on a pooled connection, in a transaction unless told otherwise.

        A transaction that fails with a serialization failure, a deadlock or a full lock
        table is run again, a few times, after a short random pause; one whose connection
        turns out to be dead (the server restarted since the pool opened it) once more on a
        fresh connection, unless ``retry_lost_connection`` is False (for work that must not
        run twice). ``snapshot`` makes a read-only REPEATABLE READ transaction: several reads
        that see one state.
        """
        attempt = 0
        lost_retried = not retry_lost_connection
        while True:
            attempt += 1
            try:
                with self._connection() as conn:
                    if not transaction:
                        return work(conn)
                    with conn.transaction():
                        if snapshot:
                            conn.execute(
                                "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"
                            )
                        return work(conn)
            except _TRANSIENT as exc:
                if attempt >= _ATTEMPTS:
                    raise self.error(exc, doing) from exc
                time.sleep(random.uniform(0.005, 0.02) * attempt)  # jitter
            except PoolTimeout as exc:
                raise self.error(exc, doing) from exc
            except psycopg.OperationalError as exc:
                if lost_retried or not _connection_lost(exc):
                    raise self.error(exc, doing) from exc
                lost_retried = True
                self._drop_dead_connections()
            except psycopg.Error as exc:
                raise self.error(exc, doing) from exc

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        pool = self._current_pool()
        with pool.connection() as conn:
            yield conn

    def _current_pool(self) -> ConnectionPool[Any]:
        self._forget_parent_pool()
        with self._lock:
            if self._closed:
                raise StoreError(f"the store at {self.where} is closed")
            if self._pool is None:
                self._pool = self._new_pool()  # opened lazily: first use, or after a fork
            return self._pool

    def _drop_dead_connections(self) -> None:
        with contextlib.suppress(psycopg.Error):
            pool = self._pool
            if pool is not None:
                pool.check()  # tests each idle connection; replaces the dead ones

    def _forget_parent_pool(self) -> None:
        pid = os.getpid()
        if pid == self._pid:
            return
        # A forked child: only this thread survived, and the pool's sockets are the parent's
        # sessions. Set the pool aside untouched; the next call opens the child's own.
        self._lock = threading.Lock()
        if self._pool is not None:
            _INHERITED.append(self._pool)
            self._pool = None
        self._pid = pid

    def close(self) -> None:
        """Close the pool (waiting for connections in use); later calls raise StoreError."""
        self._forget_parent_pool()
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    # -- errors --------------------------------------------------------------------------

    def error(self, exc: BaseException, doing: str) -> StoreError:
        """The store's error for a psycopg (or pool) exception."""
        where = self.where + (f", schema {self.schema}" if self.schema else "")
        if isinstance(exc, PoolTimeout):
            reason = self._why_no_connection()
            if reason is not None:
                return StoreError(_unreachable(self.where, reason))
            return StoreBusyError(
                f"{doing} {where}: all {self._max_size} connections stayed in use for"
                f" {self._busy_timeout:g}s; retry later, or open the store with a larger"
                " max_size",
            )
        sqlstate = getattr(exc, "sqlstate", None) or ""
        detail = _detail(exc)
        if isinstance(
            exc,
            (
                psycopg.errors.SerializationFailure,
                psycopg.errors.DeadlockDetected,
                psycopg.errors.LockNotAvailable,
                psycopg.errors.QueryCanceled,
            ),
        ):
            return StoreBusyError(
                f"{doing} {where}: another transaction held the rows or locks needed ({detail});"
                " retry later",
            )
        if isinstance(exc, psycopg.errors.OutOfMemory):  # 53200: the lock table is full
            return StoreBusyError(
                f"{doing} {where}: PostgreSQL ran out of shared memory ({detail}); retry later,"
                " or raise its max_locks_per_transaction"
            )
        if sqlstate == "53100" or sqlstate == "58030":  # disk_full, io_error
            return StoreFullError(
                f"{doing} {where} failed: {detail}; free disk space on the server"
            )
        if sqlstate == "42501":  # insufficient_privilege
            return StoreError(
                f"{doing} {where}: permission denied ({detail}); grant the user CREATE and USAGE"
                " on the schema"
            )
        # 08: connection exceptions; 57P: the server shut down or is starting; no SQLSTATE at
        # all: libpq could not connect or lost the connection.
        if isinstance(exc, psycopg.OperationalError) and _connection_lost(exc):
            return StoreError(_unreachable(self.where, detail))
        return StoreError(
            f"{doing} {where} failed: {detail}" + (f" ({sqlstate})" if sqlstate else "")
        )

    def _why_no_connection(self) -> str | None:
        """Why a fresh connection cannot be made, or None if one can (the pool is just busy)."""
        try:
            with psycopg.connect(self._url, **self._kwargs):
                return None
        except psycopg.Error as exc:
            return _detail(exc)


def _connection_lost(exc: psycopg.OperationalError) -> bool:
    sqlstate = exc.sqlstate or ""
    return sqlstate == "" or sqlstate.startswith("08") or sqlstate.startswith("57P")


def _detail(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(text.split()) if text else type(exc).__name__


def _unreachable(where: str, detail: str) -> str:
    return (
        f"cannot reach {where} ({detail}); check that the server is running and that the URL's"
        " host, port and database are right"
    )
