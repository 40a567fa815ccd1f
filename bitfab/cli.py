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

Errors are one line on stderr saying what to do, with exit status 1 (2 for a bad argument).
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from bitfab._version import __version__
from bitfab.exceptions import BitfabError, MissingExtraError, StoreError
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


def _functions(args: argparse.Namespace) -> int:
    _import_all(args.imports)
    import bitfab

    declared = {info.key: info for info in bitfab.functions()} if args.imports else {}
    store = _read_store(args)
    try:
        stats = {row.key: row for row in store.functions()}
    finally:
        store.close()
    keys = sorted(set(stats) | set(declared))
    if not keys:
        raise CliError(
            f"no recorded functions in {args.db or _default_db()}; record calls of a"
            " @bitfab.trace function first, or name its module with --import"
        )
    rows = [("KEY", "NAME", "CALLS", "ERRORS", "P50", "TOKENS", "LAST SEEN", "DEFINED AT")]
    for key in keys:
        row = stats.get(key)
        info = declared.get(key)
        where = "-"
        if info is not None:
            where = f"{info.file or info.module}:{info.line}" if info.line else info.module
        name = (row.name if row else None) or (info.name if info else None) or "-"
        rows.append(
            (
                key,
                name,
                str(row.calls) if row else "0",
                str(row.errors) if row else "0",
                _ms(row.p50_duration_ms) if row else "-",
                _tokens(row.total_tokens) if row else "-",
                _when(row.last_seen_us) if row else "-",
                where,
            )
        )
    _print_table(rows, right=(2, 3, 4, 5))
    return 0


def _traces(args: argparse.Namespace) -> int:
    store = _read_store(args)
    try:
        summaries = store.traces(args.key, limit=args.limit, errors_only=args.errors)
        known = [row.key for row in store.functions()] if not summaries else []
    finally:
        store.close()
    if not summaries:
        if args.key not in known:
            hint = ", ".join(known[:10]) or "none yet"
            raise CliError(f"no recorded calls of key {args.key!r}; keys recorded: {hint}")
        what = "calls with an error" if args.errors else "calls as a root"
        print(f"no recorded {what} of key {args.key!r}", file=sys.stderr)
        return 0
    rows = [("TRACE ID", "STARTED", "DURATION", "ERROR", "TOKENS", "MODEL")]
    for summary in summaries:
        rows.append(
            (
                summary.trace_id,
                _when(summary.start_us),
                _ms(summary.duration_ms),
                _clip(summary.error, 40) if summary.error else "-",
                _tokens(summary.total_tokens),
                summary.model or "-",
            )
        )
    _print_table(rows, right=(2, 4))
    return 0


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _span_line(record: Mapping[str, Any], start: datetime | None) -> str:
    raw = record.get("rawSpan") or {}
    data = raw.get("span_data") or {}
    name = data.get("name") or record.get("traceFunctionKey") or "?"
    parts = [str(name)]
    key = record.get("traceFunctionKey")
    if key and key != name:
        parts.append(f"[{key}]")
    if data.get("type") and data.get("type") != "function":
        parts.append(f"({data['type']})")
    began, ended = _parse_time(raw.get("started_at")), _parse_time(raw.get("ended_at"))
    if began is not None and ended is not None:
        parts.append(_ms((ended - began).total_seconds() * 1000))
    if began is not None and start is not None and began > start:
        parts.append(f"@+{_ms((began - start).total_seconds() * 1000)}")
    if record.get("mocked"):
        parts.append(f"MOCKED ({record.get('mockSource') or 'recorded'})")
    run_id = record.get("testRunId") or record.get("experimentId")
    if run_id:
        parts.append(f"REPLAY of run {run_id}")
    return "  ".join(parts)


