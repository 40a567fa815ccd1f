"""SQLite vs PostgreSQL, one server vs two: ingest and ``replay/start`` side by side in one run.

    python benchmarks/scale.py            # full run (~6 min), rewrites RESULTS.md's section
    python benchmarks/scale.py --quick    # smoke run (~20 s), into a scratch file

Four configurations, measured in one run so that their ratios compare:

1. SQLite, one server;
2. PostgreSQL, one server;
3. PostgreSQL, two servers on one schema;
4. SQLite, two servers on one file (lock contention expected: 503s and errors are counted).

Each backend's store first gets 1,000,000 spans (250,000 traces of 4 spans, 50 root keys),
written by ``server.build_store`` through the store's public ``open_store(url).write`` in
batches of 2,500 traces; the build is timed. Then 4 rounds; in each, every configuration in
turn (the order rotates, so a burst of load from elsewhere on this shared machine does not
fall on one configuration): its server(s) start (``python -m bitfab serve --no-auth --db
<store>``, each on its own loopback port); ``POST /api/sdk/replay/start`` with ``limit=100``
is timed 7 times with ``dryRun: false`` and 7 times with ``dryRun: true`` (alternating between
the servers when there are two); one client process posts batches of 512 small SDK span
records (as ``server.py`` does) over 4 keep-alive connections (2 per server when there are
two) for 10 s after 1.5 s of warm-up; the servers stop and the spans are counted: stored =
before + acknowledged means every acknowledged span was stored exactly once. CPU over the
window: each server, PostgreSQL (its background processes and the backends of these servers;
other clients' backends are left out), the client, and the rest of the machine.

PostgreSQL: ``--pg URL`` (default ``$BITFAB_TEST_PG``, else
``postgresql://postgres@127.0.0.1:5432/test``). A fresh schema ``bitfab_bench_<hex>`` is
created and dropped at the end; the servers reach it with ``?options=-csearch_path=<schema>``.
If PostgreSQL cannot be reached, configurations 2 and 3 are skipped with a message.

With ``--quick``: a store of 20,000 spans, one round of 2 s windows, 10 ``replay/start``
calls per mode.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import httpx
import server
from common import arguments, command_line, machine, median, results_path, table, write_section

import bitfab
from bitfab.client import _ids
from bitfab.tracing.span import format_id

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
KEYS = 50
START_KEY = "bench.fn07"
PROBE_APP = "bitfab-scale-probe"
CHILD_TIMEOUT = 180.0
CONNECTIONS = 4
NAMES = (
    "1. SQLite, one server",
    "2. PostgreSQL, one server",
    "3. PostgreSQL, two servers",
    "4. SQLite, two servers",
)


# -- PostgreSQL: reachability, a schema of our own, its processes -------------------------------


def pg_unreachable(url: str) -> str | None:
    """Why PostgreSQL at ``url`` cannot be used, or None if it can."""
    try:
        import psycopg
    except ImportError as exc:
        return f"psycopg is not installed ({exc}); pip install 'bitfab[postgres]'"
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return " ".join(str(exc).split()) or type(exc).__name__
    return None


def with_schema(url: str, schema: str, app: str) -> str:
    """``url`` whose connections use ``schema`` and are named ``app`` in pg_stat_activity."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = " ".join([v for k, v in query if k == "options"] + [f"-csearch_path={schema}"])
    query = [(k, v) for k, v in query if k not in ("options", "application_name")]
    query += [("options", options), ("application_name", app)]
    # quote, not quote_plus: libpq reads %20 as a space but "+" as a plus.
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def where(url: str) -> str:
    """host:port/database of a URL, without user or password."""
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(url)
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


@contextlib.contextmanager
def pg_schema(url: str) -> Iterator[tuple[str, str, str]]:
    """A new schema: ``(store URL, schema, application name)``; dropped with its tables after."""
    import psycopg
    from psycopg import sql

    token = secrets.token_hex(5)
    schema, app = f"bitfab_bench_{token}", f"bitfab-scale-{token}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield with_schema(url, schema, app), schema, app
    finally:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        print(f"dropped schema {schema}")


def pg_settings(url: str) -> dict[str, str]:
    import psycopg

    names = ("server_version", "shared_buffers", "synchronous_commit", "max_connections")
    with psycopg.connect(url, autocommit=True) as conn:
        return {n: str(conn.execute(f"SHOW {n}").fetchone()[0]) for n in names}


