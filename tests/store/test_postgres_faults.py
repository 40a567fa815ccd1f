"""Faults and races on the PostgreSQL store: busy pools and locks, a server that goes away,
several processes writing one trace while it is dropped, and fork."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pg import PG_URL, SKIP_REASON, fresh_schema, schema_url
from psycopg import sql

from bitfab.exceptions import StoreError
from bitfab.store import StoreBusyError, StoreFullError, WriteResult
from bitfab.store.postgres import PostgresStore
from bitfab.store.postgres_conn import lock_key, trace_lock

from .factories import span, trace
from .processes import start_child

pytestmark = pytest.mark.skipif(PG_URL is None, reason=SKIP_REASON)


@pytest.fixture
def pg() -> Iterator[tuple[str, str]]:
    """``(url, schema)`` of a fresh schema."""
    with fresh_schema() as found:
        yield found


def test_an_exhausted_pool_raises_busy_instead_of_hanging(pg: tuple[str, str]) -> None:
    """With its one connection taken, a call waits busy_timeout, then raises StoreBusyError."""
    url, _ = pg
    store = PostgresStore(url, min_size=0, max_size=1, busy_timeout=0.3)
    holding, release = threading.Event(), threading.Event()

    def hold(conn: Any) -> None:
        holding.set()
        release.wait(30)

    # The store's own pool, held by work that waits: what a slow request would do.
    holder = threading.Thread(target=store._conns.run, args=(hold, "holding"))
    holder.start()
    holding.wait(30)
    try:
        with pytest.raises(StoreBusyError) as info:
            store.count_spans()
    finally:
        release.set()
        holder.join()
    after = store.write([span("after")])
    store.close()

    assert "all 1 connections stayed in use for 0.3s; retry later" in str(info.value)
    assert after == WriteResult(spans_inserted=1)


def test_a_trace_locked_by_another_transaction_raises_busy_after_the_timeout(
    pg: tuple[str, str],
) -> None:
    """B14: a drop holding a trace's lock makes a write to that trace StoreBusyError."""
    url, schema = pg
    store = PostgresStore(url, busy_timeout=0.3)
    store.write([span("before", trace="t-1")])
    with psycopg.connect(url) as other:  # a transaction of another server, mid-drop
        other.execute(
            "SELECT pg_advisory_xact_lock(%s, %s)",
            (lock_key("bitfab trace " + schema), trace_lock("t-1")),
        )
        with pytest.raises(StoreBusyError) as info:
            store.write([span("blocked", trace="t-1")])
        # a trace of another lock bucket is not held up
        other_trace = next(
            t for t in (f"t-{n}" for n in range(2, 200)) if trace_lock(t) != trace_lock("t-1")
        )
        elsewhere = store.write([span("elsewhere", trace=other_trace)])
        other.rollback()
    after = store.write([span("blocked", trace="t-1")])
    store.close()

    assert "another transaction held the rows or locks needed" in str(info.value)
    assert info.value.retry_after == 1.0
    assert elsewhere == after == WriteResult(spans_inserted=1)


class Proxy:
    """A TCP proxy on 127.0.0.1 to the test PostgreSQL, that can be stopped like a server dying."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            with self.lock:
                self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        # shutdown() first: close() alone leaves a thread blocked in accept() accepting.
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()


def test_a_server_that_goes_away_gives_a_store_error_not_a_hang(pg: tuple[str, str]) -> None:
    """Connections cut and the port closed: calls raise StoreError naming host and port."""
    url, _ = pg
    proxy = Proxy(("127.0.0.1", 5432))
    via_proxy = url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}", 1)
    assert via_proxy != url
    store = PostgresStore(via_proxy, busy_timeout=1.0, connect_timeout=2)
    store.write([span("before")])

    proxy.stop()
    errors = []
    for call in (store.count_spans, lambda: store.write([span("after")])):
        with pytest.raises(StoreError) as info:
            call()
        errors.append(info.value)
    store.close()

    for error in errors:
        assert type(error) is StoreError
        assert str(error).startswith(f"cannot reach PostgreSQL at 127.0.0.1:{proxy.port}/test (")
    with PostgresStore(url) as direct:
        assert direct.count_spans() == 1


SAME_TRACE_WRITER = """
import random
from bitfab.store.postgres import PostgresStore
from bitfab.store import StoreBusyError
url, name, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
records = [record(f"s{t}-{i}", f"t{t}") for t in range(20) for i in range(30)]
rng.shuffle(records)
counts = [0, 0, 0]
with PostgresStore(url) as store:
    for start in range(0, len(records), 25):
        while True:
            try:
                result = store.write(records[start:start + 25])
                break
            except StoreBusyError:
                time.sleep(0.01)
        counts[0] += result.spans_inserted
        counts[1] += result.spans_duplicate
        counts[2] += result.spans_discarded
