"""Helpers shared by the export tests: the accounting invariant, call outcomes, child processes."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bitfab.export.exporter import ExportStats

# Python 3.12+ warns on fork() in a process with threads; the children here fork on purpose.
QUIET_FORK = ("-W", "ignore:This process:DeprecationWarning")


def assert_accounted(stats: ExportStats) -> None:
    """Every emitted span is exported, dropped for a reason, still queued or in flight."""
    accounted = stats.exported + sum(stats.dropped.values()) + stats.queued + stats.in_flight
    assert stats.emitted == accounted, f"accounting invariant broken: {stats}"


def outcomes(fn: Callable[..., Any], calls: Iterable[Any]) -> list[tuple[Any, ...]]:
    """What ``fn(arg)`` returned or raised (type and args) for each argument."""
    results: list[tuple[Any, ...]] = []
    for arg in calls:
        try:
            results.append(("returned", fn(arg)))
        except Exception as exc:
            results.append(("raised", type(exc), exc.args))
    return results


def run_python(
    code: str, *args: str, cwd: Path, timeout: float = 20.0
) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code args...`` to the end with captured text output."""
    return subprocess.run(
        [sys.executable, *QUIET_FORK, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def stored_spans(db: Path) -> list[tuple[str, str, Any]]:
    """``(id, key, first input argument)`` of every span row in the SQLite file, by id."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT id, key, record FROM spans ORDER BY id").fetchall()
    finally:
        conn.close()
    return [
        (span_id, key, json.loads(record)["rawSpan"]["span_data"]["input"][0])
        for span_id, key, record in rows
    ]


def count_by_first_input(db: Path) -> Counter[Any]:
    """How many stored spans there are per first input argument (a pid, a tag)."""
    return Counter(first for _, _, first in stored_spans(db))


def last_json_line(text: str) -> Any:
    """The JSON value printed on the last line of a child's stdout."""
    return json.loads(text.strip().splitlines()[-1])
