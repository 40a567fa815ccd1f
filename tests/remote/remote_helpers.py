"""Helpers of the remote-mode tests: the accounting invariant, child scripts, logs."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

from bitfab.export.exporter import ExportStats

# Python 3.12+ warns on fork() in a process with threads; the children here fork on purpose.
QUIET_FORK = ("-W", "ignore:This process:DeprecationWarning")


def assert_accounted(stats: ExportStats) -> None:
    """Every emitted span is exported, dropped for a reason, still queued or in flight."""
    accounted = stats.exported + sum(stats.dropped.values()) + stats.queued + stats.in_flight
    assert stats.emitted == accounted, f"accounting invariant broken: {stats}"


def run_python(
    code: str, *args: str, cwd: Path, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code args...`` to the end with captured text output."""
    return subprocess.run(
        [sys.executable, *QUIET_FORK, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def log_text(records: list[logging.LogRecord]) -> str:
    """Every message, argument and traceback of ``records`` as one string (to scan for secrets)."""
    parts: list[str] = []
    for record in records:
        parts.append(record.getMessage())
        parts.append(repr(record.args))
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(parts)
