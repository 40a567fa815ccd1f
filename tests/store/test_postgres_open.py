"""Opening a PostgreSQL store: URLs and schemas, migrations under concurrency, what isn't ours."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pg import PG_URL, SKIP_REASON, fresh_schema, schema_url
from psycopg import sql

from bitfab.exceptions import StoreError
from bitfab.store import open_store
from bitfab.store.postgres import PostgresStore
from bitfab.store.postgres_schema import LATEST_VERSION, MIGRATIONS

from .factories import span
from .processes import start_child

pytestmark = pytest.mark.skipif(PG_URL is None, reason=SKIP_REASON)

EXPECTED_SCHEMA = [(m.version, m.name) for m in MIGRATIONS]


def rows(url: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(statement.encode(), params or None).fetchall()


def run(url: str, statement: str | sql.Composed) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement.encode() if isinstance(statement, str) else statement)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_open_store_opens_postgresql_urls_in_the_urls_schema() -> None:
    """postgresql:// and postgres:// URLs give a PostgresStore on the search_path's schema."""
    with fresh_schema() as (url, schema):
        first = open_store(url)
        first.write([span("s1")])
        second = open_store(url.replace("postgresql://", "postgres://", 1))

        assert isinstance(first, PostgresStore) and isinstance(second, PostgresStore)
        assert first.schema == second.schema == schema
        assert second.get_span("s1") == span("s1")
        assert rows(url, "SELECT version, name FROM bitfab_schema ORDER BY version") == (
            EXPECTED_SCHEMA
        )
        assert LATEST_VERSION == 2
        first.close()
        second.close()


def test_the_schema_option_creates_and_uses_its_schema() -> None:
    """schema= names (and creates) the schema, even an awkward name, overriding search_path."""
    assert PG_URL is not None
    with fresh_schema() as (url, other):
        name = f'{other} "odd" name'
        try:
            with open_store(url, schema=name) as store:
                assert isinstance(store, PostgresStore)
                store.write([span("s1")])
                assert store.schema == name
            tables = rows(
                PG_URL, "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", name
            )
            assert [t for (t,) in tables] == [
                "api_keys",
                "bitfab_schema",
                "function_stats",
                "spans",
                "test_run_items",
                "test_runs",
                "traces",
            ]
            assert rows(url, "SELECT count(*) FROM pg_tables WHERE schemaname = %s", other) == [
                (0,)
            ]
        finally:
            run(PG_URL, sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def test_threads_and_processes_opening_a_fresh_schema_at_once_migrate_it_once(
    tmp_path: Path,
) -> None:
    """Eight threads and three processes racing on a new schema: all open it, one migration."""
    with fresh_schema() as (url, schema):
        target = schema + "_race"  # not created yet: the openers race to create it too
        start_at = str(time.time() + 1.5)
        snippet = """
from bitfab.store.postgres import PostgresStore
url, schema, start_at, name = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
while time.time() < start_at:
    pass
with PostgresStore(url, schema=schema) as store:
    store.write([record(name, "t-" + name)])
print("ok")
"""
        children = [start_child(snippet, url, target, start_at, f"p{n}") for n in range(3)]
        barrier = threading.Barrier(8)
        errors: list[BaseException] = []

        def open_and_write(n: int) -> None:
            try:
                barrier.wait()
                with PostgresStore(url, schema=target) as store:
                    store.write([span(f"t{n}")])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_and_write, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        outputs = []
        for child in children:
            with child:
                out, err = child.communicate(timeout=60)
            outputs.append((child.returncode, out, err))
        try:
            target_url = schema_url(url, target)
            versions = rows(target_url, "SELECT version, name FROM bitfab_schema")
            ids = [i for (i,) in rows(target_url, "SELECT id FROM spans ORDER BY id")]
        finally:
            run(url, sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(target)))

    assert errors == []
    assert outputs == [(0, "ok\n", "")] * 3
    assert versions == EXPECTED_SCHEMA
    assert ids == ["p0", "p1", "p2"] + [f"t{n}" for n in range(8)]


def test_a_schema_of_a_newer_bitfab_is_refused() -> None:
    """A version above the latest known one asks the user to upgrade."""
    with fresh_schema() as (url, schema):
        PostgresStore(url).close()
        run(url, "INSERT INTO bitfab_schema VALUES (99, 'future', '2030-01-01T00:00:00Z')")

        with pytest.raises(StoreError) as info:
            PostgresStore(url)

    assert str(info.value) == (
        f"PostgreSQL at 127.0.0.1:5432/test, schema {schema} was written by a newer bitfab"
        f" (schema version 99; this bitfab knows up to {LATEST_VERSION}); upgrade bitfab to"
        " open it"
    )