def postgres_cpu(conn: Any, app: str) -> tuple[dict[int, float], set[int]]:
    """CPU seconds of PostgreSQL's processes (``comm`` is ``postgres``) except other clients'
    backends, and the pids of the backends named ``app`` (this benchmark's servers)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm", encoding="ascii") as handle:
                    if handle.read().strip() == "postgres":
                        pids.append(int(entry))
            except OSError:
                continue
    ours: set[int] = set()
    foreign: set[int] = set()
    rows = conn.execute("SELECT pid, application_name, backend_type FROM pg_stat_activity")
    for pid, name, kind in rows.fetchall():
        if kind == "client backend":
            (ours if name == app else foreign).add(pid)
    cpu = {}
    for pid in pids:
        if pid not in foreign:
            seconds = server.cpu_seconds(pid)
            if seconds is not None:
                cpu[pid] = seconds
    return cpu, ours


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from ``/proc/stat``."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / tick, sum(fields[:8]) / tick


# -- the ingest client (a child process) --------------------------------------------------------


def ingest_client(config: dict[str, Any]) -> dict[str, Any]:
    """Post batches over ``connections`` threads, spread evenly over ``urls``, until the time
    is up; CPU of the servers, PostgreSQL, this process and the machine over the window."""
    urls = [u + "/api/bitfab/v1/ingest" for u in config["urls"]]
    span_template = config["span_template"].encode()
    placeholder = server.PLACEHOLDER.encode()
    batch = server.BATCH
    began = time.monotonic()
    window_start = began + config["warmup"]
    window_end = window_start + config["seconds"]
    lock = threading.Lock()
    totals = {"spans": 0, "requests": 0, "acknowledged": 0, "exceptions": 0}
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    failures: list[str] = []
    by_server = [0] * len(urls)

    def worker(index: int) -> None:
        url = urls[index % len(urls)]
        spans = requests = acknowledged = exceptions = 0
        mine: list[float] = []
        bad: dict[str, int] = {}
        headers = {"Content-Type": "application/json"}
        with httpx.Client(timeout=60, headers=headers) as http:
            while time.monotonic() < window_end:
                ids = [format_id(_ids.next()).encode() for _ in range(batch)]
                body = (
                    b'{"spans":['
                    + b",".join(span_template.replace(placeholder, i) for i in ids)
                    + b'],"traces":[]}'
                )
                start = time.monotonic()
                try:
                    answer = http.post(url, content=body)
                except httpx.HTTPError as exc:
                    exceptions += 1
                    with lock:
                        failures.append(repr(exc))
                    time.sleep(0.05)
                    continue
                end = time.monotonic()
                ok = answer.status_code == 200 and answer.json().get("accepted") == batch
                if not ok:
                    name = str(answer.status_code)
                    bad[name] = bad.get(name, 0) + 1
                    with lock:
                        if len(failures) < 50:
                            failures.append(f"{answer.status_code} {answer.text[:200]}")
                    continue
                acknowledged += batch
                if end >= window_start:  # with those still in flight when the window ended
                    mine.append(end - start)
                if window_start <= end <= window_end:
                    spans += batch
                    requests += 1
        with lock:
            totals["spans"] += spans
            totals["requests"] += requests
            totals["acknowledged"] += acknowledged
            totals["exceptions"] += exceptions
            by_server[index % len(urls)] += spans
            for name, count in bad.items():
                statuses[name] = statuses.get(name, 0) + count
            latencies.extend(mine)

    pg = config["pg"]
    probe = None
    if pg is not None:
        import psycopg

        probe = psycopg.connect(pg["url"], autocommit=True, application_name=PROBE_APP)

    def snapshot() -> dict[str, Any]:
        shot: dict[str, Any] = {
            "servers": [server.cpu_seconds(pid) for pid in config["server_pids"]],
            "own": server._own_cpu(),
            "machine": machine_busy(),
        }
        if probe is not None:
            shot["pg"], shot["ours"] = postgres_cpu(probe, pg["app"])
        return shot

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(config["connections"])]
    try:
        for thread in threads:
            thread.start()
        time.sleep(max(0.0, window_start - time.monotonic()))
        before = snapshot()
        time.sleep(max(0.0, window_end - time.monotonic()))
        after = snapshot()
        for thread in threads:
            thread.join(config["warmup"] + config["seconds"] + 120)
    finally:
        if probe is not None:
            probe.close()
    seconds = config["seconds"]
    servers_cpu = [
        None if a is None or b is None else a - b
        for b, a in zip(before["servers"], after["servers"], strict=True)
    ]
    pg_cpu = pg_backends = None
    if probe is not None:
        # A process started within the window counts from zero; one that ended is missed.
        deltas = {pid: cpu - before["pg"].get(pid, 0.0) for pid, cpu in after["pg"].items()}
        pg_cpu = sum(deltas.values())
        pg_backends = sum(d for pid, d in deltas.items() if pid in after["ours"])
    return {
        **totals,
        "statuses": statuses,
        "seconds": seconds,
        "spans_by_server": by_server,
        "latencies_ms": [round(1000 * x, 2) for x in latencies],
        # CPU seconds over the window
        "servers_cpu_s": servers_cpu,
        "pg_cpu_s": pg_cpu,
        "pg_backends_cpu_s": pg_backends,
        "client_cpu_s": after["own"] - before["own"],
        "machine_cpu_s": after["machine"][0] - before["machine"][0],
        "failures": failures[:5],
    }


def run_client(config: dict[str, Any]) -> dict[str, Any]:
    """This script in its client mode; its last stdout line is the JSON report."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITFAB_")}
    timeout = config["warmup"] + config["seconds"] + CHILD_TIMEOUT
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--ingest-client", json.dumps(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the ingest client failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


