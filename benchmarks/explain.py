"""The store's important queries, with their plans on a store of realistic size: docs/queries.md.

    python benchmarks/explain.py              # ~125k spans per backend, writes docs/queries.md
    python benchmarks/explain.py --quick      # ~10k spans, a smoke run (writes a temp file)
    python benchmarks/explain.py --no-write   # print only

Fills a SQLite store (a temp file) and a PostgreSQL store (a fresh schema of the database in
``--pg``, default ``$BITFAB_TEST_PG``; skipped when there is none) with the same recordings:
several keys, roots with nested LLM and tool calls, errors, replay traces of a few test runs,
spread over 30 days. Then, for each query that matters, it prints the statement the store
runs, SQLite's ``EXPLAIN QUERY PLAN``, PostgreSQL's ``EXPLAIN (ANALYZE, BUFFERS)`` and the
median time of a few runs through the store's own method.
"""

from __future__ import annotations

import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import HERE, arguments, command_line, machine

from bitfab.store import Store, TestRun, TestRunItem
from bitfab.store import postgres_sql as pg_sql
from bitfab.store import sqlite_sql as lite_sql
from bitfab.store.records import like_pattern
from bitfab.store.sqlite import SQLiteStore

DOC = os.path.join(os.path.dirname(HERE), "docs", "queries.md")
ROOT_KEYS = ["triage", "summarize", "classify", "route", "extract", "answer"]
DAY_US = 86_400_000_000
END_US = 1_795_780_800_000_000  # 2026-11-27T12:00:00Z
CUTOFF_US = END_US - 20 * DAY_US  # prune's example: older than 20 days


def iso(us: int) -> str:
    seconds, micros = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}Z"


# -- the recordings -----------------------------------------------------------------------------


@dataclass
class Data:
    spans: list[dict[str, Any]]
    traces: list[dict[str, Any]]
    runs: list[TestRun]
    sample_trace: str
    sample_span: str
    sample_run: str


