"""Shared pieces of the ``bitfab`` command: errors, the store flags, table printing."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from bitfab.store import Store, open_store

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
        help="the store: a SQLite path or sqlite:///path URL (default: $BITFAB_DB or"
        " .bitfab/bitfab.db)",
    )


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _open(args: argparse.Namespace) -> Store:
    return open_store(args.db or _default_db())


def _db_flag(args: argparse.Namespace) -> str:
    return f" --db {args.db}" if args.db else ""


# -- looking at recordings and replaying them ---------------------------------------------------

_VERDICTS = (
    "same",
    "changed",
    "error",
    "fixed",
    "still_error",
    "not_replayable",
    "skipped",
    "valid",
)
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


def _read_store(args: argparse.Namespace) -> Store:
    """The local store to read, or a one-line error when there is none."""
    if args.db is None and os.environ.get("BITFAB_URL"):
        raise CliError(
            "BITFAB_URL is set, but this command reads only a local store for now;"
            " pass --db PATH (or unset BITFAB_URL)"
        )
    db = args.db or _default_db()
    if "://" not in db and not os.path.isfile(db):
        raise CliError(
            f"no store at {db}; record calls first (try `bitfab demo`) or pass --db PATH"
        )
    return open_store(db)


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
