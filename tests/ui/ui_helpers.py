"""Helpers of the UI tests: wire records written as plain JSON, a hostile store, a real server."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio.from_thread
import httpx

from bitfab.server import create_app
from bitfab.store import SQLiteStore
from bitfab.store.base import TestRun, TestRunItem

BASE = datetime(2026, 11, 27, 10, 0, 0, tzinfo=timezone.utc)
READY = re.compile(r"bitfab server on http://127\.0\.0\.1:(\d+)")

XSS = '</script><script>alert("x")</script><img src=x onerror=alert(1)>'
"""Recorded text that would run if a page put it into HTML unescaped."""
HOSTILE_KEY = '<script>alert("key")</script>'
HOSTILE_RUN = "run-<b>bold</b>"
HUGE = "A" * 1_000_000 + "THE-END"


def iso(ms: float) -> str:
    """The protocol's timestamp ``ms`` milliseconds after ``BASE``."""
    return (BASE + timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def span(
    span_id: str,
    trace_id: str,
    *,
    parent: str | None = None,
    key: str = "triage",
    name: str | None = None,
    start: float = 0.0,
    end: float = 10.0,
    input: Any = None,
    output: Any = "ok",
    error: str | None = None,
    run: str | None = None,
    contexts: list[dict[str, Any]] | None = None,
    **data: Any,
) -> dict[str, Any]:
    """An ``external_span`` record as the Python SDK writes it."""
    span_data: dict[str, Any] = {
        "name": name or key,
        "type": "function",
        "input": [] if input is None else input,
        "output": output,
        **data,
    }
    if error is not None:
        span_data.update(error=error, error_source="code", error_type="ValueError")
        span_data["traceback"] = f'  File "app.py", line 1, in f\n    raise ValueError({error!r})\n'
        del span_data["output"]
    if contexts:
        span_data["contexts"] = contexts
    raw: dict[str, Any] = {
        "id": span_id,
        "trace_id": trace_id,
        "started_at": iso(start),
        "ended_at": iso(end),
        "span_data": span_data,
    }
    if parent is not None:
        raw["parent_id"] = parent
    record: dict[str, Any] = {
        "id": span_id,
        "traceId": trace_id,
        "type": "sdk-function",
        "traceFunctionKey": key,
        "rawSpan": raw,
    }
    if run is not None:
        record["testRunId"] = run
    return record


def fill_hostile(store: SQLiteStore) -> dict[str, str]:
    """Hostile recordings: markup everywhere, a 1 MB string, deep nesting, a 5,000-span trace,
    a loop of parent links, and a test run whose items carry the same. Returns their ids."""
    deep: Any = "bottom"
    for _ in range(300):
        deep = {"d": deep}
    spans = [
        span(
            "x-root",
            "x-trace",
            key=HOSTILE_KEY,
            name=XSS,
            input=[XSS, {XSS: XSS}],
            output={"html": XSS, "huge": HUGE},
            metadata={"note": XSS},
        ),
        span("x-child", "x-trace", parent="x-root", key=HOSTILE_KEY, error=XSS, start=1, end=5),
        span("deep-root", "deep-trace", key="deep", input=[deep], output=deep),
        span("loop-a", "loop-trace", parent="loop-b", key="loop"),
        span("loop-b", "loop-trace", parent="loop-a", key="loop"),
        span("orphan", "loop-trace", parent="not-received", key="loop"),
    ]
    # 5,000 spans: a root with 50 children of 99 descendants each, the first a chain 100 deep
    spans.append(span("big-0", "big-trace", key="big", end=5000))
    n = 1
    for child in range(50):
        child_id = f"big-{n}"
        spans.append(
            span(
                child_id,
                "big-trace",
                parent="big-0",
                key="step",
                start=child * 100,
                end=child * 100 + 90,
            )
        )
        n += 1
        for grand in range(99):
            if n >= 5000:
                break
            parent = child_id if grand % 10 == 0 and child else f"big-{n - 1}"
            spans.append(
                span(
                    f"big-{n}",
                    "big-trace",
                    parent=parent,
                    key="leaf",
                    start=child * 100 + grand * 0.9,
                    end=child * 100 + grand * 0.9 + 0.8,
                )
            )
            n += 1
    store.write(spans)
    store.create_test_run(
        TestRun(id=HOSTILE_RUN, key=HOSTILE_KEY, created_at=iso(10_000), name=XSS)
    )
    items = [
        TestRunItem(
            idx=0,
            original_trace_id="x-trace",
            original_span_id="x-root",
            replay_trace_id="x-trace",
            verdict="changed",
            item={
                "index": 0,
                "verdict": "changed",
                "input": {"args": [XSS], "kwargs": {}},
                "original_output": {"html": XSS, "huge": HUGE, "deep": deep},
                "result": {"html": XSS + "!", "huge": HUGE, "deep": deep},
                "diff": [
                    {"path": "$.html", "kind": "changed", "old": XSS, "new": XSS + "!"},
                    {"path": '$["</script>"]', "kind": "added", "old": None, "new": XSS},
                    {"path": "not a path", "kind": "changed", "old": 1, "new": 2},
                ],
                "error": None,
                "original_error": None,
            },
        ),
        TestRunItem(
            idx=1,
            original_trace_id="x-trace",
            verdict="error",
            item={"index": 1, "verdict": "error", "error": XSS, "input": XSS},
        ),
    ]
    store.complete_test_run(
        HOSTILE_RUN,
        items=items,
        summary={"total": 2, "counts": {"changed": 1, "error": 1, XSS: 0}},
    )
    return {"trace": "x-trace", "run": HOSTILE_RUN, "big": "big-trace", "deep": "deep-trace"}


class Client:
    """A synchronous client of the app over one store, served in-process (no socket).

    It keeps cookies like a browser and follows no redirect unless asked.
    """

    def __init__(
        self, db: Path, *, auth: bool = False, ui: bool = True, base_url: str = "http://testserver"
    ) -> None:
        self.store = SQLiteStore(db)
        self.app = create_app(self.store, auth=auth, ui=ui)
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self.portal = self._portal_cm.__enter__()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url=base_url, timeout=60
        )

    @property
    def cookies(self) -> httpx.Cookies:
        return self.client.cookies

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.portal.call(lambda: self.client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        self.portal.call(self.client.aclose)
        self._portal_cm.__exit__(None, None, None)
        self.store.close()


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BITFAB_")}


def record_demo(directory: Path) -> Path:
    """``bitfab demo --dir directory`` in a subprocess; the store's path."""
    subprocess.run(
        [sys.executable, "-m", "bitfab.cli", "demo", "--dir", str(directory)],
        check=True,
        stdout=subprocess.DEVNULL,
        env=env(),
        timeout=120,
    )
    return directory / "bitfab.db"


class Server:
    """A `bitfab serve` subprocess on a free loopback port."""

    def __init__(self, db: Path, *extra: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bitfab.cli", "serve", "--port", "0", "--db", str(db), *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env(),
        )
        self.lines: list[str] = []
        self.port = 0
        ready = threading.Event()

        def collect() -> None:
            assert self.process.stderr is not None
            for line in self.process.stderr:
                self.lines.append(line)
                match = READY.search(line)
                if match and not self.port:
                    self.port = int(match.group(1))
                    ready.set()

        self.reader = threading.Thread(target=collect, daemon=True)
        self.reader.start()
        if not ready.wait(30):
            self.stop()
            raise AssertionError("the server did not start:\n" + "".join(self.lines))
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "".join(self.lines)
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(20)
        finally:
            self.reader.join(5)
            if self.process.stderr is not None:
                self.process.stderr.close()