# -- replay/start over running servers -----------------------------------------------------------


def measure_start(urls: list[str], key: str, calls: int) -> dict[str, Any]:
    """``calls`` timed ``replay/start`` calls per mode, alternating over ``urls``, after one
    untimed call on each server (the slowest of those is kept as the cold call)."""
    out: dict[str, Any] = {}
    clients = [httpx.Client(base_url=u, timeout=60) for u in urls]
    try:
        for dry_run in (False, True):
            body = {"traceFunctionKey": key, "limit": 100, "dryRun": dry_run}

            def call(http: httpx.Client, body: dict[str, Any] = body) -> float:
                start = time.perf_counter()
                answer = http.post("/api/sdk/replay/start", json=body)
                elapsed = (time.perf_counter() - start) * 1000
                if answer.status_code != 200:
                    raise RuntimeError(f"replay/start: {answer.status_code} {answer.text[:300]}")
                data = answer.json()
                if len(data["items"]) != 100 or (data["testRunId"] is None) != body["dryRun"]:
                    raise RuntimeError(f"replay/start answered {len(data['items'])} items")
                return elapsed

            first = max(call(http) for http in clients)
            times = [call(clients[i % len(clients)]) for i in range(calls)]
            out["dry" if dry_run else "run"] = {"first_ms": first, "times_ms": times}
    finally:
        for http in clients:
            http.close()
    return out


# -- the configurations --------------------------------------------------------------------------


@dataclass
class Config:
    name: str
    db: str
    servers: int
    pg: dict[str, str] | None
    rounds: list[dict[str, Any]] = field(default_factory=list)


def count_spans(db: str) -> int:
    from bitfab.store import open_store

    store = open_store(db)
    try:
        return store.count_spans()
    finally:
        store.close()


def run_round(
    config: Config, span_template: str, seconds: float, warmup: float, start_calls: int
) -> dict[str, Any]:
    """Start the configuration's servers, time ``replay/start``, ingest, stop, count rows."""
    before = count_spans(config.db)
    servers: list[server.Server] = []
    try:
        for _ in range(config.servers):
            servers.append(server.Server(config.db))
        urls = [s.url for s in servers]
        start = measure_start(urls, START_KEY, start_calls)
        report = run_client(
            {
                "urls": urls,
                "span_template": span_template,
                "connections": CONNECTIONS,
                "seconds": seconds,
                "warmup": warmup,
                "server_pids": [s.process.pid for s in servers],
                "pg": config.pg,
            }
        )
    finally:
        for s in servers:
            s.stop()
    stored = count_spans(config.db)
    report.update(
        start=start,
        before=before,
        stored=stored,
        extra=stored - before - report["acknowledged"],
    )
    window = report["seconds"]
    errors = report["exceptions"] + sum(report["statuses"].values())
    print(
        f"{config.name}: {report['spans'] / window:,.0f} spans/s"
        f" ({' + '.join(f'{x / window:,.0f}' for x in report['spans_by_server'])});"
        f" max {max(report['latencies_ms'], default=0):.0f} ms; CPU: server"
        f" {' + '.join(_percent(c, window) for c in report['servers_cpu_s'])}, PostgreSQL"
        f" {_percent(report['pg_cpu_s'], window)} (backends of these servers"
        f" {_percent(report['pg_backends_cpu_s'], window)}), client"
        f" {_percent(report['client_cpu_s'], window)}, machine"
        f" {_percent(report['machine_cpu_s'], window)}; {errors} errors"
        f" {report['statuses'] or ''}; rows {before:,} + {report['acknowledged']:,} acknowledged"
        f" -> {stored:,} ({report['extra']:+,}); replay/start median"
        f" {median(start['run']['times_ms']):.1f} / {median(start['dry']['times_ms']):.1f} ms"
        " (run / dry)"
    )
    for failure in report["failures"][:3]:
        print(f"  e.g. {failure}")
    return report


