"""``bitfab functions|traces|show|runs|run``: look at what was recorded and replayed."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bitfab.cli._common import (
    CliError,
    _clip,
    _compact,
    _db_flag,
    _ms,
    _print_table,
    _read_store,
    _tokens,
    _when,
    _where,
)
from bitfab.cli.replaying import _import_all


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
            f"no recorded functions in {_where(args)}; record calls of a"
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
