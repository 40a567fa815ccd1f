"""`bitfab serve` as users run it: a real process on a loopback port, real sockets (E4, E10)."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_helpers import check_answer, span_record

from bitfab.store import SQLiteStore
from bitfab.store.keys import new_api_key

READY = re.compile(r"bitfab server on http://127\.0\.0\.1:(\d+)")


class Server:
    """A `bitfab serve` subprocess; its stderr is collected by a thread."""

    def __init__(self, db: Path, *extra: str) -> None:
        self.db = db
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bitfab.cli", "serve", "--port", "0", "--db", str(db), *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("BITFAB_")},
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
        if not ready.wait(20):
            self.process.kill()
            self.stop()
            raise AssertionError("the server did not start:\n" + "".join(self.lines))
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while True:  # bound and listening; wait for the app's startup
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "".join(self.lines)
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send ``sig``, then the exit status; the log is complete afterwards."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(20)
        finally:
            self.reader.join(5)
            assert self.process.stderr is not None
            self.process.stderr.close()

    @property
    def log(self) -> str:
        return "".join(self.lines)


@pytest.fixture(scope="module")
def secret(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    db = tmp_path_factory.mktemp("socket") / "served.db"
    with SQLiteStore(db) as store:
        key, value = new_api_key(scope="all")
        store.create_api_key(key)
    return db, value


@pytest.fixture(scope="module")
def server(secret: tuple[Path, str]) -> Iterator[Server]:
    running = Server(
        secret[0],
        "--header-timeout",
        "1",
        "--timeout-keep-alive",
        "1",
        "--body-timeout",
        "1",
        "--max-wire-mb",
        "1",
    )
    yield running
    running.stop()


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    return sock


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closes ``sock`` (reading and discarding any answer)."""
    started = time.monotonic()
    sock.settimeout(seconds)
    with contextlib.suppress(ConnectionResetError):
        while sock.recv(65536):
            pass
    return time.monotonic() - started


def test_health_and_ingest_over_real_http(server: Server, secret: tuple[Path, str]) -> None:
    """/healthz needs no key; an ingest over a socket is committed and logged."""
    assert httpx.get(f"{server.url}/healthz").json() == {"ok": True}
    headers = {"Authorization": f"Bearer {secret[1]}"}
    answer = httpx.post(
        f"{server.url}/api/bitfab/v1/ingest",
        json={"spans": [span_record("sock-1", "t-sock")]},
        headers=headers,
    )
    check_answer(answer, [secret[1]])
    assert answer.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert httpx.get(f"{server.url}/api/v1/spans/sock-1", headers=headers).status_code == 200
    assert httpx.get(f"{server.url}/api/v1/spans/sock-1").status_code == 401
    time.sleep(0.1)
    assert re.search(r"POST /api/bitfab/v1/ingest 200 [\d.]+ms [0-9a-f]{32}", server.log)


def test_a_declared_oversize_body_is_refused_before_it_is_sent(
    server: Server, secret: tuple[Path, str]
) -> None:
    """E4: 50 MB announced, a few bytes sent: 413 arrives at once and the connection closes."""
    with connect(server) as sock:
        sock.sendall(
            b"POST /api/bitfab/v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + secret[1].encode() + b"\r\n"
            b'Content-Length: 52428800\r\n\r\n{"spans": ['
        )
        sock.settimeout(5)
        started = time.monotonic()
        assert sock.recv(65536).startswith(b"HTTP/1.1 413")
        assert closed_within(sock, 5) + time.monotonic() - started < 0.5


def test_slow_and_idle_connections_are_closed(server: Server) -> None:
    """E10: a request head sent a byte at a time, a silent connection and an idle keep-alive
    connection are all closed by the server after about a second."""
    trickle = connect(server)
    silent = connect(server)
    idle = connect(server)
    started = time.monotonic()
    try:
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        idle.settimeout(5)
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
        for byte in request:
            try:
                trickle.sendall(bytes([byte]))
            except OSError:
                break  # closed by the server
            if time.monotonic() - started > 4:
                break
            time.sleep(0.1)
        assert closed_within(trickle, 3) < 3
        assert closed_within(silent, 3) < 3
        assert closed_within(idle, 3) < 3
        assert time.monotonic() - started < 5
    finally:
        for sock in (trickle, silent, idle):
            sock.close()


