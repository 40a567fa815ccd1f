"""``bitfab keys``: create, list and revoke API keys."""

from __future__ import annotations

import argparse
import sys

from bitfab.cli._common import (
    CliError,
    _db_flag,
    _open,
)
from bitfab.store.keys import new_api_key


def _keys_create(args: argparse.Namespace) -> int:
    try:
        key, secret = new_api_key(name=args.name, scope=args.scope)
    except ValueError as exc:
        raise CliError(str(exc), 2) from None
    store = _open(args)
    try:
        store.create_api_key(key)
    finally:
        store.close()
    print(
        f"created key {key.id} (scope {key.scope}"
        + (f", name {key.name!r}" if key.name else "")
        + "); it is shown only this once:",
        file=sys.stderr,
    )
    print(secret)
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    store = _open(args)
    try:
        keys = store.api_keys()
    finally:
        store.close()
    if not keys:
        print(f"no keys; create one with `bitfab keys create{_db_flag(args)}`", file=sys.stderr)
        return 0
    rows = [("ID", "NAME", "SCOPE", "CREATED", "LAST USED", "REVOKED")]
    for key in keys:
        rows.append(
            (
                key.id,
                key.name or "-",
                key.scope,
                key.created_at,
                key.last_used_at or "-",
                key.revoked_at or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    store = _open(args)
    try:
        key = store.revoke_api_key(args.id)
    finally:
        store.close()
    if key is None:
        raise CliError(f"no key with id {args.id!r}; see `bitfab keys list{_db_flag(args)}`")
    print(f"revoked key {key.id} at {key.revoked_at}", file=sys.stderr)
    return 0
