"""Fake bitfab servers for the remote-mode tests.

- :class:`ScriptedServer`: an ``httpx.MockTransport`` that answers from per-path scripts
  (responses or exceptions to raise) and records every request, for unit tests.
- :class:`FakeBitfabServer`: a real threaded HTTP server on ``127.0.0.1`` that speaks enough
  of the protocol (ingest and the replay endpoints) over a real SQLite store, using
  ``bitfab.playback.service`` as a server would, with fault modes (blackhole, slow, scripted
  statuses, close after reading or after committing).
- :class:`FaultProxy`: a TCP proxy that cuts connections (after N request bytes, or instead of
  forwarding the answer).
- :class:`VirtualClock`: the sink's clock, moved only by its sleeps.
"""

from __future__ import annotations

import gzip
import json
import select
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx

from bitfab.playback import service
from bitfab.store import Store, TestRun, open_store
from bitfab.store.records import utc_now_iso

API_KEY = "bf-test-key-7f3a9c"
INGEST = "/api/bitfab/v1/ingest"


# -- records ------------------------------------------------------------------------------------


def span_record(n: int, *, pad: int = 0, trace: str | None = None) -> dict[str, Any]:
    """A minimal span record with id ``s<n>`` (``pad`` extra bytes of input)."""
    span_id = f"s{n}"
    trace_id = trace or f"t{n}"
    return {
        "id": span_id,
        "traceId": trace_id,
        "sourceTraceId": trace_id,
        "type": "sdk-function",
        "traceFunctionKey": "k",
        "rawSpan": {
            "id": span_id,
            "trace_id": trace_id,
            "started_at": "2026-01-01T00:00:00.000000Z",
            "ended_at": "2026-01-01T00:00:01.000000Z",
            "span_data": {"name": "f", "type": "function", "input": ["x" * pad]},
        },
    }


def trace_record(trace_id: str, spans: int = 1) -> dict[str, Any]:
    return {"id": trace_id, "type": "sdk-function", "completed": True, "expectedSpanCount": spans}


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- the scripted MockTransport server ----------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    headers: httpx.Headers
    body: Any
    wire_bytes: int
    target: str
    """The path and query as sent (still percent-encoded)."""


Step = httpx.Response | BaseException | Callable[[httpx.Request], httpx.Response]


def respond(
    status: int = 200,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
) -> httpx.Response:
    """An answer for a script: JSON ``body``, or raw ``content``."""
    if content is not None:
        return httpx.Response(status, headers=headers, content=content)
    return httpx.Response(status, headers=headers, json={} if body is None else body)


class ScriptedServer:
    """Answers each request with the next scripted step of its path, or the default answer."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self._scripts: dict[str, deque[Step]] = {}
        self._lock = threading.Lock()
        self.transport = httpx.MockTransport(self._handle)

    def script(self, path: str, *steps: Step) -> None:
        with self._lock:
            self._scripts.setdefault(path, deque()).extend(steps)

    def paths(self) -> list[str]:
        return [seen.path for seen in self.requests]

    def ingested(self) -> list[str]:
        """Span ids of every ingest request, in order (a resent span shows twice)."""
        return [
            span["id"]
            for seen in self.requests
            if seen.path == INGEST and isinstance(seen.body, dict)
            for span in seen.body["spans"]
        ]

    def _handle(self, request: httpx.Request) -> httpx.Response:
        raw = request.read()
        data = gzip.decompress(raw) if request.headers.get("content-encoding") == "gzip" else raw
        body = json.loads(data) if data else None
        path = request.url.path
        with self._lock:
            target = request.url.raw_path.decode("ascii")
            self.requests.append(
                Seen(request.method, path, request.headers, body, len(raw), target)
            )
            queue = self._scripts.get(path)
            step = queue.popleft() if queue else None
        if step is None:
            return self._default(path, body)
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, httpx.Response):
            return step
        return step(request)

    def _default(self, path: str, body: Any) -> httpx.Response:
        if path == INGEST:
            count = len(body["spans"]) + len(body["traces"])
            return respond(200, {"accepted": count, "duplicates": 0, "rejected": []})
        return respond(404, {"error": "not_found", "detail": path})


# -- the virtual clock --------------------------------------------------------------------------


class VirtualClock:
    """Monotonic and wall time that only the sink's sleeps move; records every sleep."""

    def __init__(self, start: float = 1000.0, wall: float = 1_767_225_600.0) -> None:
        self.now = start
        self._offset = wall - start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now + self._offset

    def sleep(self, seconds: float, interrupt: threading.Event) -> bool:
        self.sleeps.append(round(seconds, 6))
        if interrupt.is_set():
            return True
        self.now += seconds
        return False

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- the real threaded server -------------------------------------------------------------------