def test_a_body_sent_too_slowly_gets_408(server: Server, secret: tuple[Path, str]) -> None:
    """E10: headers complete, the body trickles: 408 after the body timeout."""
    with connect(server) as sock:
        sock.sendall(
            b"POST /api/bitfab/v1/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + secret[1].encode() + b"\r\nContent-Length: 100\r\n\r\n{"
        )
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 408")


def test_sigterm_stops_gracefully_and_leaves_a_sound_store(tmp_path: Path) -> None:
    """SIGTERM: exit status 0, the store closed by the app's shutdown, integrity_check ok."""
    db = tmp_path / "stopped.db"
    server = Server(db, "--no-auth")
    answer = httpx.post(
        f"{server.url}/api/sdk/otel/v1/traces",
        json={"resourceSpans": []},
    )
    assert answer.status_code == 200
    httpx.post(f"{server.url}/api/sdk/externalSpans", json=span_record("kept", "t-kept"))
    assert server.stop() == 0
    assert "store closed" in server.log
    assert "Traceback" not in server.log
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT id FROM spans").fetchall() == [("kept",)]


def test_serve_without_keys_says_how_to_create_one(tmp_path: Path) -> None:
    """With auth on and no keys, startup says which command creates one."""
    server = Server(tmp_path / "empty.db")
    try:
        assert "no API keys yet" in server.log
        assert "bitfab keys create --db" in server.log
    finally:
        assert server.stop() == 0


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    """Binding a taken port: one line saying what to do, exit status 1, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bitfab.cli",
                "serve",
                "--port",
                str(port),
                "--db",
                str(tmp_path / "x.db"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1
    assert done.stderr.startswith(f"bitfab: cannot listen on 127.0.0.1:{port}")
    assert "Traceback" not in done.stderr


def test_kill_9_mid_ingest_loses_no_acknowledged_span(tmp_path: Path) -> None:
    """B12: SIGKILL while 4 clients ingest: after a restart every acknowledged span is there,
    the file is sound, and re-sending every batch (the clients' retry) adds no duplicate."""
    db = tmp_path / "killed.db"
    server = Server(db, "--no-auth")
    acked: list[str] = []
    batches: list[list[str]] = []

    def client(n: int) -> None:
        with httpx.Client(base_url=server.url, timeout=5) as http:
            for b in itertools.count():
                ids = [f"c{n}-b{b}-s{i}" for i in range(50)]
                batches.append(ids)
                spans = [span_record(i, f"t-{i}") for i in ids]
                try:
                    answer = http.post("/api/bitfab/v1/ingest", json={"spans": spans})
                except httpx.HTTPError:
                    return
                if answer.status_code == 200:
                    acked.extend(ids)

    clients = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in clients:
        thread.start()
    time.sleep(random.uniform(0.3, 0.8))
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    for thread in clients:
        thread.join(10)
    assert acked, "no batch was acknowledged before the kill"

    restarted = Server(db, "--no-auth")
    try:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            stored = {row[0] for row in conn.execute("SELECT id FROM spans")}
        assert set(acked) <= stored
        with httpx.Client(base_url=restarted.url, timeout=10) as http:
            for ids in batches:
                spans = [span_record(i, f"t-{i}") for i in ids]
                answer = http.post("/api/bitfab/v1/ingest", json={"spans": spans})
                assert answer.status_code == 200
        with contextlib.closing(sqlite3.connect(db)) as conn:
            rows = [row[0] for row in conn.execute("SELECT id FROM spans")]
        assert sorted(rows) == sorted({i for ids in batches for i in ids})
    finally:
        assert restarted.stop() == 0


# Read at import: the autouse fixture clears BITFAB_* variables before each test runs.
_KILLS = int(os.environ.get("BITFAB_TEST_KILLS", "8"))


def test_repeated_kill_9_during_a_load_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """B12 under load: the server is killed with SIGKILL at random moments, again and again
    (BITFAB_TEST_KILLS times, 8 by default; 50 for the full run), while 3 clients keep
    ingesting and retry every batch until it is acknowledged, as the SDK does. In the end every
    acknowledged span is stored exactly once and the file is sound."""
    kills = _KILLS
    db = tmp_path / "killed-often.db"
    rng = random.Random(12)
    current = {"url": ""}
    stop = threading.Event()
    acked: list[str] = []
    sent: list[str] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        with httpx.Client(timeout=2) as http:
            for b in itertools.count():
                if stop.is_set():
                    return
                ids = [f"c{n}-b{b}-s{i}" for i in range(20)]
                with lock:
                    sent.extend(ids)
                spans = [span_record(i, f"t-{i}") for i in ids]
                while True:  # retried until acknowledged, like the SDK's exporter
                    try:
                        answer = http.post(
                            f"{current['url']}/api/bitfab/v1/ingest", json={"spans": spans}
                        )
                    except httpx.HTTPError:
                        answer = None
                    if answer is not None and answer.status_code == 200:
                        with lock:
                            acked.extend(ids)
                        break
                    if stop.is_set():
                        return
                    time.sleep(0.02)

    server = Server(db, "--no-auth")
    current["url"] = server.url
    clients = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(3)]
    for thread in clients:
        thread.start()
    try:
        for _ in range(kills):
            time.sleep(rng.uniform(0.05, 0.4))
            assert server.stop(signal.SIGKILL) == -signal.SIGKILL
            server = Server(db, "--no-auth")
            current["url"] = server.url
        time.sleep(0.5)  # let every batch in flight be retried against the last server
        stop.set()
        for thread in clients:
            thread.join(10)
    finally:
        stop.set()
        assert server.stop() == 0
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = [row[0] for row in conn.execute("SELECT id FROM spans")]
    assert len(acked) >= 20 * kills // 2, "too little traffic reached the server to mean much"
    assert len(rows) == len(set(rows))
    assert set(acked) <= set(rows) <= set(sent)