def make_data(n_traces: int, seed: int = 1) -> Data:
    rng = random.Random(seed)
    spans: list[dict[str, Any]] = []
    traces: list[dict[str, Any]] = []
    originals: dict[str, list[tuple[str, str]]] = {key: [] for key in ROOT_KEYS}
    for t in range(n_traces):
        key = rng.choice(ROOT_KEYS)
        trace_id = f"tr-{t:07d}"
        start = END_US - rng.randrange(30 * DAY_US)
        root_id = f"sp-{t:07d}-0"
        children = rng.randint(2, 6)
        spans.append(
            _span(root_id, trace_id, None, key, start, rng.randint(50, 4000), rng, root=True)
        )
        for c in range(1, children + 1):
            child_key = "llm.call" if c % 2 else "tool.search"
            spans.append(
                _span(
                    f"sp-{t:07d}-{c}",
                    trace_id,
                    root_id,
                    child_key,
                    start + c * 1000,
                    rng.randint(20, 2000),
                    rng,
                )
            )
        traces.append(_trace(trace_id, key, children + 1, start))
        originals[key].append((trace_id, root_id))
    runs = []
    for r in range(max(3, n_traces // 2000)):
        key = ROOT_KEYS[r % len(ROOT_KEYS)]
        run_id = f"run-{r:04d}"
        chosen = originals[key][-20:]
        items = []
        for idx, (trace_id, span_id) in enumerate(chosen):
            replay_trace = f"rp-{r:04d}-{idx:03d}"
            start = END_US - rng.randrange(DAY_US)
            replay = _span(f"{replay_trace}-0", replay_trace, None, key, start, 100, rng, root=True)
            replay["testRunId"] = replay["experimentId"] = run_id
            spans.append(replay)
            items.append(
                TestRunItem(
                    idx=idx,
                    original_trace_id=trace_id,
                    original_span_id=span_id,
                    replay_trace_id=replay_trace,
                    verdict="same",
                )
            )
        runs.append(TestRun(id=run_id, key=key, created_at=iso(END_US - r), items=tuple(items)))
    sample = spans[len(spans) // 2]
    return Data(spans, traces, runs, sample["traceId"], sample["id"], runs[0].id)


def _span(
    span_id: str,
    trace_id: str,
    parent: str | None,
    key: str,
    start: int,
    duration_ms: int,
    rng: random.Random,
    *,
    root: bool = False,
) -> dict[str, Any]:
    error = "TimeoutError: upstream took too long" if rng.random() < 0.05 else None
    contexts = []
    if key == "llm.call":
        contexts.append(
            {
                "provider": "openai",
                "model": rng.choice(["gpt-4o", "gpt-4o-mini"]),
                "inputTokens": rng.randint(200, 4000),
                "outputTokens": rng.randint(20, 800),
                "cachedInputTokens": 0,
                "costUsd": 0.001,
            }
        )
    words = " ".join(
        rng.choice(["refund", "order", "late", "broken", "invoice", "hello"]) for _ in range(12)
    )
    raw: dict[str, Any] = {
        "id": span_id,
        "trace_id": trace_id,
        "started_at": iso(start),
        "ended_at": iso(start + duration_ms * 1000),
        "span_data": {
            "name": key,
            "type": "function",
            "input": [{"ticket": rng.randrange(10**6), "text": words}],
            "input_meta": {"v": 1, "kwarg_names": []},
            "output": {"label": rng.choice(["a", "b", "c"]), "score": rng.random()},
            "error": error,
            "error_source": "code" if error else None,
            "contexts": contexts,
            "metadata": {},
        },
    }
    if parent is not None:
        raw["parent_id"] = parent
    del root
    return {
        "id": span_id,
        "traceId": trace_id,
        "type": "sdk-function",
        "source": "bitfab-python",
        "traceFunctionKey": key,
        "rawSpan": raw,
    }


def _trace(trace_id: str, key: str, spans: int, start: int) -> dict[str, Any]:
    return {
        "id": trace_id,
        "traceFunctionKey": key,
        "completed": True,
        "expectedSpanCount": spans,
        "externalTrace": {"id": trace_id, "started_at": iso(start), "ended_at": iso(start + 1)},
    }


def fill(store: Store, data: Data) -> float:
    began = time.perf_counter()
    for start in range(0, len(data.spans), 500):
        store.write(data.spans[start : start + 500])
    for start in range(0, len(data.traces), 500):
        store.write([], data.traces[start : start + 500])
    for run in data.runs:
        store.create_test_run(run)
    return time.perf_counter() - began


# -- the queries --------------------------------------------------------------------------------


@dataclass
class Query:
    title: str
    method: str
    """The store method that runs it."""
    note: str
    sqlite: tuple[str, Any]
    postgres: tuple[str, Any]
    call: Callable[[Store], object] | None
    """Times the query through the store; None when another row's call already does."""


def queries(data: Data) -> list[Query]:
    key = "triage"
    first_page = None  # the first page of a listing: no before_us
    pattern = like_pattern("refund order")
    run_id = data.sample_run
    listing = {
        "key": key,
        "limit": 50,
        "before_us": first_page,
        "errors_only": False,
        "include_replays": False,
        "pattern": None,
    }
    search = {**listing, "pattern": pattern}
    prune = {
        "cutoff": CUTOFF_US,
        "key": None,
        "n": 500,
        "after_us": -(2**63),
        "after_id": "",
    }
    ids_blob = (data.sample_trace.encode() + b"\xff",)
    return [
        Query(
            "Newest roots of a key (what a replay selects)",
            "newest_roots(key, 50)",
            "Walks the partial index of roots by key in order; no sort, stops after 50.",
            (lite_sql.NEWEST_ROOTS, (key, 50)),
            (pg_sql.NEWEST_ROOTS, (key, 50)),
            lambda s: s.newest_roots(key, 50),
        ),
        Query(
            "A trace's spans",
            "trace_spans(trace_id)",
            "The (trace_id, parent_id) index; the few rows are sorted by start.",
            (lite_sql.TRACE_SPANS, (data.sample_trace,)),
            (pg_sql.TRACE_SPANS, (data.sample_trace,)),
            lambda s: s.trace_spans(data.sample_trace),
        ),
        Query(
            "A span's subtree",
            "subtree(span_id)",
            "Primary key for the start, then (trace_id, parent_id) for each level of children.",
            (lite_sql.SUBTREE, (data.sample_span,)),
            (pg_sql.SUBTREE, (data.sample_span,)),
            lambda s: s.subtree(data.sample_span),
        ),
        Query(
            "A test run's items",
            "get_test_run(run_id)",
            "The primary key of test_runs, then of test_run_items (run_id, idx).",
            (lite_sql.GET_ITEMS, (run_id,)),
            (pg_sql.GET_ITEMS, (run_id,)),
            lambda s: s.get_test_run(run_id),
        ),
        Query(
            "The traces listing of a key (first page)",
            "traces(key, limit=50)",
            "The roots-by-key index in order, the completion record by primary key; then the "
            "totals of the 50 traces (below).",
            (lite_sql.TRACES_OF_KEY, listing),
            (pg_sql.TRACES_OF_KEY, listing),
            lambda s: s.traces(key, limit=50),
        ),
        Query(
            "The traces listing of a key, searched",
            "traces(key, search='refund order')",
            "The same walk, filtering each root's input: cost grows with the roots looked at "
            "before 50 match (all of the key's roots when few or none do).",
            (lite_sql.TRACES_OF_KEY, search),
            (pg_sql.TRACES_OF_KEY, search),
            lambda s: s.traces(key, limit=50, search="refund order"),
        ),
        Query(
            "Totals of listed traces",
            "traces(...) / token_totals(ids)",
            "One index range per trace id of the page.",
            (lite_sql.TRACE_TOTALS, ids_blob),
            (pg_sql.TRACE_TOTALS, ([data.sample_trace],)),
            lambda s: s.token_totals([data.sample_trace]),
        ),
        Query(
            "The functions list",
            "functions()",
            "Reads the per-key summary (function_stats) in primary-key order: one row per key, "
            "whatever the number of spans.",
            (lite_sql.FUNCTIONS, ()),
            (pg_sql.FUNCTIONS, ()),
            lambda s: s.functions(),
        ),
        Query(
            "The functions list: a key's ends, read again after a delete",
            "write(drop) / prune(...)",
            "Run for each key that lost calls: two short walks of spans_calls_by_key, from either "
            "end of the key's range.",
            (lite_sql.REREAD_FUNCTION_ENDS, {"key": key}),
            (pg_sql.REREAD_FUNCTION_ENDS, {"key": key}),
            None,
        ),
        Query(
            "Prune's selection (one batch of 500 roots)",
            "prune(older_than_us)",
            "The roots-by-time index from the keyset position; each root's test-run references "
            "by index. The batch's deletes then use (trace_id, parent_id) and primary keys.",
            (lite_sql.PRUNE_ROOTS, prune),
            (pg_sql.PRUNE_ROOTS, prune),
            lambda s: s.prune(CUTOFF_US, max_batches=1),
        ),
    ]


# -- running ------------------------------------------------------------------------------------


def median_ms(call: Callable[[], object] | None, repeats: int) -> float | None:
    if call is None:
        return None
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def timed(query: Query, store: Store, repeats: int) -> float | None:
    """Median ms of the query's store call; prune runs once (it deletes), last of all."""
    if query.call is None:
        return None
    call = query.call
    return median_ms(lambda: call(store), 1 if query.method.startswith("prune") else repeats)


def shown(query: Query, ms: float | None) -> str:
    if query.call is None:
        return "(in the row above)"
    if ms is None:
        return "-"
    if query.method.startswith("prune"):
        return f"{ms:.1f} ms (one batch, with its deletes)"
    return f"{ms:.2f} ms"


def sqlite_plan(path: str, statement: str, params: Any) -> str:
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("EXPLAIN QUERY PLAN " + statement, params).fetchall()
    depth: dict[int, int] = {0: -1}
    lines = []
    for node, parent, _, detail in rows:
        depth[node] = depth.get(parent, -1) + 1
        lines.append("  " * depth[node] + detail)
    return "\n".join(lines)


def pg_plan(url: str, schema: str, statement: str, params: Any) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT set_config('search_path', %s, false)", (schema,))
        rows = conn.execute(
            ("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement).encode(), params or None
        ).fetchall()
    return "\n".join(row[0] for row in rows)


@contextmanager
def pg_schema(url: str) -> Iterator[str]:
    import psycopg
    from psycopg import sql

    schema = f"bitfab_explain_{os.getpid()}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    try:
        yield schema
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def main() -> int:
    parser = arguments(__doc__, "smoke run: ~10k spans")
    parser.add_argument("--pg", default=os.environ.get("BITFAB_TEST_PG"), help="PostgreSQL URL")
    opts = parser.parse_args()
    n_traces = 2_000 if opts.quick else 25_000
    repeats = 3 if opts.quick else 7
    began = time.perf_counter()
    data = make_data(n_traces)
    qs = queries(data)
    sections: list[str] = []
    summary_rows: list[tuple[str, str, str]] = []

    with tempfile.TemporaryDirectory(prefix="bitfab-explain-") as tmp:
        lite = SQLiteStore(os.path.join(tmp, "explain.db"))
        lite_fill = fill(lite, data)
        with closing(sqlite3.connect(lite.path)) as conn:
            conn.execute("ANALYZE")
        lite_plans = [sqlite_plan(lite.path, *q.sqlite) for q in qs]
        lite_times = [timed(q, lite, repeats) for q in qs]
        lite.close()

        pg_times: list[float | None] = [None] * len(qs)
        pg_plans: list[str | None] = [None] * len(qs)
        pg_fill = None
        if opts.pg:
            from bitfab.store.postgres import PostgresStore

            with pg_schema(opts.pg) as schema:
                pg = PostgresStore(opts.pg, schema=schema)
                pg_fill = fill(pg, data)
                import psycopg

                with psycopg.connect(opts.pg, autocommit=True) as conn:
                    conn.execute("SELECT set_config('search_path', %s, false)", (schema,))
                    conn.execute("VACUUM ANALYZE spans")
                    conn.execute("VACUUM ANALYZE traces")
                    conn.execute("ANALYZE")
                pg_plans = [pg_plan(opts.pg, schema, *q.postgres) for q in qs]
                pg_times = [timed(q, pg, repeats) for q in qs]
                pg.close()

    for i, q in enumerate(qs):
        lite_ms, pg_ms = shown(q, lite_times[i]), shown(q, pg_times[i])
        if not opts.pg:
            pg_ms = "-"
        summary_rows.append((q.title, lite_ms, pg_ms))
        block = [
            f"### {q.title}",
            "",
            f"`store.{q.method}`: {q.note}",
            "",
            "SQLite statement:",
            "",
            "```sql",
            _dedent(q.sqlite[0]),
            "```",
            "",
            f"SQLite `EXPLAIN QUERY PLAN` ({lite_ms}):",
            "",
            "```text",
            lite_plans[i],
            "```",
        ]
        if pg_plans[i] is not None:
            block += [
                "",
                "PostgreSQL statement:",
                "",
                "```sql",
                _dedent(q.postgres[0]),
                "```",
                "",
                f"PostgreSQL `EXPLAIN (ANALYZE, BUFFERS)` ({pg_ms}):",
                "",
                "```text",
                str(pg_plans[i]),
                "```",
            ]
        sections.append("\n".join(block))

    elapsed = time.perf_counter() - began
    table_lines = ["| query | SQLite | PostgreSQL |", "|---|--:|--:|"]
    table_lines += [f"| {a} | {b} | {c} |" for a, b, c in summary_rows]
    fills = f"SQLite filled in {lite_fill:.1f} s" + (
        f", PostgreSQL in {pg_fill:.1f} s" if pg_fill is not None else ""
    )
    quick_note = (
        "\n> **Smoke run (`--quick`)**: a small store; the plans may differ.\n"
        if opts.quick
        else ""
    )
    doc = TEMPLATE.format(
        quick=quick_note,
        command=command_line(),
        when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        elapsed=f"{elapsed:.0f}",
        machine=machine(),
        spans=f"{len(data.spans):,}",
        traces=f"{n_traces:,}",
        runs=len(data.runs),
        keys=", ".join(ROOT_KEYS),
        fills=fills,
        pg="" if opts.pg else "\nPostgreSQL was skipped: no `--pg` URL and no `BITFAB_TEST_PG`.\n",
        table="\n".join(table_lines),
        sections="\n\n".join(sections),
    )
    print(doc)
    if not opts.no_write:
        out = opts.results or (
            os.path.join(tempfile.gettempdir(), "bitfab-queries-quick.md") if opts.quick else DOC
        )
        with open(out, "w", encoding="utf-8") as handle:
            handle.write(doc)
        print(f"\nwrote {out}", file=sys.stderr)
    return 0


def _dedent(statement: str) -> str:
    import textwrap

    return textwrap.dedent(statement).strip()


TEMPLATE = """# The store's queries and their plans

Written by `benchmarks/explain.py`; re-run it after changing a statement or an index.
{quick}
Command: `{command}` (from the repository root), {when}, {elapsed} s.

{machine}

The store: {spans} spans in {traces} traces (a root of one of {keys}, with 2 to 6 nested
`llm.call` / `tool.search` spans), their completion records, and {runs} test runs of 20 items
with a replay trace each; starts spread over 30 days, 5% errors. {fills}. Both backends hold
the same records; PostgreSQL's tables were `VACUUM ANALYZE`d after the load, SQLite's
`ANALYZE`d.
{pg}
Times are the median of a few calls of the store's method (connection, statement, decoding).
SQLite runs in the process; every PostgreSQL call pays a round trip to the server and a
connection from the pool (about 0.3 ms here), which is most of its time for the small queries.

{table}

## What the plans say

- Every query a page or a replay asks (newest roots, a trace, a subtree, a run, the first page
  of a listing, a batch of prune) is an index walk on both backends: the roots' partial indexes
  (`spans_roots_by_key`, `spans_roots_by_time`), `spans_by_trace (trace_id, parent_id)`, the
  primary keys, and the retention indexes of SQLite's migration 3. Their cost depends on the
  rows returned, not on the size of the store.
- A search filters the key's roots by their input text. SQLite walks them newest first and
  stops at the page's 50th match (parsing each root's JSON to find its input). PostgreSQL's
  planner, guessing that a pattern matches few rows, reads all of the key's roots through the
  index (a bitmap scan of the `search_input` column, kept for roots only) and sorts the
  matches. Either way a rare term costs a read of all of the key's roots. A trigram index
  (`pg_trgm`) would make it cheap on PostgreSQL; it is not there yet, because every index costs
  ingest speed and searches are rare.
- **The functions list reads a summary, not the spans**: `function_stats` holds one row per
  key, which every write, drop and prune updates in its own transaction (counts and token
  sums added or subtracted, the newest call compared, durations in a histogram with
  logarithmic buckets). Its cost grows with the number of keys, not of spans. After a delete,
  each key that lost calls has its first start and newest call read again through
  `spans_calls_by_key (key, start_us, id)` (non-replay spans with a key): two short index
  walks. That index is the price of keeping those fields exact: every keyed span is in it.

## The queries

{sections}
"""


if __name__ == "__main__":
    raise SystemExit(main())
