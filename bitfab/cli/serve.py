"""``bitfab serve``: run the server."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys

from bitfab.cli._common import (
    CliError,
    _default_db,
    _shown_db,
)
from bitfab.exceptions import MissingExtraError
from bitfab.store import is_postgres_url, open_store


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
        if args.retention_every <= 0:
            raise ValueError("--retention-every must be more than 0 seconds")
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
        retention_s=args.retention,
        retention_every_s=args.retention_every,
    )
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    db = args.db or _default_db()
    # The pool size is PostgreSQL's; a SQLite store has one writer and no pool.
    store = open_store(db, max_size=args.db_pool_size) if is_postgres_url(db) else open_store(db)
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
                _shown_db(db),
            )

        def ready() -> None:
            print(
                f"bitfab server on http://{shown}:{port} (store {_shown_db(db)}"
                + (", no auth" if not options.auth else "")
                + f"); web UI at http://{shown}:{port}/",
                file=sys.stderr,
                flush=True,
            )

        serve(store, sock, options, ready=ready)
    finally:
        store.close()
    return 0