def summary(config: Config) -> dict[str, Any]:
    """The rounds of a configuration together: rates per round, pooled latencies and CPU."""
    rounds = config.rounds
    seconds = sum(r["seconds"] for r in rounds)
    spans = sum(r["spans"] for r in rounds)
    latencies = sorted(x for r in rounds for x in r["latencies_ms"])

    def total(name: str) -> float | None:
        values = [r[name] for r in rounds]
        return None if any(v is None for v in values) else sum(values)

    def quiet(r: dict[str, Any]) -> dict[str, float]:
        """A round's rate and CPU shares (of one core); others = the rest of the machine."""
        window = r["seconds"]
        server = sum(c or 0.0 for c in r["servers_cpu_s"]) / window
        pg = (r["pg_cpu_s"] or 0.0) / window
        client = r["client_cpu_s"] / window
        busy = r["machine_cpu_s"] / window
        return {
            "rate": r["spans"] / window,
            "server": server,
            "pg": pg,
            "machine": busy,
            "others": max(0.0, busy - server - pg - client),
        }

    servers_cpu = [
        None
        if any(r["servers_cpu_s"][i] is None for r in rounds)
        else sum(r["servers_cpu_s"][i] for r in rounds)
        for i in range(config.servers)
    ]
    server_cpu = None if None in servers_cpu else sum(c or 0.0 for c in servers_cpu)
    pg_cpu, client_cpu, machine_cpu = (
        total("pg_cpu_s"),
        total("client_cpu_s"),
        total("machine_cpu_s"),
    )
    ours = (server_cpu or 0.0) + (pg_cpu or 0.0) + (client_cpu or 0.0)
    statuses: dict[str, int] = {}
    for r in rounds:
        for status, count in r["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    start = {
        mode: {
            "times": [x for r in rounds for x in r["start"][mode]["times_ms"]],
            "first": max(r["start"][mode]["first_ms"] for r in rounds),
        }
        for mode in ("run", "dry")
    }

    def per_span(cpu: float | None) -> float | None:
        return None if cpu is None or not spans else 1e6 * cpu / spans

    return {
        "name": config.name,
        "servers": config.servers,
        "rates": [r["spans"] / r["seconds"] for r in rounds],
        "by_server": [
            sum(r["spans_by_server"][i] for r in rounds) / seconds for i in range(config.servers)
        ],
        "max_ms": latencies[-1] if latencies else None,
        # the round in which other processes took the least CPU
        "quiet": min((quiet(r) for r in rounds), key=lambda q: q["others"]),
        # the most uneven round: (its spans/s per server)
        "worst_split": max(
            ([x / r["seconds"] for x in r["spans_by_server"]] for r in rounds),
            key=lambda split: max(split) / max(1.0, min(split)),
        ),
        "spans_per_s": median([r["spans"] / r["seconds"] for r in rounds]),
        "p50_ms": latencies[len(latencies) // 2] if latencies else None,
        "p95_ms": latencies[int(0.95 * (len(latencies) - 1))] if latencies else None,
        "servers_cpu": [None if c is None else c / seconds for c in servers_cpu],
        "server_cpu": None if server_cpu is None else server_cpu / seconds,
        "pg_cpu": None if pg_cpu is None else pg_cpu / seconds,
        "pg_backends_cpu": None
        if total("pg_backends_cpu_s") is None
        else (total("pg_backends_cpu_s") or 0.0) / seconds,
        "client_cpu": None if client_cpu is None else client_cpu / seconds,
        "machine_cpu": None if machine_cpu is None else machine_cpu / seconds,
        "others_cpu": None if machine_cpu is None else max(0.0, machine_cpu - ours) / seconds,
        "server_us": per_span(server_cpu),
        "pg_us": per_span(pg_cpu),
        "client_us": per_span(client_cpu),
        "pg_backends_us": per_span(total("pg_backends_cpu_s")),
        "statuses": statuses,
        "exceptions": sum(r["exceptions"] for r in rounds),
        "errors": sum(r["exceptions"] for r in rounds) + sum(statuses.values()),
        "acknowledged": sum(r["acknowledged"] for r in rounds),
        "added": sum(r["stored"] - r["before"] for r in rounds),
        "extra": [r["extra"] for r in rounds],
        "start": start,
    }


def pg_maintain(url: str) -> float:
    """VACUUM (ANALYZE) the big tables, as autovacuum would soon after a bulk load; seconds."""
    import psycopg

    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) spans")
        conn.execute("VACUUM (ANALYZE) traces")
    return time.perf_counter() - started


def pg_plan(url: str, key: str) -> str:
    import psycopg

    from bitfab.store import postgres_sql

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + postgres_sql.NEWEST_ROOTS, (key, 100)
        ).fetchall()
    return "\n".join(str(row[0]) for row in rows)


def sqlite_plan(db: str, key: str) -> str:
    from bitfab.store import sqlite_sql

    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("EXPLAIN QUERY PLAN " + sqlite_sql.NEWEST_ROOTS, (key, 100)).fetchall()
    return "\n".join(str(row[-1]) for row in rows)


# -- the report ----------------------------------------------------------------------------------


