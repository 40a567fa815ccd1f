"""Where recorded spans, traces and test runs are kept.

``open_store`` picks the backend from a path or URL::

    from bitfab.store import open_store

    store = open_store(".bitfab/bitfab.db")  # or "sqlite:///.bitfab/bitfab.db"
    store = open_store("postgresql://bitfab@db.internal/bitfab", schema="bitfab")
"""

from __future__ import annotations

import os
import re
from typing import Any

from bitfab.exceptions import StoreError
from bitfab.store.base import (
    MAX_LIMIT,
    FunctionStats,
    PruneResult,
    Rejection,
    Store,
    StoreBusyError,
    StoreFullError,
    TestRun,
    TestRunItem,
    TraceSummary,
    UnknownTestRunError,
    WriteResult,
)
from bitfab.store.sqlite import SQLiteStore

__all__ = [
    "MAX_LIMIT",
    "FunctionStats",
    "PruneResult",
    "Rejection",
    "SQLiteStore",
    "Store",
    "StoreBusyError",
    "StoreError",
    "StoreFullError",
    "TestRun",
    "TestRunItem",
    "TraceSummary",
    "UnknownTestRunError",
    "WriteResult",
    "is_postgres_url",
    "open_store",
]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_POSTGRES_SCHEMES = ("postgresql", "postgres")


def is_postgres_url(url_or_path: str | os.PathLike[str]) -> bool:
    """Whether ``open_store`` opens this as a PostgreSQL store (``postgresql://``, ``postgres://``)."""
    match = _SCHEME.match(os.fspath(url_or_path))
    return match is not None and match.group(1).lower() in _POSTGRES_SCHEMES


def open_store(url_or_path: str | os.PathLike[str], **options: Any) -> Store:
    """Open the store at a file path or URL.

    ``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db`` name a SQLite file, as
    does a plain path. ``postgresql://`` (or ``postgres://``) URLs open
    :class:`~bitfab.store.postgres.PostgresStore`, which needs ``pip install
    'bitfab[postgres]'``. ``options`` go to the backend: ``busy_timeout=`` for both;
    ``schema=``, ``min_size=``, ``max_size=`` and ``connect_timeout=`` for PostgreSQL.

    Raises:
        StoreError: for a scheme this bitfab has no backend for, a missing driver, or when
            the store cannot be opened.
    """
    text = os.fspath(url_or_path)
    match = _SCHEME.match(text)
    if match is None:
        return SQLiteStore(text, **options)
    scheme = match.group(1).lower()
    if scheme == "sqlite":
        rest = text[match.end() :]
        if not rest.startswith("/"):
            raise StoreError(f"a SQLite URL has no host: sqlite:///<path>, not {text!r}")
        return SQLiteStore(rest[1:], **options)
    if scheme in _POSTGRES_SCHEMES:
        try:
            from bitfab.store.postgres import PostgresStore
        except ImportError as exc:
            raise StoreError(
                f"the PostgreSQL store needs psycopg 3 ({exc}); pip install 'bitfab[postgres]'"
            ) from None
        return PostgresStore(text, **options)
    raise StoreError(
        f"no store for {scheme}:// URLs; use a SQLite path, a sqlite:/// URL or a postgresql:// URL"
    )
