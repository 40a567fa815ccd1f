"""Opening a SQLite store: paths and URLs, pragmas, versioned migrations, files that aren't ours."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bitfab.exceptions import StoreError
from bitfab.store import SQLiteStore, open_store
from bitfab.store.migrations import LATEST_VERSION, MIGRATIONS, migrate

from .factories import BASE_US, span
from .processes import run_child, start_child


def query(path: Path | str, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


def schema_rows(path: Path | str) -> list[tuple[Any, ...]]:
    return query(path, "SELECT version, name FROM bitfab_schema ORDER BY version")


EXPECTED_SCHEMA = [(m.version, m.name) for m in MIGRATIONS]


def test_fresh_file_gets_the_schema_in_wal_mode_with_private_permissions(tmp_path: Path) -> None:
    """Parent directories are created; the file is WAL, owner-only and at the latest version."""
    path = tmp_path / "a" / "b" / "bitfab.db"

    with SQLiteStore(path) as store:
        assert store.path == str(path)

    assert (
        schema_rows(path)
        == EXPECTED_SCHEMA
        == [
            (1, "spans, traces, test runs"),
            (2, "api keys"),
            (3, "retention"),
            (4, "function stats"),
        ]
    )
    assert LATEST_VERSION == 4
    assert query(path, "PRAGMA journal_mode") == [("wal",)]
    assert query(path, "PRAGMA page_size") == [(16384,)]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_reopening_keeps_data_and_applies_no_migration_twice(tmp_path: Path) -> None:
    """A second open finds the schema current and the data in place."""
    path = tmp_path / "bitfab.db"
    with SQLiteStore(path) as store:
        store.write([span("s1")])

    with SQLiteStore(path) as store:
        assert store.get_span("s1") == span("s1")

    assert schema_rows(path) == EXPECTED_SCHEMA


def test_a_database_from_a_newer_bitfab_is_refused(tmp_path: Path) -> None:
    """A schema version above the latest known one asks the user to upgrade."""
    path = tmp_path / "bitfab.db"
    SQLiteStore(path).close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("INSERT INTO bitfab_schema VALUES (99, 'future', '2030-01-01T00:00:00Z')")
        conn.commit()

    with pytest.raises(StoreError) as info:
        SQLiteStore(path)

    assert str(info.value) == (
        f"{path} was written by a newer bitfab (schema version 99; this bitfab knows up to"
        f" {LATEST_VERSION}); upgrade bitfab to open it"
    )


def test_a_file_that_is_not_sqlite_is_a_store_error_naming_the_path(tmp_path: Path) -> None:
    """Garbage bytes raise StoreError with the path, caused by (not being) the sqlite3 error."""
    path = tmp_path / "bitfab.db"
    path.write_bytes(b"this is not a database, just some text\n" * 200)

    with pytest.raises(StoreError) as info:
        SQLiteStore(path)

    assert type(info.value) is StoreError
    assert str(info.value).startswith(f"{path} is not a SQLite database (file is not a database")
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


def test_another_applications_database_is_refused(tmp_path: Path) -> None:
    """A SQLite file with tables but no bitfab schema is left alone."""
    path = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
        conn.commit()

    with pytest.raises(StoreError, match="is a SQLite database of some other application"):
        SQLiteStore(path)

    assert query(path, "SELECT name FROM sqlite_master") == [("customers",)]


def test_paths_that_cannot_be_a_store(tmp_path: Path) -> None:
    """In-memory names and directories raise StoreError with a clear message."""
    with pytest.raises(StoreError, match="needs a file path, not ':memory:'"):
        SQLiteStore(":memory:")
    with pytest.raises(StoreError, match=f"cannot open {tmp_path}"):
        SQLiteStore(tmp_path)


def test_open_store_understands_paths_and_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain paths and sqlite:/// URLs open SQLite; unknown schemes are refused."""
    monkeypatch.chdir(tmp_path)
    opened = [
        open_store("plain.db"),
        open_store("sqlite:///relative/r.db"),
        open_store(f"sqlite:///{tmp_path}/absolute.db", busy_timeout=1.0),
    ]
    for store in opened:
        store.close()

    assert [store.path for store in opened if isinstance(store, SQLiteStore)] == [
        str(tmp_path / "plain.db"),
        str(tmp_path / "relative" / "r.db"),
        str(tmp_path / "absolute.db"),
    ]
    with pytest.raises(StoreError, match="no store for mysql:// URLs"):
        open_store("mysql://localhost/bitfab")


def test_threads_opening_a_fresh_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    """Eight threads racing to open a new file all succeed and the schema is applied once."""
    path = tmp_path / "bitfab.db"
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def open_and_write(n: int) -> None:
        try:
            barrier.wait()
            with SQLiteStore(path) as store:
                store.write([span(f"s{n}")])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_and_write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert schema_rows(path) == EXPECTED_SCHEMA
    assert query(path, "SELECT COUNT(*) FROM spans") == [(8,)]


def test_processes_opening_a_fresh_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    """Three processes released at the same instant all open the new file; one migration."""
    path = tmp_path / "bitfab.db"
    start_at = str(time.time() + 1.0)
    snippet = """
from bitfab.store import SQLiteStore
path, start_at, name = sys.argv[1], float(sys.argv[2]), sys.argv[3]
while time.time() < start_at:
    pass
with SQLiteStore(path) as store:
    store.write([record(name, "t-" + name)])
print("ok")
"""
    children = [start_child(snippet, str(path), start_at, f"p{n}") for n in range(3)]
    outputs = []
    for child in children:
        with child:
            out, err = child.communicate(timeout=30)
        outputs.append((child.returncode, out, err))

    assert outputs == [(0, "ok\n", "")] * 3
    assert schema_rows(path) == EXPECTED_SCHEMA
    assert query(path, "SELECT id FROM spans ORDER BY id") == [("p0",), ("p1",), ("p2",)]


def test_a_child_process_sees_the_parents_writes(tmp_path: Path) -> None:
    """Two processes on one file: what one commits, the other reads."""
    path = tmp_path / "bitfab.db"
    with SQLiteStore(path) as store:
        store.write([span("from-parent")])
        out = run_child(
            """
from bitfab.store import SQLiteStore
with SQLiteStore(sys.argv[1]) as store:
    print(store.get_span("from-parent")["id"])
    store.write([record("from-child", "t-child")])
""",
            str(path),
        )
        assert out == "from-parent\n"
        assert store.get_span("from-child") is not None
    assert not os.path.exists(f"{path}-wal")


def test_migration_3_dates_the_trace_records_of_an_older_file(tmp_path: Path) -> None:
    """A version-2 file opened by this bitfab gets start_us from each trace record's times."""
    path = tmp_path / "bitfab.db"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        migrate(conn, str(path), MIGRATIONS[:2])
        conn.execute(
            "INSERT INTO traces (id, completed, started_at, ended_at, dropped, record)"
            " VALUES ('a', 1, '2026-11-27T10:00:00.250000Z', NULL, 0, '{}'),"
            " ('b', 1, NULL, '2026-11-27T11:00:00Z', 0, '{}'), ('c', 1, NULL, NULL, 1, '{}')"
        )

    SQLiteStore(path).close()
    dated = dict(query(path, "SELECT id, start_us FROM traces"))

    assert abs(dated["a"] - (BASE_US + 250_000)) < 1_000
    assert abs(dated["b"] - (BASE_US + 3_600_000_000)) < 1_000
    assert abs(dated["c"] - time.time_ns() // 1_000) < 60_000_000
    assert schema_rows(path) == EXPECTED_SCHEMA
