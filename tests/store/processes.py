"""Run a Python snippet in a child process that imports this checkout's bitfab."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import bitfab.store

# Not resolved: the checkout that this test run imported bitfab from.
REPO_ROOT = Path(bitfab.store.__file__).parents[2]

# Prepended to every snippet: a minimal span record, so children need no test helpers.
PRELUDE = """
import sys, time

def record(span_id, trace_id, payload=""):
    raw = {
        "id": span_id, "trace_id": trace_id,
        "started_at": "2026-11-27T10:00:00.000000Z", "ended_at": "2026-11-27T10:00:00.001000Z",
        "span_data": {"name": "f", "type": "function", "input": [payload], "output": None},
    }
    return {"id": span_id, "traceId": trace_id, "traceFunctionKey": "k", "rawSpan": raw}
"""


def start_child(snippet: str, *args: str, **popen: Any) -> subprocess.Popen[str]:
    """Start ``python -c PRELUDE+snippet args...`` with text pipes for stdout and stderr."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-c", PRELUDE + snippet, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **popen,
    )


def run_child(snippet: str, *args: str, timeout: float = 30.0) -> str:
    """Run a child to the end; its stdout, or AssertionError with its stderr if it failed."""
    with start_child(snippet, *args) as child:
        out, err = child.communicate(timeout=timeout)
    assert child.returncode == 0, err
    return out