def source() -> str:
    """The commit of the bitfab package measured, and whether it had uncommitted changes."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(bitfab.__file__)))
    try:
        head = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        changed = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--", "bitfab"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "commit unknown"
    if head.returncode != 0:
        return "commit unknown"
    dirty = " + uncommitted changes in bitfab/" if changed.stdout.strip() else ""
    return f"commit {head.stdout.strip()}{dirty}"


def _percent(value: float | None, per: float = 1.0) -> str:
    return "-" if value is None else f"{100 * value / per:.0f}%"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _errors(s: dict[str, Any]) -> str:
    if not s["errors"]:
        return "0"
    parts = [f"{count:,} x {status}" for status, count in sorted(s["statuses"].items())]
    if s["exceptions"]:
        parts.append(f"{s['exceptions']:,} x no answer")
    return ", ".join(parts)


def _ratio(a: float, b: float) -> str:
    return "-" if not b else f"{a / b:.2f}x"


def _rounded(value: float, step: int = 500) -> str:
    return f"~{step * round(value / step):,.0f}"  # the figures are not better than that


def notes(by_name: dict[str, dict[str, Any]]) -> list[str]:
    """A few sentences read off the figures (so they stay true when the figures change)."""
    lite1, lite2 = by_name.get(NAMES[0]), by_name.get(NAMES[3])
    pg1, pg2 = by_name.get(NAMES[1]), by_name.get(NAMES[2])
    out = []
    if not (lite1 and lite1["server_us"]):
        return out
    lite_total = lite1["server_us"] + lite1["client_us"]
    lite_cap, lite_ceiling = 1e6 / lite1["server_us"], 2e6 / lite_total
    has_pg = bool(pg1 and pg1["server_us"] and pg1["pg_us"])
    if pg1 and has_pg:
        pg_total = pg1["server_us"] + pg1["pg_us"] + pg1["client_us"]
        pg_cap, pg_ceiling = 1e6 / pg1["server_us"], 2e6 / pg_total
        out.append(
            f"**Where a span's CPU goes.** With SQLite the server process does everything,"
            f" SQLite's inserts included: {_us(lite1['server_us'])} us of CPU per span. With"
            f" PostgreSQL the server spends {_us(pg1['server_us'])} us per span (the same"
            " parsing and checking; building the parameters and talking to PostgreSQL instead of"
            f" running SQLite) and PostgreSQL {_us(pg1['pg_us'])} us more (the inserts into the"
            " table and its indexes, WAL, commits; its backends for these servers alone:"
            f" {_us(pg1['pg_backends_us'])} us). With the client's ~{_us(pg1['client_us'])} us,"
            f" a span costs {_us(lite_total)} us of this machine's CPU with SQLite and"
            f" {_us(pg_total)} us with PostgreSQL. So on an otherwise idle 2-core machine both"
            f" cores together carry at most {_rounded(lite_ceiling)} spans/s with SQLite and"
            f" {_rounded(pg_ceiling)} with PostgreSQL, however many servers; and one server,"
            " whose Python code runs on one core at a time (the GIL: only SQLite's own C code"
            " and socket waits run outside it), can at best reach 1 s / its CPU per span, if it"
            " keeps its core busy:"
            f" {_rounded(lite_cap)} spans/s with SQLite, {_rounded(pg_cap)} with PostgreSQL."
        )
        q_lite, q_pg = lite1["quiet"], pg1["quiet"]
        out.append(
            f"**One server.** PostgreSQL: {pg1['spans_per_s']:,.0f} spans/s (median of the"
            f" rounds), {_ratio(pg1['spans_per_s'], lite1['spans_per_s'])} SQLite's"
            f" {lite1['spans_per_s']:,.0f}. In the quietest round of each (other processes at"
            f" {_percent(q_lite['others'])} / {_percent(q_pg['others'])}): SQLite"
            f" {q_lite['rate']:,.0f} spans/s with its server at {_percent(q_lite['server'])} of"
            f" a core; PostgreSQL {q_pg['rate']:,.0f} with its server at"
            f" {_percent(q_pg['server'])} and PostgreSQL at {_percent(q_pg['pg'])}, the machine"
            f" at {_percent(q_pg['machine'])} of 200%. The SQLite server keeps its core busy;"
            " the PostgreSQL one less so: each request also waits for PostgreSQL (its inserts,"
            " the commit's WAL flush), and with 4 requests in flight there are moments when"
            " all of them wait. On a busier machine the rate is simply the CPU the benchmark's"
            " processes get / their CPU per span."
        )
    if pg1 and pg2 and has_pg and pg2["server_us"] and pg2["pg_us"]:
        # the ceiling at the cheaper of the two configurations' CPU per span
        pg_total = min(pg_total, pg2["server_us"] + pg2["pg_us"] + pg2["client_us"])
        pg_ceiling = 2e6 / pg_total
        gain = 100 * (pg_ceiling / pg_cap - 1)
        q1, q2 = pg1["quiet"], pg2["quiet"]
        effect = (
            "the second process fills the gaps the first leaves while it waits on PostgreSQL,"
            " toward the 2-core ceiling"
            if q2["rate"] > 1.05 * q1["rate"]
            else "the second process adds nothing here; the 2-core ceiling is"
        )
        out.append(
            f"**Two servers on PostgreSQL**: {pg2['spans_per_s']:,.0f} spans/s"
            f" ({_ratio(pg2['spans_per_s'], pg1['spans_per_s'])} one server's; per round"
            f" {', '.join(f'{x:,.0f}' for x in pg2['rates'])} against"
            f" {', '.join(f'{x:,.0f}' for x in pg1['rates'])}), the two servers splitting the"
            f" load {' + '.join(f'{x:,.0f}' for x in pg2['by_server'])}. In the quietest rounds:"
            f" {q2['rate']:,.0f} against {q1['rate']:,.0f} ({_ratio(q2['rate'], q1['rate'])}),"
            f" the machine at {_percent(q2['machine'])} of 200%: {effect}"
            f" ({_rounded(pg_ceiling)} at {_us(pg_total)} us a span"
            + (
                f", only ~{gain:.0f}% above what one server could do with a core of its own,"
                f" {_rounded(pg_cap)})."
                if gain > 0
                else f", below what one server could do with a core of its own,"
                f" {_rounded(pg_cap)})."
            )
            + " Past that, a second server on the same 2 cores brings no CPU: it can only take"
            " some from the first, from PostgreSQL, from the client and from whatever else"
            " runs, which is why the busier rounds vary more with the others' load than with"
            " the number of servers. On separate machines each server brings its own core (up"
            f" to {_rounded(pg_cap)} spans/s each) and PostgreSQL needs ~{_us(pg1['pg_us'])} us"
            f" of its CPU per span ({_rounded(1e6 / pg1['pg_us'])} spans/s per core of the"
            " database machine; its backends, one per connection, run in parallel), so"
            " throughput grows with servers until the database's cores or disk are the limit."
        )
    if lite2:
        waits = (
            "no request waited past the store's 5 s busy timeout"
            if not lite2["errors"]
            else f"errors: {_errors(lite2)} (a write that waits past the busy timeout gets 503"
            " with Retry-After, and the SDK retries it)"
        )
        worst = lite2["worst_split"]
        low, high = min(worst), max(worst)
        split = (
            f"The two servers got {' + '.join(f'{x:,.0f}' for x in lite2['by_server'])} spans/s"
            f" over all rounds, {' + '.join(f'{x:,.0f}' for x in worst)} in the most uneven one:"
            " the process that just committed often takes the lock again at once (its next"
            " batch is already waiting on its in-process lock) while the other sleeps in"
            " SQLite's busy handler, which polls with growing pauses, so one server can starve"
            f" the other for a while (max {_ms(lite2['max_ms'])} ms a request)."
            if not low or high / low > 1.5
            else f"The two servers got {' + '.join(f'{x:,.0f}' for x in lite2['by_server'])}"
            f" spans/s (max {_ms(lite2['max_ms'])} ms a request)."
        )
        out.append(
            f"**Two servers on one SQLite file**: {lite2['spans_per_s']:,.0f} spans/s"
            f" ({_ratio(lite2['spans_per_s'], lite1['spans_per_s'])} one server's), p95"
            f" {_ms(lite2['p95_ms'])} ms a request (one server: {_ms(lite1['p95_ms'])} ms); {waits}."
            f" {split} SQLite lets one writer at a time hold the file, but a server holds it only"
            " while it inserts a batch: the other process can parse and check its next batch"
            " meanwhile, and SQLite needs no CPU beyond the servers'. So on 2 cores two SQLite"
            " servers can gain where PostgreSQL cannot: the idle-machine ceiling"
            f" ({_rounded(lite_ceiling)}) is well above one server's cap ({_rounded(lite_cap)})."
            f" In the quietest rounds: {lite2['quiet']['rate']:,.0f} against"
            f" {lite1['quiet']['rate']:,.0f} spans/s"
            f" ({_ratio(lite2['quiet']['rate'], lite1['quiet']['rate'])}), the machine at"
            f" {_percent(lite2['quiet']['machine'])} of 200%: the write lock, not the CPU, holds"
            " two servers back. It stays one machine (one file;"
            " SQLite over a network filesystem is not safe), and the lock waits grow with the"
            " writers."
        )
    if pg1:
        lite_ms = median(lite1["start"]["run"]["times"])
        pg_ms = median(pg1["start"]["run"]["times"])
        out.append(
            f"**`replay/start`** (limit=100, `dryRun: false`): median {lite_ms:.1f} ms on"
            f" SQLite, {pg_ms:.1f} ms on PostgreSQL ({_ratio(pg_ms, lite_ms)}). The selection"
            " is one indexed query on both (plans below); the tokens and the models of the 100"
            " traces take one query each (`Store.token_totals`, `Store.trace_models`; the"
            " models were 100 queries, one per trace, until they were asked for at once), and"
            " a run is then written in one transaction. What is left of the difference is the"
            " round trips: each statement is a pool checkout and a context switch to a"
            " PostgreSQL backend, where SQLite answers in-process."
        )
    return out


def report_body(
    quick: bool,
    elapsed: float,
    summaries: list[dict[str, Any]],
    builds: dict[str, dict[str, Any]],
    pg_info: dict[str, Any] | None,
    pg_skipped: str | None,
    plans: dict[str, str],
    setup: dict[str, Any],
) -> str:
    ingest_rows = []
    start_rows = []
    for s in summaries:
        ingest_rows.append(
            [
                s["name"],
                f"{s['spans_per_s']:,.0f}",
                ", ".join(f"{x:,.0f}" for x in s["rates"]),
                " + ".join(f"{x:,.0f}" for x in s["by_server"]),
                _ms(s["p50_ms"]),
                _ms(s["p95_ms"]),
                _ms(s["max_ms"]),
                " + ".join(_percent(c) for c in s["servers_cpu"]),
                _percent(s["pg_cpu"]),
                _percent(s["client_cpu"]),
                _percent(s["others_cpu"]),
                f"{_us(s['server_us'])} / {_us(s['pg_us'])}",
                _errors(s),
                f"{s['acknowledged']:,}",
                f"{s['added']:,}",
            ]
        )
        start_rows.append(
            [
                s["name"],
                f"{median(s['start']['run']['times']):.1f}",
                f"{server._percentile(s['start']['run']['times'], 0.95):.1f}",
                f"{median(s['start']['dry']['times']):.1f}",
                f"{server._percentile(s['start']['dry']['times'], 0.95):.1f}",
                f"{max(s['start']['run']['first'], s['start']['dry']['first']):.1f}",
            ]
        )
    ingest_table = table(
        [
            "configuration",
            "spans/s (median)",
            "spans/s per round",
            "spans/s per server",
            "p50 ms/request",
            "p95 ms/request",
            "max ms/request",
            "server CPU",
            "PostgreSQL CPU",
            "client CPU",
            "others' CPU",
            "CPU us/span: servers / PostgreSQL",
            "errors",
            "spans acknowledged",
            "rows added",
        ],
        ingest_rows,
        align="lrrrrrrrrrrrlrr",
    )
    start_table = table(
        [
            "configuration",
            "`dryRun: false` median ms",
            "`dryRun: false` p95 ms",
            "`dryRun: true` median ms",
            "`dryRun: true` p95 ms",
            "slowest cold first call ms",
        ],
        start_rows,
    )
    build_lines = []
    for name, built in builds.items():
        extra = ""
        if built.get("vacuum_s") is not None:
            extra = f", then `VACUUM (ANALYZE)` of spans and traces in {built['vacuum_s']:.1f} s"
        build_lines.append(
            f"- {name}: {built['spans']:,} spans in {built['traces']:,} traces written in"
            f" {built['seconds']:.0f} s ({built['spans'] / built['seconds']:,.0f} spans/s){extra};"
            f" {built['final']:,} spans at the end of the run"
        )
    by_name = {s["name"]: s for s in summaries}
    exact = all(x == 0 for s in summaries for x in s["extra"])
    exactly_once = (
        "**Exactly once**: after every ingest, the spans counted in the store equal the spans"
        " counted before plus the spans acknowledged (200 with all 512 accepted); the last two"
        " columns agree."
        if exact
        else "**Not exactly once**: stored differs from before + acknowledged in "
        + ", ".join(f"{s['name']} ({s['extra']})" for s in summaries if any(s["extra"]))
        + " (a request without an answer may or may not have been committed)."
    )
    quick_note = (
        "\n> **Smoke run (`--quick`)**: a store of 20,000 spans and 2 s windows; the figures say"
        " little.\n"
        if quick
        else ""
    )
    pg_line = (
        f"- PostgreSQL {pg_info['server_version']} on {pg_info['where']} (the same machine),"
        f" shared_buffers {pg_info['shared_buffers']}, synchronous_commit"
        f" {pg_info['synchronous_commit']}, max_connections {pg_info['max_connections']}"
        if pg_info
        else f"- PostgreSQL: **skipped** ({pg_skipped})"
    )
    plan_text = "".join(
        f"\n{name}, `newest_roots` (the selection of `replay/start`):\n\n```\n{plan}\n```\n"
        for name, plan in plans.items()
    )
    sentences = "\n".join(f"- {n}" for n in [*notes(by_name), exactly_once])
    load_before, load_after = setup["load_before"], setup["load_after"]
    return f"""## Scale: SQLite vs PostgreSQL, one server vs two
{quick_note}
Command: `{command_line()}` (run from the repository root), {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, {elapsed:.0f} s; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (1 min).

{machine()}
{pg_line}
- versions: bitfab {bitfab.__version__} ({source()}), httpx {httpx.__version__}, psycopg {setup["psycopg"]}

How it runs:

- Everything on this one 2-core machine: the servers, PostgreSQL, the client process and,
  the machine being shared, whatever else runs there (the "others' CPU" column).
- Each server: `python -m bitfab serve --no-auth --log-level warning --db <store>` on
  127.0.0.1 (uvicorn, default limits; PostgreSQL through the store's pool of up to 10
  connections).
- The stores: {setup["spans"]:,} spans each ({setup["spans"] // 4:,} traces of 4 spans over
  {KEYS} root keys), written through the store's public `open_store(url).write` in batches of
  2,500 traces, as `benchmarks/server.py` builds its store:
{chr(10).join("  " + line for line in build_lines)}
- {setup["rounds"]} round(s); in each, every configuration in turn, the order rotating from
  round to round so that a burst of load from elsewhere does not fall on one configuration:
  its server(s) start, `replay/start` is timed, the client ingests, the servers stop, the
  spans are counted. Each ingest adds to its backend's store: later rounds run on a larger
  store.
- `replay/start`: {setup["start_calls"]} calls with `{{"traceFunctionKey": "{START_KEY}",
  "limit": 100, "dryRun": false}}` (each creates a test run of 100 items), then as many with
  `dryRun: true`, alternating between the servers, after one untimed call on each.
- Ingest: one client process posts `{{"spans": [512 records]}}` to `/api/bitfab/v1/ingest`
  over {CONNECTIONS} keep-alive connections (2 per server when there are two) for
  {setup["seconds"]:.0f} s after {setup["warmup"]:.1f} s of warm-up. The records are the SDK's
  record of a traced `f(1)` ({setup["record_bytes"]} bytes of JSON) with fresh time-ordered
  ids. spans/s = spans acknowledged (200, all 512 accepted) by answers that arrived within the
  window / the window: the median of the rounds, and each round. ms/request: every request
  answered with 200 from the window's start on (those in flight when it ended included).
- CPU over the windows, 100% = one core: the servers; PostgreSQL = all its processes (the
  backends of these servers, the WAL writer, checkpointer, autovacuum...) except other
  clients' backends; the client; others' = the rest of the machine's busy time (other
  processes, and kernel time charged to no process). CPU us/span = that CPU time / the spans
  acknowledged in the windows.
- Rows: the spans are counted before and after each ingest; "rows added" sums the
  differences, "spans acknowledged" the spans of the answers with 200.

### Ingest

{ingest_table}

### `replay/start` (limit=100), before each ingest

{start_table}

### What it says

{sentences}
{plan_text}"""


def main() -> int:
    parser = arguments(__doc__, "smoke run: about 30 s, a store of 20,000 spans")
    parser.add_argument(
        "--pg",
        default=os.environ.get("BITFAB_TEST_PG") or DEFAULT_PG,
        help="PostgreSQL URL of a database to create a schema in (default: $BITFAB_TEST_PG or"
        f" {DEFAULT_PG})",
    )
    parser.add_argument("--no-pg", action="store_true", help="SQLite configurations only")
    parser.add_argument("--ingest-client", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.ingest_client:
        print(json.dumps(ingest_client(json.loads(opts.ingest_client))))
        return 0

    quick = opts.quick
    began = time.perf_counter()
    setup: dict[str, Any] = {
        "spans": 4 * (5_000 if quick else 250_000),
        "rounds": 1 if quick else 4,
        "seconds": 2.0 if quick else 10.0,
        "warmup": 0.5 if quick else 1.5,
        "start_calls": 10 if quick else 7,
        "load_before": os.getloadavg(),
    }
    try:
        import psycopg

        setup["psycopg"] = psycopg.__version__
    except ImportError:
        setup["psycopg"] = "not installed"
    span_template, _ = server._ingest_templates()
    setup["record_bytes"] = len(span_template)
    builds: dict[str, dict[str, Any]] = {}
    plans: dict[str, str] = {}
    pg_info: dict[str, Any] | None = None
    pg_skipped = "--no-pg" if opts.no_pg else pg_unreachable(opts.pg)
    if pg_skipped is not None:
        print(f"PostgreSQL configurations skipped: {pg_skipped}", file=sys.stderr)
    traces = setup["spans"] // 4
    configs: list[Config] = []
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bitfab-bench-scale-"))
        db = os.path.join(tmp, "scale.db")
        builds["SQLite"] = built = server.build_store(db, traces, KEYS)
        print(f"SQLite store: {built['spans']:,} spans in {built['seconds']:.1f} s")
        plans["SQLite (`EXPLAIN QUERY PLAN`)"] = sqlite_plan(db, START_KEY)
        configs += [Config(NAMES[0], db, 1, None), Config(NAMES[3], db, 2, None)]
        url = None
        if pg_skipped is None:
            pg_info = {**pg_settings(opts.pg), "where": where(opts.pg)}
            url, schema, app = stack.enter_context(pg_schema(opts.pg))
            builds["PostgreSQL"] = built = server.build_store(url, traces, KEYS)
            built["vacuum_s"] = pg_maintain(url)
            print(
                f"PostgreSQL store (schema {schema}): {built['spans']:,} spans in"
                f" {built['seconds']:.1f} s, VACUUM (ANALYZE) {built['vacuum_s']:.1f} s"
            )
            pg = {"url": opts.pg, "app": app}
            configs[1:1] = [Config(NAMES[1], url, 1, pg), Config(NAMES[2], url, 2, pg)]
        for number in range(setup["rounds"]):
            shift = number % len(configs)
            for config in configs[shift:] + configs[:shift]:
                config.rounds.append(
                    run_round(
                        config,
                        span_template,
                        setup["seconds"],
                        setup["warmup"],
                        setup["start_calls"],
                    )
                )
        builds["SQLite"]["final"] = count_spans(db)
        if url is not None:
            builds["PostgreSQL"]["final"] = count_spans(url)
            plans["PostgreSQL (`EXPLAIN (ANALYZE, BUFFERS)`, at the end)"] = pg_plan(url, START_KEY)
    summaries = [summary(c) for c in configs]
    setup["load_after"] = os.getloadavg()
    elapsed = time.perf_counter() - began
    print(f"\nscale: done in {elapsed:.1f} s")
    body = report_body(quick, elapsed, summaries, builds, pg_info, pg_skipped, plans, setup)
    if opts.no_write:
        print(body)
    else:
        path = results_path(opts.results, quick)
        write_section("scale", body, path)
        print(f"wrote the scale section of {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
