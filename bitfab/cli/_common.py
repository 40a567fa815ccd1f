"""Shared pieces of the ``bitfab`` command: errors, the store flags, table printing."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from bitfab.config import display_url
from bitfab.store import FunctionStats, Store, TestRun, TraceSummary, open_store

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


class CliError(Exception):
    """A one-line error for the user; ``status`` is the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def _default_db() -> str:
    return os.environ.get("BITFAB_DB") or os.path.join(".bitfab", "bitfab.db")


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=None,
        metavar="PATH",
        help="the store: a SQLite path, sqlite:///path or postgresql:// URL (default: $BITFAB_DB"
        " or .bitfab/bitfab.db; the read commands ask the server at $BITFAB_URL when it is set"
        " and --db is not given)",
    )


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _open(args: argparse.Namespace) -> Store:
    return open_store(args.db or _default_db())


def _shown_db(db: str) -> str:
    """``db`` for messages: a URL's password (in the user part or the query) masked."""
    if "://" not in db:
        return db
    parts = urlsplit(db)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _db_flag(args: argparse.Namespace) -> str:
    return f" --db {args.db}" if args.db else ""


# -- looking at recordings and replaying them ---------------------------------------------------

_CLIP = 100


def _add_import(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module first so its @bitfab.trace functions are known (repeatable)",
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return value


class Reader(Protocol):
    """What the read commands use: a local :class:`Store` or a server's read API."""

    def functions(self) -> list[FunctionStats]: ...

    def traces(
        self, key: str | None = None, *, limit: int = 50, errors_only: bool = False
    ) -> list[TraceSummary]: ...

    def trace_spans(self, trace_id: str) -> list[dict[str, Any]]: ...

    def get_trace(self, trace_id: str) -> dict[str, Any] | None: ...

    def list_test_runs(self, key: str | None = None, *, limit: int = 50) -> list[TestRun]: ...

    def get_test_run(self, run_id: str) -> TestRun | None: ...

    def close(self) -> None: ...


def _server_url(args: argparse.Namespace) -> str | None:
    """The server the read commands ask: BITFAB_URL, unless --db names a local store."""
    if getattr(args, "db", None):
        return None
    return os.environ.get("BITFAB_URL") or None


def _where(args: argparse.Namespace) -> str:
    """Where the read commands read, for messages."""
    url = _server_url(args)
    if url is not None:
        return f"the server at {display_url(url)}"
    return str(args.db or _default_db())


def _read_store(args: argparse.Namespace) -> Reader:
    """What to read: the server at BITFAB_URL, else the local store (a one-line error if none)."""
    if _server_url(args) is not None:
        from bitfab.cli.server_read import ServerReader
        from bitfab.config import resolve_config

        return ServerReader(resolve_config())
    db = args.db or _default_db()
    _require_store(
        db,
        "record calls first (try `bitfab demo`), pass --db PATH, or set BITFAB_URL to read from"
        " a server",
    )
    return open_store(db)


def _require_store(db: str, hint: str) -> None:
    """A one-line error (``no store at DB; HINT``) when ``db`` is a path with no file: the
    commands that only read or change a store never create an empty one. URLs are left to
    the store to open."""
    if "://" not in db and not os.path.isfile(db):
        raise CliError(f"no store at {db}; {hint}")


def _print_table(rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())


def _when(us: int | None) -> str:
    if us is None:
        return "-"
    moment = datetime.fromtimestamp(us / 1_000_000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms < 10:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.1f} ms"
    return f"{ms / 1000:.2f} s"


def _clip(text: str, width: int = _CLIP) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _compact(value: Any, width: int = _CLIP) -> str:
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return _clip(text, width)


def _tokens(n: int) -> str:
    return f"{n:,}" if n else "-"