print(*counts)
"""


def test_processes_writing_one_traces_spans_while_some_are_dropped_keep_them_consistent(
    pg: tuple[str, str],
) -> None:
    """F8 + drops: four processes write the same 600 spans while this one drops half the traces.

    Every span lands exactly once, and no span of a dropped trace survives, whichever
    committed first.
    """
    url, _ = pg
    PostgresStore(url).close()
    children = [start_child(SAME_TRACE_WRITER, url, f"w{n}", str(n)) for n in range(4)]
    dropped = [f"t{t}" for t in range(0, 20, 2)]
    random.Random(7).shuffle(dropped)
    with PostgresStore(url) as store:
        for trace_id in dropped:
            while True:
                try:
                    store.write([], [trace(trace_id, dropped=True)])
                    break
                except StoreBusyError:
                    pass
        outputs = []
        for child in children:
            with child:
                out, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
            outputs.append([int(n) for n in out.split()])
        per_trace = {t: len(store.trace_spans(f"t{t}")) for t in range(20)}
        total = store.count_spans()

    inserted = sum(o[0] for o in outputs)
    assert all(sum(o) == 600 for o in outputs)  # every record of every batch accounted for
    assert per_trace == {t: 0 if t % 2 == 0 else 30 for t in range(20)}
    assert total == 300
    assert inserted >= 300  # spans of dropped traces inserted before their drop count too


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_opens_its_own_pool_and_the_parent_keeps_its_own(
    pg: tuple[str, str],
) -> None:
    """After fork the child writes through the inherited store; the parent's sessions live on."""
    url, _ = pg
    store = PostgresStore(url)
    store.write([span("parent-before")])

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            result = store.write([span("from-child")])
            code = 0 if result == WriteResult(spans_inserted=1) else 2
            store.close()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    store.write([span("parent-after")])
    ids = sorted(record["id"] for record in store.newest_roots("triage", 10))
    store.close()

    assert os.waitstatus_to_exitcode(status) == 0
    assert ids == ["from-child", "parent-after", "parent-before"]


@pytest.fixture
def tiny_tablespace() -> Iterator[str]:
    """A PostgreSQL tablespace on a 3 MiB tmpfs (needs root and a superuser connection)."""
    assert PG_URL is not None
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    # In /tmp itself: the server's user must reach it (pytest's tmp_path is private to root).
    mount_point = Path(tempfile.mkdtemp(prefix="bitfab-tiny-", dir="/tmp"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    name = "bitfab_tiny_" + os.urandom(4).hex()
    try:
        subprocess.run(["chown", "postgres:", str(mount_point)], check=True)
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE TABLESPACE {} LOCATION {}").format(
                    sql.Identifier(name), sql.Literal(str(mount_point))
                )
            )
        yield name
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLESPACE IF EXISTS {}").format(sql.Identifier(name)))
        subprocess.run(["umount", str(mount_point)], check=False)
        mount_point.rmdir()


def test_a_full_disk_raises_store_full_error_and_keeps_acknowledged_writes(
    tiny_tablespace: str,
) -> None:
    """B14 on PostgreSQL: SQLSTATE 53100 (disk full) is StoreFullError; acked spans are there."""
    assert PG_URL is not None
    with fresh_schema() as (_, schema):
        url = schema_url(PG_URL, schema, f"default_tablespace={tiny_tablespace}")
        store = PostgresStore(url)
        acked = 0
        with pytest.raises(StoreFullError) as info:
            while acked < 10_000:
                store.write([span(f"s{acked}", input=["x" * 5_000, os.urandom(2_000).hex()])])
                acked += 1
        stored = store.count_spans()
        store.close()
        with psycopg.connect(PG_URL, autocommit=True) as conn:  # free the tablespace
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))

    assert str(info.value).startswith(
        f"writing to PostgreSQL at 127.0.0.1:5432/test, schema {schema}"
    )
    assert "free disk space on the server" in str(info.value)
    assert acked == stored > 0
