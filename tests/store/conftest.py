"""The ``store`` fixture: every backend-independent test runs against each backend.

Only SQLite exists now; a PostgreSQL backend adds ``"postgres"`` to ``BACKENDS`` and a branch
to ``_open`` and ``_catalog``.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bitfab.store import SQLiteStore, Store

BACKENDS = ["sqlite"]


def _open(backend: str, tmp_path: Path) -> Store:
    if backend == "sqlite":
        return SQLiteStore(tmp_path / "bitfab.db")
    raise AssertionError(f"unknown backend {backend}")


def _catalog(store: Store) -> list[tuple[Any, ...]]:
    if isinstance(store, SQLiteStore):
        with contextlib.closing(sqlite3.connect(store.path)) as conn:
            return conn.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name"
            ).fetchall()
    raise AssertionError(f"no catalog query for {store!r}")


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh, empty store of each backend, closed after the test."""
    opened = _open(request.param, tmp_path)
    yield opened
    opened.close()


@pytest.fixture
def catalog(store: Store) -> Callable[[], list[tuple[Any, ...]]]:
    """Reads the store's schema catalog (tables, indexes) through a separate connection."""
    return lambda: _catalog(store)