def _show(args: argparse.Namespace) -> int:
    store = _read_store(args)
    try:
        spans = store.trace_spans(args.trace_id)
        trace = store.get_trace(args.trace_id) if spans else None
    finally:
        store.close()
    if not spans:
        raise CliError(f"no trace with id {args.trace_id!r}; see `bitfab traces KEY`")
    by_id = {str(span.get("id")): span for span in spans}
    children: dict[str | None, list[Mapping[str, Any]]] = {}
    for span in spans:
        parent = (span.get("rawSpan") or {}).get("parent_id") or None
        if parent is not None and str(parent) not in by_id:
            parent = None  # its parent was not stored: show it at the top
        children.setdefault(parent if parent is None else str(parent), []).append(span)
    first = spans[0].get("rawSpan") or {}
    start = _parse_time(first.get("started_at"))
    status = "complete" if trace is not None else "incomplete (no completion record)"
    print(
        f"trace {args.trace_id}  {len(spans)} span(s)  started {first.get('started_at')}  {status}"
    )
    seen: set[str] = set()

    def walk(span: Mapping[str, Any], prefix: str, last: bool, top: bool) -> None:
        span_id = str(span.get("id"))
        if span_id in seen:
            return
        seen.add(span_id)
        branch = "" if top else ("└─ " if last else "├─ ")
        print(prefix + branch + _span_line(span, start))
        detail = prefix + ("" if top else ("   " if last else "│  "))
        kids = children.get(span_id, [])
        bar = "│  " if kids else "   "
        data = (span.get("rawSpan") or {}).get("span_data") or {}
        if "input" in data:
            print(f"{detail}{bar}in:    {_compact(data['input'])}")
        if "output" in data:
            print(f"{detail}{bar}out:   {_compact(data['output'])}")
        if data.get("error") or data.get("error_source"):
            kind = data.get("error_type")
            error = f"{kind}: {data.get('error')}" if kind else str(data.get("error"))
            print(f"{detail}{bar}error: {_clip(error)}")
        for usage in data.get("contexts") or []:
            if isinstance(usage, Mapping) and ("inputTokens" in usage or "outputTokens" in usage):
                print(
                    f"{detail}{bar}usage: {usage.get('model') or '?'}"
                    f" in {usage.get('inputTokens', 0)} out {usage.get('outputTokens', 0)}"
                    + (
                        f" cached {usage['cachedInputTokens']}"
                        if usage.get("cachedInputTokens")
                        else ""
                    )
                )
        for i, kid in enumerate(kids):
            walk(kid, detail, i == len(kids) - 1, False)

    for root in children.get(None, []):
        walk(root, "", True, True)
    return 0


def _import_all(modules: Sequence[str]) -> None:
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the user's modules in cwd
    for name in modules:
        _import(name)


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == name or name.startswith(exc.name + ".")):
            raise CliError(
                f"cannot import module {name!r}: no such module (run from the project's"
                " directory or set PYTHONPATH)"
            ) from None
        raise CliError(f"cannot import module {name!r}: {exc}") from None
    except Exception as exc:  # the user's module failed while importing: say so in one line
        raise CliError(
            f"importing module {name!r} failed: {type(exc).__name__}: {_clip(str(exc), 200)}"
        ) from None


def _resolve_target(target: str, imports: Sequence[str]) -> Any:
    import bitfab

    _import_all(imports)
    if ":" in target:
        module_name, _, attr = target.partition(":")
        if not module_name or not attr:
            raise CliError(f"TARGET {target!r} is not module:function or a key")
        obj: Any = _import(module_name)
        for part in attr.split("."):
            if isinstance(obj, type):
                raise CliError(
                    f"{target} is a method: replaying it needs an instance, which the command"
                    f" line cannot make; call `{obj.__name__}(...).{part}.replay()` from Python"
                )
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise CliError(f"module {module_name!r} has no {attr!r}") from None
        if not isinstance(obj, bitfab.TracedFunction):
            raise CliError(f"{target} is not a @bitfab.trace function, so it has no recordings")
        return obj
    matches = [info for info in bitfab.functions() if info.key == target]
    if not matches:
        known = ", ".join(sorted({info.key for info in bitfab.functions()})[:10])
        hint = (
            f"keys of the imported modules: {known}"
            if known
            else "name the module that defines it with --import MODULE"
        )
        raise CliError(f"no @bitfab.trace function with key {target!r}; {hint}")
    return matches[0].traced


def _fail_on(text: str) -> set[str]:
    verdicts = {part.strip() for part in text.split(",") if part.strip()}
    unknown = sorted(verdicts - set(_VERDICTS))
    if unknown:
        raise CliError(
            f"--fail-on: unknown verdict {unknown[0]!r}; choose from {', '.join(_VERDICTS)}", 2
        )
    return verdicts


