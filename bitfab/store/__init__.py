"""Where recorded spans, traces and test runs are kept.

``open_store`` picks the backend from a path or URL::

    from bitfab.store import open_store

    store = open_store(".bitfab/bitfab.db")  # or "sqlite:///.bitfab/bitfab.db"
"""

from __future__ import annotations

import os
import re
from typing import Any

from bitfab.exceptions import StoreError
from bitfab.store.base import (
    MAX_LIMIT,
    FunctionStats,
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
    "open_store",
]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def open_store(url_or_path: str | os.PathLike[str], **options: Any) -> Store:
    """Open the store at a file path or URL.

    ``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db`` name a SQLite file, as
    does a plain path. ``options`` go to the backend (``busy_timeout=`` for SQLite).

    Raises:
        StoreError: for a scheme this bitfab has no backend for (PostgreSQL is not available
            yet), or when the store cannot be opened.
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
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        raise StoreError(
            "the PostgreSQL store is not available yet in this bitfab; use a SQLite path"
            " (for example sqlite:///.bitfab/bitfab.db)"
        )
    raise StoreError(f"no store for {scheme}:// URLs; use a SQLite path or sqlite:/// URL")
