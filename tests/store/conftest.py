"""The ``store`` fixture: every backend-independent test runs against each backend.

SQLite gets a file in the test's temp dir; PostgreSQL a fresh schema of the database named by
``BITFAB_TEST_PG`` (see ``tests/pg.py``), dropped after the test. Without that variable the
PostgreSQL cases skip, saying how to turn them on.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bitfab.store import SQLiteStore, Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pg
from pg import PG_URL, SKIP_REASON, fresh_schema

BACKENDS = [
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.skipif(PG_URL is None, reason=SKIP_REASON)),
]


@contextlib.contextmanager
def open_backend(backend: str, tmp_path: Path) -> Iterator[Store]:
    """A fresh, empty store of ``backend``, closed (and its schema dropped) afterwards."""
    if backend == "sqlite":
        with SQLiteStore(tmp_path / "bitfab.db") as store:
            yield store
        return
    from bitfab.store.postgres import PostgresStore

    with fresh_schema() as (url, _), PostgresStore(url) as store:
        yield store


def _catalog(store: Store) -> list[tuple[Any, ...]]:
    if isinstance(store, SQLiteStore):
        with contextlib.closing(sqlite3.connect(store.path)) as conn:
            return conn.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name"
            ).fetchall()
    from bitfab.store.postgres import PostgresStore

    if isinstance(store, PostgresStore):
        return pg.catalog(store.schema)
    raise AssertionError(f"no catalog query for {store!r}")


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh, empty store of each backend, closed after the test."""
    with open_backend(request.param, tmp_path) as opened:
        yield opened


@pytest.fixture
def catalog(store: Store) -> Callable[[], list[tuple[Any, ...]]]:
    """Reads the store's schema catalog (tables, columns, indexes) through a separate connection."""
    return lambda: _catalog(store)
