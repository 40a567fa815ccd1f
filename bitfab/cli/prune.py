"""``bitfab prune``: delete recordings older than an age, in small batches."""

from __future__ import annotations

import argparse
import sys
import time

from bitfab.cli._common import CliError, _default_db, _open, _require_store, _shown_db
from bitfab.retention import parse_age, prune_in_batches
from bitfab.store.base import PruneResult


def _age(text: str) -> float:
    try:
        return parse_age(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _prune(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise CliError("--batch-size must be at least 1", 2)
    cutoff_s = time.time() - args.older_than
    cutoff_us = int(cutoff_s * 1_000_000)
    db = args.db or _default_db()
    _require_store(db, "pass --db PATH (or set BITFAB_DB)")
    store = _open(args)
    interactive = sys.stderr.isatty()
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(cutoff_s))
    what = f" of key {args.key!r}" if args.key else ""
    print(f"pruning traces{what} started before {when} from {_shown_db(db)}", file=sys.stderr)

    def progress(totals: PruneResult) -> None:
        if interactive:
            print(
                f"\r  {totals.traces:,} traces, {totals.spans:,} spans deleted"
                f" ({totals.batches} batches)",
                end="",
                file=sys.stderr,
                flush=True,
            )

    try:
        totals = prune_in_batches(
            store,
            cutoff_us,
            key=args.key,
            include_test_runs=args.include_test_runs,
            batch_size=args.batch_size,
            on_batch=progress,
        )
    finally:
        store.close()
        if interactive:
            print(file=sys.stderr)
    print(
        f"deleted {totals.traces:,} trace(s) with {totals.spans:,} span(s)"
        + (f", {totals.test_runs:,} test run(s)" if totals.test_runs else "")
        + (f", {totals.trace_records:,} other trace record(s)" if totals.trace_records else "")
        + f" in {totals.batches} batch(es)"
    )
    if totals.kept_for_test_runs:
        print(
            f"kept {totals.kept_for_test_runs:,} old trace(s) that test runs reference; add"
            " --include-test-runs to delete old test runs and those traces too",
            file=sys.stderr,
        )
    return 0
