"""The ``bitfab`` command: look at recorded calls, replay them, run the server, manage keys.

Examples::

    bitfab demo                                     # record, change, replay: a full example
    bitfab functions --import myapp.pipeline
    bitfab traces triage --limit 20
    bitfab show 01a21d3d-6c90-71dd-8d55-990000000008
    bitfab replay myapp.pipeline:triage --fail-on changed,error
    bitfab runs --key triage
    bitfab keys create --name ci --scope ingest     # prints the key once
    bitfab serve --host 0.0.0.0 --port 8000 --db /var/lib/bitfab/bitfab.db
    bitfab serve --no-auth                          # loopback only
    bitfab prune --older-than 30d                   # retention

Errors are one line on stderr saying what to do, with exit status 1 (2 for a bad argument).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from bitfab._version import __version__
from bitfab.cli._common import (
    _LOG_LEVELS,
    CliError,
    _add_db,
    _add_import,
    _positive,
    _usage,
)
from bitfab.cli.keys import (
    _keys_create,
    _keys_list,
    _keys_revoke,
)
from bitfab.cli.look import (
    _functions,
    _run,
    _runs,
    _show,
    _traces,
)
from bitfab.cli.prune import _age, _prune
from bitfab.cli.replaying import (
    _demo,
    _replay,
)
from bitfab.cli.serve import _serve, is_loopback
from bitfab.exceptions import MissingExtraError, StoreError
from bitfab.store.keys import SCOPES

__all__ = ["CliError", "is_loopback", "main"]


def _parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="bitfab",
        description="Record calls of functions and replay them through new code.",
        epilog="example:\n  bitfab demo\n  bitfab traces triage\n  bitfab replay myapp:triage"
        "\n  bitfab keys create --scope ingest\n  bitfab serve --port 8000",
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"bitfab {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_user_commands(commands, formatter)

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
    serve.add_argument(
        "--db-pool-size",
        type=_positive,
        default=10,
        metavar="N",
        help="PostgreSQL only: connections this server opens at most (default 10); with N"
        " servers the database must allow N times this, plus headroom",
    )
    serve.add_argument(
        "--retention",
        type=_age,
        default=None,
        metavar="AGE",
        help="delete traces older than AGE (e.g. 30d, 12h) in the background, in small batches;"
        " test runs keep the traces they reference (default: keep everything)",
    )
    serve.add_argument(
        "--retention-every",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="how often the retention runs (default 600)",
    )
    serve.set_defaults(func=_serve)

    prune = commands.add_parser(
        "prune",
        help="delete recordings older than an age, in small batches",
        description="Delete whole traces (spans and completion records) whose root started"
        " more than AGE ago, a few hundred per transaction so that a running server's ingest"
        " is never held up. Traces that a test run references are kept unless"
        " --include-test-runs also deletes the old test runs. Works on the store directly"
        " (--db or $BITFAB_DB), like `bitfab keys`.",
        epilog="example:\n  bitfab prune --older-than 30d --db /srv/bitfab.db\n"
        "  bitfab prune --older-than 12h --key triage\n"
        "  bitfab prune --older-than 90d --include-test-runs --db postgresql://bitfab@db/bitfab",
        formatter_class=formatter,
    )
    prune.add_argument(
        "--older-than",
        type=_age,
        required=True,
        metavar="AGE",
        help="an age: a number and a unit, s, m, h, d or w (30d, 12h, 2w)",
    )
    prune.add_argument("--key", default=None, help="only traces whose root is of this key")
    prune.add_argument(
        "--include-test-runs",
        action="store_true",
        help="also delete test runs created before the cutoff, and the traces they referenced",
    )
    prune.add_argument(
        "--batch-size",
        type=_positive,
        default=500,
        metavar="N",
        help="traces per transaction (default 500)",
    )
    _add_db(prune)
    prune.set_defaults(func=_prune)

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


def _add_user_commands(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    demo = commands.add_parser(
        "demo",
        help="record a sample pipeline, change it, replay it (a few seconds, no network)",
        description="A self-contained example on an embedded store: a support-ticket triage"
        " pipeline with a fake LLM and a tool step records 36 calls, its code changes, and the"
        " calls are replayed through the new version. The store stays for you to look at.",
        epilog="example:\n  bitfab demo\n  bitfab demo --dir /tmp/bitfab-demo",
        formatter_class=formatter,
    )
    demo.add_argument(
        "--dir",
        default=None,
        metavar="DIR",
        help="directory for bitfab.db (default: a fresh temporary directory)",
    )
    demo.set_defaults(func=_demo)

    functions = commands.add_parser(
        "functions",
        help="list the traced functions: recorded keys and those declared in code",
        description="One row per key: recorded calls, errors, median duration, tokens and"
        " when it was last seen, merged with where the @bitfab.trace function is defined in"
        " the modules given with --import.",
        epilog="example:\n  bitfab functions\n  bitfab functions --import myapp.pipeline --db app.db",
        formatter_class=formatter,
    )
    _add_import(functions)
    _add_db(functions)
    functions.set_defaults(func=_functions)

    traces = commands.add_parser(
        "traces",
        help="list recorded calls of one key, newest first",
        description="Recorded calls of KEY, newest first: trace id, start, duration, error,"
        " tokens and model over the whole trace. Replays are not listed.",
        epilog="example:\n  bitfab traces triage --limit 20\n  bitfab traces triage --errors",
        formatter_class=formatter,
    )
    traces.add_argument("key", help="the function's key, from `bitfab functions`")
    traces.add_argument(
        "--limit", type=_positive, default=20, metavar="N", help="at most N (default 20)"
    )
    traces.add_argument("--errors", action="store_true", help="only calls that raised")
    _add_db(traces)
    traces.set_defaults(func=_traces)

    show = commands.add_parser(
        "show",
        help="show one trace as a span tree",
        description="The spans of one trace as a tree: timings, inputs and outputs (compact"
        " JSON, clipped), errors, token usage, and which spans were mocked or replayed.",
        epilog="example:\n  bitfab show 01a21d3d-6c90-71dd-8d55-990000000008",
        formatter_class=formatter,
    )
    show.add_argument("trace_id", metavar="TRACE_ID", help="from `bitfab traces KEY`")
    _add_db(show)
    show.set_defaults(func=_show)

    replay = commands.add_parser(
        "replay",
        help="replay recorded calls of a function through its current code",
        description="Replay the newest recorded calls of TARGET through the code as it is now"
        " and compare the outputs. TARGET is module:function (imported from the current"
        " directory and sys.path) or a key of a function in a module given with --import."
        " Progress goes to stderr, the table (or --json) to stdout. Exit status 1 when an"
        " item's verdict is in --fail-on.",
        epilog="example:\n  bitfab replay myapp.pipeline:triage --limit 50\n"
        "  bitfab replay triage --import myapp.pipeline --fail-on changed,error --json",
        formatter_class=formatter,
    )
    replay.add_argument("target", metavar="TARGET", help="module:function or a key")
    _add_import(replay)
    replay.add_argument(
        "--limit", type=_positive, default=20, metavar="N", help="newest N calls (default 20)"
    )
    replay.add_argument(
        "--trace-id",
        dest="trace_ids",
        action="append",
        default=None,
        metavar="ID",
        help="replay this recorded trace (repeatable; replaces --limit)",
    )
    replay.add_argument(
        "--concurrency", type=_positive, default=10, metavar="N", help="calls at once (default 10)"
    )
    replay.add_argument(
        "--mock",
        default="marked",
        choices=("marked", "all", "none"),
        help="which nested calls serve their recorded output: those marked mock_on_replay"
        " (default), all, or none",
    )
    replay.add_argument("--json", action="store_true", help="print the result as JSON")
    replay.add_argument(
        "--fail-on",
        default="changed,error",
        metavar="VERDICTS",
        help="comma-separated verdicts that make the exit status 1 (default changed,error;"
        " '' never fails)",
    )
    _add_db(replay)
    replay.set_defaults(func=_replay)

    runs = commands.add_parser(
        "runs",
        help="list test runs (replays), newest first",
        description="Test runs newest first: id, key, created, status and verdict counts.",
        epilog="example:\n  bitfab runs\n  bitfab runs --key triage --limit 5",
        formatter_class=formatter,
    )
    runs.add_argument("--key", default=None, help="only runs of this key")
    runs.add_argument(
        "--limit", type=_positive, default=20, metavar="N", help="at most N (default 20)"
    )
    _add_db(runs)
    runs.set_defaults(func=_runs)

    run = commands.add_parser(
        "run",
        help="show one test run and its items",
        description="One test run: its summary and, per replayed call, the verdict, durations,"
        " token change and the first difference or error.",
        epilog="example:\n  bitfab run 87821bbb-0d8f-4d79-95ba-77ef84439215",
        formatter_class=formatter,
    )
    run.add_argument("run_id", metavar="RUN_ID", help="from `bitfab runs`")
    _add_db(run)
    run.set_defaults(func=_run)


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
    except BrokenPipeError:  # `bitfab traces KEY | head`: the reader left, which is fine
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stays open until exit
        except OSError:
            pass
        return 0
    return status


if __name__ == "__main__":
    sys.exit(main())
