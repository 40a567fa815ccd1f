"""Helpers of the end-to-end tests: `bitfab serve` and `bitfab keys create` as real processes.

Every process runs with the test's interpreter, on 127.0.0.1 only, with a timeout; the
environment of a child is the test's without any ``BITFAB_*`` variable, plus what the test
gives it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

READY = re.compile(r"bitfab server on http://127\.0\.0\.1:(\d+)")
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without ``BITFAB_*``, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITFAB_")}
    env.update(extra or {})
    return env


def create_key(db: Path) -> str:
    """``python -m bitfab keys create --scope all --db db``: the key it prints on stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "bitfab", "keys", "create", "--scope", "all", "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=30,
        env=child_env(),
    )
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key and "\n" not in key, done.stdout
    assert key not in done.stderr  # shown once, on stdout only
    return key


class ServerProcess:
    """``python -m bitfab serve`` on 127.0.0.1; its stderr is collected by a thread.

    ``port=0`` picks a free port; pass the port of a previous server to restart on it (the
    server binds with ``SO_REUSEADDR``). ``env`` is added to the child's environment (the crash
    test hook). ``launcher``: a script run instead of ``-m bitfab``, with the same arguments.
    """

    def __init__(
        self,
        db: Path,
        *extra: str,
        port: int = 0,
        env: Mapping[str, str] | None = None,
        launcher: Path | None = None,
    ) -> None:
        self.db = db
        command = (
            [sys.executable, "-m", "bitfab"]
            if launcher is None
            else [
                sys.executable,
                str(launcher),
            ]
        )
        self.process = subprocess.Popen(
            [
                *command,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--db",
                str(db),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(env),
        )
        self.lines: list[str] = []
        self.port = 0
        ready = threading.Event()

        def collect() -> None:
            assert self.process.stderr is not None
            for line in self.process.stderr:
                self.lines.append(line)
                match = READY.search(line)
                if match:
                    self.port = int(match.group(1))
                    ready.set()

        self.reader = threading.Thread(target=collect, daemon=True)
        self.reader.start()
        if not ready.wait(START_TIMEOUT):
            self.stop(signal.SIGKILL)
            raise AssertionError("the server did not start:\n" + self.log)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # bound and listening; wait for the app's startup
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop(signal.SIGKILL)
                raise AssertionError("the server never answered /healthz:\n" + self.log)
            time.sleep(0.02)

    def wait_exit(self, timeout: float) -> int | None:
        """The exit status once the process has ended by itself within ``timeout``, else None."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig`` (if still running), then the exit status; the log is complete after."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(STOP_TIMEOUT)
        finally:
            self.reader.join(5)
            if self.process.stderr is not None:
                self.process.stderr.close()

    @property
    def log(self) -> str:
        return "".join(self.lines)


def run_script(
    script: Path,
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``python script args...`` to the end, output captured as text."""
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=child_env({"PYTHONPATH": str(script.parent), **(env or {})}),
        timeout=timeout,
    )


def span_ids(db: Path) -> list[str]:
    """Every span id in the store's file, one per row (duplicates would show twice)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM spans")]


def integrity(db: Path) -> list[tuple[str, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows: list[tuple[str, ...]] = conn.execute("PRAGMA integrity_check").fetchall()
        return rows