class FakeBitfabServer:
    """A bitfab server in a thread: ingest and replay over a SQLite store, with fault modes.

    ``mode`` applies to ingest requests: ``normal``, ``blackhole`` (read the request, never
    answer), ``slow`` (wait ``delay`` seconds first), ``close_after_read`` (read it, store
    nothing, close the connection), ``close_after_commit`` (store it, then close without an
    answer). ``faults`` limits how many requests get the mode (None: all). ``statuses`` are
    scripted answers ``(status, headers, body)`` that go first.
    """

    def __init__(self, db: Path, *, api_key: str = API_KEY, port: int = 0) -> None:
        self.db = db
        self.api_key = api_key
        self.store: Store = open_store(db)
        self.mode = "normal"
        self.delay = 0.0
        self.faults: int | None = None
        self.send_record = False
        self.statuses: deque[tuple[int, dict[str, str], Any]] = deque()
        self.received: list[str] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._httpd is not None
        port: int = self._httpd.server_address[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeBitfabServer:
        self.release.clear()
        httpd = _QuietServer(("127.0.0.1", self._port), _Handler)
        httpd.daemon_threads = True
        httpd.fake = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self._port = self.port
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering (the port is free again; ``start()`` reopens it)."""
        self.release.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def close(self) -> None:
        self.stop()
        self.store.close()

    def take_fault(self) -> bool:
        with self._lock:
            if self.mode == "normal":
                return False
            if self.faults is None:
                return True
            if self.faults > 0:
                self.faults -= 1
                return True
            return False

    def stored_ids(self) -> list[str]:
        import sqlite3

        conn = sqlite3.connect(self.db)
        try:
            return [row[0] for row in conn.execute("SELECT id FROM spans ORDER BY id")]
        finally:
            conn.close()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        return None  # a client that hung up (timeouts, cut connections) is expected here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-bitfab"

    def log_message(self, format: str, *args: Any) -> None:
        return None

    @property
    def fake(self) -> FakeBitfabServer:
        return self.server.fake  # type: ignore[attr-defined,no-any-return]

    # -- plumbing -------------------------------------------------------------------------------

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if len(raw) < length:
            raise ConnectionError("the request body was cut")
        if self.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        return json.loads(raw) if raw else {}

    def _authorized(self) -> bool:
        fake = self.fake
        with fake._lock:
            fake.requests.append((self.command, self.path, dict(self.headers.items())))
        if self.headers.get("Authorization") == f"Bearer {fake.api_key}":
            return True
        self._send(401, {"error": "unauthorized", "detail": "missing or wrong API key"})
        return False

    def _drop_connection(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the client left already

    # -- routes ---------------------------------------------------------------------------------

    def do_POST(self) -> None:
        if not self._authorized():
            return
        path = urlsplit(self.path).path
        try:
            body = self._body()
        except (ConnectionError, ValueError, OSError):
            self.close_connection = True
            return
        if path == INGEST:
            self._ingest(body)
        elif path == "/api/sdk/replay/start":
            self._send(200, self._start(body))
        elif path == "/api/sdk/replay/complete":
            self._send(200, self._complete(body))
        elif path == "/api/sdk/replay/interrupt":
            self.fake.store.set_test_run_status(body["testRunId"], "interrupted")
            self._send(200, {})
        else:
            self._send(404, {"error": "not_found", "detail": path})

    def do_GET(self) -> None:
        if not self._authorized():
            return
        parts = urlsplit(self.path)
        store = self.fake.store
        if parts.path.startswith("/api/sdk/externalSpans/"):
            span_id = unquote(parts.path.rsplit("/", 1)[1])
            record = store.get_span(span_id)
            if record is None:
                self._send(404, {"error": "not_found", "detail": f"no span {span_id}"})
                return
            answer: dict[str, Any] = {
                "id": record["id"],
                "externalTraceId": record["traceId"],
                "rawData": {"span_data": record["rawSpan"]["span_data"]},
            }
            if self.fake.send_record:
                answer["record"] = record
            self._send(200, answer)
        elif parts.path.startswith("/api/sdk/replay/spanTree/"):
            span_id = unquote(parts.path.rsplit("/", 1)[1])
            query = parse_qs(parts.query)
            tree = service.span_tree(
                store.subtree(span_id),
                span_id,
                include_outputs=query.get("includeOutputs", ["true"])[0] != "false",
                include_root_output=query.get("includeRootOutput", ["true"])[0] != "false",
            )
            if tree is None:
                self._send(404, {"error": "not_found", "detail": f"no span {span_id}"})
            else:
                self._send(200, {"root": tree})
        else:
            self._send(404, {"error": "not_found", "detail": parts.path})

    def _ingest(self, body: dict[str, Any]) -> None:
        fake = self.fake
        spans, traces = body.get("spans", []), body.get("traces", [])
        with fake._lock:
            fake.received.extend(str(span.get("id")) for span in spans)
            scripted = fake.statuses.popleft() if fake.statuses else None
        if scripted is not None:
            status, headers, answer = scripted
            self._send(status, answer, headers)
            return
        fault = fake.mode if fake.take_fault() else "normal"
        if fault == "blackhole":
            fake.release.wait()
            self._drop_connection()
            return
        if fault == "slow":
            time.sleep(fake.delay)
        if fault == "close_after_read":
            self._drop_connection()
            return
        written = fake.store.write(spans, traces)
        if fault == "close_after_commit":
            self._drop_connection()
            return
        self._send(
            200,
            {
                "accepted": written.accepted,
                "duplicates": written.spans_duplicate + written.traces_duplicate,
                "rejected": [
                    {"kind": r.kind, "index": r.index, "id": r.id, "reason": r.reason}
                    for r in written.rejected
                ],
            },
        )

    def _start(self, body: dict[str, Any]) -> dict[str, Any]:
        store = self.fake.store
        key = body["traceFunctionKey"]
        selection = service.select_items(
            store, key, limit=body.get("limit"), trace_ids=body.get("traceIds")
        )
        payload = [service.item_payload(item) for item in selection.items]
        if body.get("dryRun") or not selection.items:
            return {
                "experimentId": None,
                "testRunId": None,
                "experimentUrl": None,
                "testRunUrl": None,
                "items": payload,
                "unknownTraceIds": selection.unknown_trace_ids,
            }
        run_id = str(uuid.uuid4())
        metadata = body.get("metadata") or {}
        store.create_test_run(
            TestRun(
                id=run_id,
                key=key,
                created_at=utc_now_iso(),
                name=body.get("name"),
                status="running",
                options=metadata.get("options") or {},
                code_version=metadata.get("codeVersion"),
                extra={"items": payload, "unknownTraceIds": selection.unknown_trace_ids},
            )
        )
        return {
            "experimentId": run_id,
            "testRunId": run_id,
            "experimentUrl": f"/runs/{run_id}",
            "testRunUrl": f"/runs/{run_id}",
            "items": payload,
            "unknownTraceIds": selection.unknown_trace_ids,
        }

    def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        store = self.fake.store
        run_id = body["testRunId"]
        items = body.get("items") or []
        store.complete_test_run(
            run_id,
            items=service.run_item_rows(items),
            summary=body.get("summary") or {},
            status=body.get("status") or "completed",
        )
        trace_ids = store.replay_trace_ids(run_id)
        return {
            "traceIds": {trace_id: trace_id for trace_id in trace_ids},
            "tokens": store.token_totals(trace_ids) if trace_ids else {},
            "traceCount": len(trace_ids),
        }


# -- the fault-injecting TCP proxy --------------------------------------------------------------


class FaultProxy:
    """Forwards 127.0.0.1:<port> to ``upstream``; the first ``cuts`` connections are broken.

    ``cut_after``: forward that many request bytes, then close both sides (a reset mid-request).
    ``drop_answer``: forward the whole request, then close instead of forwarding the answer (the
    server has committed; the client can't know).
    """

    def __init__(
        self,
        upstream_port: int,
        *,
        cut_after: int | None = None,
        drop_answer: bool = False,
        cuts: int = 1,
    ) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.drop_answer = drop_answer
        self.cuts = cuts
        self.connections = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def close(self) -> None:
        self._stop.set()
        self._accepting.join(5)
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            with self._lock:
                self.connections += 1
                faulty = self.cuts > 0
                self.cuts -= 1
            thread = threading.Thread(target=self._pump, args=(client, faulty), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _pump(self, client: socket.socket, faulty: bool) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        sent = 0
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select([client, upstream], [], [], 0.05)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        if (
                            faulty
                            and self.cut_after is not None
                            and sent + len(data) >= self.cut_after
                        ):
                            upstream.sendall(data[: self.cut_after - sent])
                            return
                        sent += len(data)
                        upstream.sendall(data)
                    else:
                        if faulty and self.drop_answer:
                            return
                        client.sendall(data)
        except OSError:
            return
        finally:
            for sock in (client, upstream):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
