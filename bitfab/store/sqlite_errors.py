"""SQLite's errors as the store's: result codes, and the messages that say what to do."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from bitfab.exceptions import StoreError
from bitfab.store.base import StoreBusyError, StoreFullError

__all__ = ["BUSY_CODES", "create_file", "primary_code", "sqlite_error"]

# Primary SQLite result codes (the low byte of an extended code).
SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN = 10, 11, 13, 14
SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_NOTADB = 5, 6, 8, 26
BUSY_CODES = (SQLITE_BUSY, SQLITE_LOCKED)
CODES_BY_MESSAGE = (  # for Pythons before 3.11, whose exceptions carry no code
    ("database is locked", SQLITE_BUSY),
    ("database table is locked", SQLITE_LOCKED),
    ("database or disk is full", SQLITE_FULL),
    ("disk i/o error", SQLITE_IOERR),
    ("file is not a database", SQLITE_NOTADB),
    ("database disk image is malformed", SQLITE_CORRUPT),
    ("unable to open database file", SQLITE_CANTOPEN),
    ("readonly database", SQLITE_READONLY),
)


def sqlite_error(exc: sqlite3.Error, doing: str, path: str, busy_timeout: float) -> StoreError:
    """The store's error for a sqlite3 exception met while ``doing`` something to ``path``."""
    code = primary_code(exc)
    detail = str(exc)
    name = getattr(exc, "sqlite_errorname", None)
    if name:
        detail = f"{detail} ({name})"
    if code in BUSY_CODES:
        return StoreBusyError(
            f"{doing} {path}: the database stayed locked by another connection for"
            f" {busy_timeout:g}s ({detail}); retry later",
        )
    if code in (SQLITE_FULL, SQLITE_IOERR):
        return StoreFullError(f"{doing} {path} failed: {detail}; free disk space or check the disk")
    if code == SQLITE_NOTADB:
        return StoreError(f"{path} is not a SQLite database ({detail})")
    if code == SQLITE_CORRUPT:
        return StoreError(f"{path} is corrupt ({detail}); restore it from a backup")
    if code == SQLITE_CANTOPEN:
        return StoreError(f"cannot open {path} ({detail}); check the path")
    if code == SQLITE_READONLY:
        return StoreError(f"{path} is read-only ({detail}); check its permissions")
    return StoreError(f"{doing} {path} failed: {detail}")


def create_file(path: str) -> None:
    """Create the database file and its directory, readable by the owner only (traces hold
    arguments and outputs); an existing file is left as it is."""
    try:
        Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"cannot create the store at {path}: {exc.strerror}") from exc
    os.close(fd)


def primary_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF
    message = str(exc).lower()
    for fragment, fallback in CODES_BY_MESSAGE:
        if fragment in message:
            return fallback
    return None