def _replay(args: argparse.Namespace) -> int:
    import bitfab

    fail_on = _fail_on(args.fail_on)
    if args.db:
        bitfab.configure(db=args.db)
    fn = _resolve_target(args.target, args.imports)
    db = args.db or bitfab.default_instance().config.db_path()
    if not bitfab.default_instance().config.url and not os.path.isfile(db) and "://" not in db:
        raise CliError(
            f"no store at {db}; record calls first (try `bitfab demo`) or pass --db PATH"
        )
    interactive = sys.stderr.isatty()

    def progress(done: int, total: int, item: Any) -> None:
        end = "" if interactive and done < total else "\n"
        lead = "\r" if interactive else ""
        print(
            f"{lead}replayed {done}/{total}: {item.verdict}", end=end, file=sys.stderr, flush=True
        )

    try:
        result = fn.replay(
            limit=args.limit,
            trace_ids=args.trace_ids,
            max_concurrency=args.concurrency,
            mock=args.mock,
            on_progress=progress,
        )
    except BitfabError as exc:
        raise CliError(_clip(str(exc), 300)) from None
    finally:
        bitfab.flush()
    if not result.items:
        raise CliError((result.message or f"no recorded calls of key {result.key!r}") + f" in {db}")
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False, default=str))
    else:
        print(result)
    failing = [item for item in result.items if item.verdict in fail_on]
    if failing:
        print(
            f"bitfab: {len(failing)} of {len(result.items)} calls are"
            f" {'/'.join(sorted({item.verdict for item in failing}))} (--fail-on"
            f" {','.join(sorted(fail_on))})",
            file=sys.stderr,
        )
        return 1
    return 0


def _counts(summary: Mapping[str, Any] | None) -> str:
    counts = (summary or {}).get("counts") or {}
    shown = [f"{n} {verdict}" for verdict, n in counts.items() if n]
    return ", ".join(shown) or "-"


def _runs(args: argparse.Namespace) -> int:
    store = _read_store(args)
    try:
        runs = store.list_test_runs(args.key, limit=args.limit)
    finally:
        store.close()
    if not runs:
        which = f" of key {args.key!r}" if args.key else ""
        print(
            f"no test runs{which} yet; replay recorded calls with `bitfab replay TARGET"
            f"{_db_flag(args)}`",
            file=sys.stderr,
        )
        return 0
    rows = [("RUN ID", "KEY", "CREATED", "STATUS", "CALLS", "VERDICTS")]
    for run in runs:
        rows.append(
            (
                run.id,
                run.key,
                run.created_at[:19].replace("T", " "),
                run.status,
                str((run.summary or {}).get("total", "-")),
                _counts(run.summary),
            )
        )
    _print_table(rows, right=(4,))
    return 0


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _item_detail(item: Mapping[str, Any]) -> str:
    if item.get("error"):
        kind = item.get("error_type")
        return _clip(f"{kind}: {item['error']}" if kind else str(item["error"]), 60)
    changes = item.get("diff") or []
    if changes and isinstance(changes[0], Mapping):
        change = changes[0]
        text = (
            f"{change.get('path')}: {_compact(change.get('old'), 20)} ->"
            f" {_compact(change.get('new'), 20)}"
        )
        if len(changes) > 1:
            text += f" (+{len(changes) - 1} more)"
        return text
    if item.get("original_error"):
        return _clip(f"was: {item['original_error']}", 60)
    return ""


def _token_total(value: Any) -> int:
    if isinstance(value, Mapping):
        total = _number(value.get("total"))
        return int(total) if total is not None else 0
    return 0


def _run(args: argparse.Namespace) -> int:
    store = _read_store(args)
    try:
        run = store.get_test_run(args.run_id)
    finally:
        store.close()
    if run is None:
        raise CliError(f"no test run with id {args.run_id!r}; see `bitfab runs{_db_flag(args)}`")
    print(f"test run {run.id}  key {run.key}  {run.status}  created {run.created_at}")
    summary = run.summary or {}
    print(f"{summary.get('total', len(run.items))} calls: {_counts(summary)}")
    if not run.items:
        return 0
    rows = [("#", "VERDICT", "ORIGINAL", "NEW", "TOKENS", "ORIGINAL TRACE", "DETAIL")]
    for entry in run.items:
        item = entry.item
        delta = _token_total(item.get("tokens")) - _token_total(item.get("original_tokens"))
        rows.append(
            (
                str(entry.idx),
                entry.verdict or "-",
                _ms(_number(item.get("original_duration_ms"))),
                _ms(_number(item.get("duration_ms"))),
                f"{delta:+,}" if delta else "0",
                entry.original_trace_id or "-",
                _item_detail(item),
            )
        )
    _print_table(rows, right=(0, 2, 3, 4))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from bitfab import demo

    if args.dir is not None and os.path.exists(args.dir) and not os.path.isdir(args.dir):
        raise CliError(f"--dir {args.dir} exists and is not a directory")
    try:
        demo.run(args.dir)
    except OSError as exc:
        raise CliError(f"cannot write the demo store: {exc.strerror or exc}") from None
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
    except BrokenPipeError:  # `bitfab traces KEY | head`: the reader left, which is fine
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - stays open until exit
        except OSError:
            pass
        return 0
    return status


if __name__ == "__main__":
    sys.exit(main())