def test_another_applications_schema_is_refused() -> None:
    """A schema with tables but no bitfab_schema is left alone."""
    with fresh_schema() as (url, _):
        run(url, "CREATE TABLE customers (id integer PRIMARY KEY)")

        with pytest.raises(StoreError, match="holds tables of some other application"):
            PostgresStore(url)

        assert rows(url, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()") == [
            ("customers",)
        ]


def test_a_search_path_naming_no_existing_schema_is_a_clear_error() -> None:
    """A URL whose search_path names a missing schema says to create it or pass schema=."""
    assert PG_URL is not None
    with pytest.raises(StoreError, match=r"no schema of the search_path .* exists; create it"):
        PostgresStore(schema_url(PG_URL, "bitfab_no_such_schema"))


def test_a_server_that_is_not_there_is_a_store_error_naming_host_and_port() -> None:
    """Connection refused: StoreError naming host, port and what to check; no psycopg error."""
    port = free_port()

    with pytest.raises(StoreError) as info:
        open_store(f"postgresql://postgres@127.0.0.1:{port}/test", connect_timeout=2)

    assert type(info.value) is StoreError
    assert str(info.value).startswith(f"cannot reach PostgreSQL at 127.0.0.1:{port}/test (")
    assert str(info.value).endswith(
        "check that the server is running and that the URL's host, port and database are right"
    )
    assert isinstance(info.value.__cause__, psycopg.OperationalError)


def test_a_password_in_the_url_never_appears_in_errors() -> None:
    """Errors name host, port and database, not the credentials."""
    port = free_port()

    with pytest.raises(StoreError) as info:
        PostgresStore(f"postgresql://bitfab:s3cret-pw@127.0.0.1:{port}/test")

    assert "s3cret-pw" not in str(info.value)


def test_without_psycopg_open_store_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing driver gives StoreError with the pip command, not an ImportError."""
    for name in [m for m in sys.modules if m == "psycopg" or m.startswith("bitfab.store.postgres")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "psycopg", None)

    with pytest.raises(StoreError, match=r"pip install 'bitfab\[postgres\]'"):
        open_store("postgresql://postgres@127.0.0.1/test")


def test_bad_pool_options_are_value_errors() -> None:
    """Sizes and timeouts out of range are refused before connecting."""
    assert PG_URL is not None
    with pytest.raises(ValueError, match="min_size"):
        PostgresStore(PG_URL, min_size=3, max_size=2)
    with pytest.raises(ValueError, match="connect_timeout"):
        PostgresStore(PG_URL, connect_timeout=0)


def test_connections_run_without_jit() -> None:
    """The store's short queries never pay JIT compilation (a planner estimate on a table not
    yet analyzed can cross the threshold)."""
    with fresh_schema() as (url, _):
        store = PostgresStore(url)
        try:
            ((setting,),) = store._conns.run(
                lambda conn: conn.execute("SHOW jit").fetchall(), "reading"
            )
        finally:
            store.close()
    assert setting == "off"


def test_a_write_of_many_traces_holds_few_locks_and_many_such_writes_succeed() -> None:
    """Traces share TRACE_LOCK_BUCKETS advisory locks: 512 one-span traces take at most 64,
    so two dozen such batches at once (two servers' worth) fit PostgreSQL's lock table."""
    from bitfab.store.postgres_conn import TRACE_LOCK_BUCKETS, trace_lock

    ids = [f"01a21d{n:030x}" for n in range(512)]
    assert len({trace_lock(t) for t in ids}) <= TRACE_LOCK_BUCKETS == 64
    assert all(0 <= trace_lock(t) < 64 for t in ids)

    with fresh_schema() as (url, _):
        store = PostgresStore(url, max_size=24, busy_timeout=30)
        errors: list[BaseException] = []

        def batch(n: int) -> None:
            try:
                result = store.write([span(f"s{n}-{i}", trace=f"t{n}-{i}") for i in range(512)])
                assert result.spans_inserted == 512
            except BaseException as exc:
                errors.append(exc)

        try:
            threads = [threading.Thread(target=batch, args=(n,)) for n in range(24)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
            assert errors == []
            assert store.count_spans() == 24 * 512
        finally:
            store.close()
