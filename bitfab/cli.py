"""The ``bitfab`` command: run the server and manage its API keys.

Examples::

    bitfab keys create --name ci --scope ingest     # prints the key once
    bitfab serve --host 0.0.0.0 --port 8000 --db /var/lib/bitfab/bitfab.db
    bitfab serve --no-auth                          # loopback only

Errors are one line on stderr saying what to do, with exit status 1 (2 for a bad argument).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from bitfab._version import __version__
from bitfab.exceptions import MissingExtraError, StoreError
from bitfab.store import Store, open_store
from bitfab.store.keys import SCOPES, new_api_key

__all__ = ["main"]

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


def _parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="bitfab",
        description="Record calls of functions and replay them; this command runs the server.",
        epilog="example:\n  bitfab keys create --scope ingest\n  bitfab serve --port 8000",
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"bitfab {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the server (the Bitfab SDK protocol and the read API)",
        description="Run the server over one store. API keys are required unless --no-auth"
        " is given, which is allowed only on a loopback address.",
        epilog="example:\n  bitfab serve --host 0.0.0.0 --port 8000 --db /srv/bitfab.db\n"
        "  bitfab serve --no-auth            # 127.0.0.1:8000, no keys",
        formatter_class=formatter,
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument(
        "--port", type=int, default=8000, help="port to bind; 0 picks a free one (default 8000)"
    )
    _add_db(serve)
    serve.add_argument(
        "--no-auth", action="store_true", help="accept requests without a key (loopback only)"
    )
    serve.add_argument("--log-level", default="info", choices=_LOG_LEVELS)
    serve.add_argument(
        "--max-body-mb", type=float, default=8.0, help="largest body after gunzip (default 8)"
    )
    serve.add_argument(
        "--max-wire-mb", type=float, default=4.0, help="largest body as sent (default 4)"
    )
    serve.add_argument(
        "--max-ingest-in-flight",
        type=int,
        default=16,
        help="recording requests handled at once; more get 429 (default 16)",
    )
    serve.add_argument(
        "--limit-concurrency",
        type=int,
        default=1000,
        help="connections and requests at once before uvicorn answers 503 (default 1000)",
    )
    serve.add_argument(
        "--timeout-keep-alive", type=int, default=5, help="idle keep-alive seconds (default 5)"
    )
    serve.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds a client has to send a request head (default 10)",
    )
    serve.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        help="seconds a client has to send a body (default 30)",
    )
    serve.set_defaults(func=_serve)

    keys = commands.add_parser(
        "keys",
        help="create, list and revoke the server's API keys",
        description="API keys for the server. Only a hash of each key is stored.",
        epilog="example:\n  bitfab keys create --name ci --scope ingest\n  bitfab keys list\n"
        "  bitfab keys revoke 3f9a0c1b2d4e",
        formatter_class=formatter,
    )
    key_commands = keys.add_subparsers(dest="keys_command", metavar="KEYS_COMMAND")
    create = key_commands.add_parser(
        "create",
        help="create a key and print it (once)",
        description="Create an API key. The key is printed on stdout once; store it now.",
        epilog="example:\n  export BITFAB_API_KEY=$(bitfab keys create --name app --scope ingest)",
        formatter_class=formatter,
    )
    create.add_argument("--name", default=None, help="a name for people (optional)")
    create.add_argument(
        "--scope",
        default="all",
        choices=SCOPES,
        help="ingest: record only; read: read and replay; all: both (default all)",
    )
    _add_db(create)
    create.set_defaults(func=_keys_create)
    listing = key_commands.add_parser(
        "list",
        help="list keys (never their secrets)",
        description="List API keys: id, name, scope, created, last used, revoked.",
        epilog="example:\n  bitfab keys list --db /srv/bitfab.db",
        formatter_class=formatter,
    )
    _add_db(listing)
    listing.set_defaults(func=_keys_list)
    revoke = key_commands.add_parser(
        "revoke",
        help="revoke a key by id",
        description="Revoke an API key; requests with it get 401 from then on.",
        epilog="example:\n  bitfab keys revoke 3f9a0c1b2d4e",
        formatter_class=formatter,
    )
    revoke.add_argument("id", help="the key's id, from `bitfab keys list`")
    _add_db(revoke)
    revoke.set_defaults(func=_keys_revoke)
    keys.set_defaults(func=lambda args: _usage(keys))
    parser.set_defaults(func=lambda args: _usage(parser))
    return parser


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _open(args: argparse.Namespace) -> Store:
    return open_store(args.db or _default_db())


def _db_flag(args: argparse.Namespace) -> str:
    return f" --db {args.db}" if args.db else ""


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


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and ``localhost``."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> int:
    if args.no_auth and not is_loopback(args.host):
        raise CliError(
            f"--no-auth is allowed only on a loopback address (127.0.0.1, ::1, localhost), not"
            f" {args.host}; create a key with `bitfab keys create` and drop --no-auth",
            2,
        )
    try:
        from bitfab.server.body import MIB, Limits
        from bitfab.server.run import ServeOptions, bind, serve
    except ImportError as exc:
        if isinstance(exc, MissingExtraError):
            raise
        raise MissingExtraError("server", "bitfab serve") from exc
    try:
        limits = Limits(
            max_body_bytes=int(args.max_body_mb * MIB),
            max_wire_bytes=int(args.max_wire_mb * MIB),
            max_ingest_in_flight=args.max_ingest_in_flight,
            body_timeout=args.body_timeout,
        )
        if args.header_timeout <= 0 or args.timeout_keep_alive < 1 or args.limit_concurrency < 1:
            raise ValueError(
                "--header-timeout must be > 0, --timeout-keep-alive and --limit-concurrency >= 1"
            )
    except ValueError as exc:
        raise CliError(str(exc), 2) from None
    options = ServeOptions(
        auth=not args.no_auth,
        limits=limits,
        log_level=args.log_level,
        timeout_keep_alive=args.timeout_keep_alive,
        head_timeout=args.header_timeout,
        limit_concurrency=args.limit_concurrency,
    )
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    db = args.db or _default_db()
    store = open_store(db)
    try:
        try:
            sock = bind(args.host, args.port)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise CliError(
                f"cannot listen on {args.host}:{args.port}: {reason}; choose another --port"
                " or --host"
            ) from None
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        if options.auth and not any(key.active for key in store.api_keys()):
            logging.getLogger("bitfab.server").warning(
                "no API keys yet: every request will get 401; create one with"
                " `bitfab keys create --db %s`",
                db,
            )

        def ready() -> None:
            print(
                f"bitfab server on http://{shown}:{port} (store {db}"
                + (", no auth" if not options.auth else "")
                + ")",
                file=sys.stderr,
                flush=True,
            )

        serve(store, sock, options, ready=ready)
    finally:
        store.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    func: Any = args.func
    try:
        status: int = func(args)
    except CliError as exc:
        print(f"bitfab: {exc}", file=sys.stderr)
        return exc.status
    except (StoreError, MissingExtraError) as exc:
        print(f"bitfab: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
