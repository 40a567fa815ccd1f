"""What ``fn.replay(...)`` costs beyond running the function itself.

    python benchmarks/replay.py              # full run (well under a minute), rewrites RESULTS.md's section
    python benchmarks/replay.py --quick      # smoke run (a few seconds), for CI
    python benchmarks/replay.py --profile    # also put cProfile's top entries in RESULTS.md

1. Per-item overhead: record N=200 calls of a cheap function (a few dict operations), then time
   ``fn.replay(limit=200, max_concurrency=1)`` against a plain loop over the same 200 inputs.
   Reported: (replay time - direct time) / N in ms; target <= 1 ms per item.
2. I/O-bound: 1,000 recorded calls of a function that sleeps 10 ms (recorded with the sleep off,
   under the same key), replayed at ``max_concurrency=50``: wall time; target <= 0.5 s (the
   sleeps alone take 1,000 / 50 x 10 ms = 0.2 s). Same for an ``async def`` with
   ``asyncio.sleep(0.01)``.

Each measurement is repeated and the median is reported. Where the time goes: a separate run of
each scenario with the replay engine's phases timed (the engine's module functions wrapped by
timers in this process only), and cProfile's top entries when a target is missed (or with
``--profile``).
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (
    arguments,
    command_line,
    machine,
    median,
    results_path,
    table,
    verdict,
    write_section,
)

import bitfab
from bitfab.playback import engine

# -- the functions under replay -------------------------------------------------------------------

SLEEP = False  # off while recording: the 1,000 calls are recorded fast, under the same key


def make_functions(bf: bitfab.Bitfab) -> dict[str, Any]:
    @bf.trace(key="bench.cheap")
    def cheap(order: dict[str, Any]) -> dict[str, Any]:
        out = dict(order)
        out["total"] = out["qty"] * out["price"]
        out["tags"] = sorted(out.get("tags", ()))
        out.pop("note", None)
        return out

    @bf.trace(key="bench.io")
    def io_bound(i: int) -> int:
        if SLEEP:
            time.sleep(0.01)
        return i * 2

    @bf.trace(key="bench.aio")
    async def aio_bound(i: int) -> int:
        if SLEEP:
            await asyncio.sleep(0.01)
        return i * 2

    return {"cheap": cheap, "io": io_bound, "aio": aio_bound}


def cheap_inputs(n: int) -> list[dict[str, Any]]:
    return [
        {"id": i, "qty": i % 7 + 1, "price": 3.5, "note": "n" * (i % 5), "tags": ["b", "a"]}
        for i in range(n)
    ]


def check(result: Any, expected: int, what: str) -> None:
    items = list(result.items)
    same = sum(1 for item in items if item.verdict == "same")
    if len(items) != expected or same != expected:
        raise RuntimeError(
            f"{what}: expected {expected} items all 'same', got {len(items)} items, "
            f"{same} same: {result.summary}"
        )


# -- where the time goes --------------------------------------------------------------------------

PHASES = [
    ("_start", "start: flush + select items + git rev-parse + write the run"),
    ("_code_version", "  of which `git rev-parse` (code version)"),
    ("_prepare", "prepare: fetch each recorded span + decode + span tree"),
    ("_run_all_threads", "run: thread pool (calls, recording, judging)"),
    ("_run_all_async", "run: asyncio tasks (calls, recording, judging)"),
    ("_judge", "  of which judging (encode + diff), summed over items"),
    ("_finish", "finish: flush the new spans + complete the run"),
]


@contextmanager
def timed_phases() -> Iterator[dict[str, list[float]]]:
    """Wrap the replay engine's phase functions with timers (this process only, undone after)."""
    spent: dict[str, list[float]] = {}
    saved: dict[str, Callable[..., Any]] = {}
    for name, _ in PHASES:
        original = getattr(engine, name, None)
        if original is None:
            continue
        saved[name] = original
        spent[name] = []
        if asyncio.iscoroutinefunction(original):

            def wrap_async(fn: Callable[..., Any], key: str) -> Callable[..., Any]:
                async def timed(*args: Any, **kwargs: Any) -> Any:
                    start = time.perf_counter()
                    try:
                        return await fn(*args, **kwargs)
                    finally:
                        spent[key].append(time.perf_counter() - start)

                return timed

            setattr(engine, name, wrap_async(original, name))
        else:

            def wrap_sync(fn: Callable[..., Any], key: str) -> Callable[..., Any]:
                def timed(*args: Any, **kwargs: Any) -> Any:
                    start = time.perf_counter()
                    try:
                        return fn(*args, **kwargs)
                    finally:
                        spent[key].append(time.perf_counter() - start)

                return timed

            setattr(engine, name, wrap_sync(original, name))
    try:
        yield spent
    finally:
        for name, original in saved.items():
            setattr(engine, name, original)


def phase_rows(run: Callable[[], Any]) -> tuple[float, list[list[str]]]:
    with timed_phases() as spent:
        start = time.perf_counter()
        run()
        total = time.perf_counter() - start
    rows = []
    accounted = 0.0
    for name, label in PHASES:
        values = spent.get(name) or []
        if not values:
            continue
        ms = sum(values) * 1000
        if not label.startswith("  "):
            accounted += ms
        rows.append([label, f"{ms:,.1f}", f"{len(values):,}"])
    rows.append(
        ["other (options, resolve, backend open/close)", f"{total * 1000 - accounted:,.1f}", ""]
    )
    rows.append(["**total**", f"{total * 1000:,.1f}", ""])
    return total, rows


def profile_text(run: Callable[[], Any], top: int = 18) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    run()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats("cumulative").print_stats(top)
    text = out.getvalue().strip().splitlines()
    # Keep the header line and the table; drop pstats' blank lines and "Ordered by" chatter.
    return "\n".join(line for line in text if line.strip() and not line.startswith("   Ordered"))


# -- main -----------------------------------------------------------------------------------------


def main() -> int:
    global SLEEP
    parser = arguments(__doc__, "smoke run: a few seconds")
    parser.add_argument("--profile", action="store_true", help="always include cProfile output")
    opts = parser.parse_args()
    quick = opts.quick
    n_cheap = 50 if quick else 200
    n_io = 100 if quick else 1000
    concurrency = 50
    repeats = 1 if quick else 7
    per_item_target_ms = 1.0
    io_target_s = 0.5 * n_io / 1000  # 0.5 s for 1,000 items; scaled down for --quick
    ideal_io_s = -(-n_io // concurrency) * 0.01

    began = time.perf_counter()
    tmp_root = tempfile.TemporaryDirectory(prefix="bitfab-bench-replay-")
    bf = bitfab.Bitfab(db=os.path.join(tmp_root.name, "replay.db"))
    fns = make_functions(bf)
    cheap, io_bound, aio_bound = fns["cheap"], fns["io"], fns["aio"]

    # -- record
    inputs = cheap_inputs(n_cheap)
    for order in inputs:
        cheap(order)
    SLEEP = False
    for i in range(n_io):
        io_bound(i)
    loop = asyncio.new_event_loop()
    for i in range(n_io):
        loop.run_until_complete(aio_bound(i))
    loop.close()
    bf.flush(timeout=60)

    # -- 1. per-item overhead
    raw = cheap.__wrapped__
    direct_raw: list[float] = []
    direct_traced: list[float] = []
    replayed: list[float] = []
    run_cheap = lambda: cheap.replay(limit=n_cheap, max_concurrency=1)  # noqa: E731
    check(run_cheap(), n_cheap, "per-item replay")  # warm-up, and the results are right
    for _ in range(repeats):
        start = time.perf_counter()
        for order in inputs:
            raw(order)
        direct_raw.append(time.perf_counter() - start)
        start = time.perf_counter()
        for order in inputs:
            cheap(order)
        direct_traced.append(time.perf_counter() - start)
        bf.flush()
        start = time.perf_counter()
        result = run_cheap()
        replayed.append(time.perf_counter() - start)
        check(result, n_cheap, "per-item replay")
    replay_s = median(replayed)
    raw_s = median(direct_raw)
    traced_s = median(direct_traced)
    per_item_ms = (replay_s - raw_s) / n_cheap * 1000
    per_item_vs_traced_ms = (replay_s - traced_s) / n_cheap * 1000
    per_item_met = per_item_ms <= per_item_target_ms

    # -- 2. I/O-bound, sync and async
    SLEEP = True
    io_runs: dict[str, list[float]] = {"sync": [], "async": []}
    runners = {
        "sync": lambda: io_bound.replay(limit=n_io, max_concurrency=concurrency),
        "async": lambda: aio_bound.replay(limit=n_io, max_concurrency=concurrency),
    }
    for kind, run in runners.items():  # warm-up + correctness
        check(run(), n_io, f"{kind} I/O replay")
    for _ in range(repeats):
        for kind, run in runners.items():
            start = time.perf_counter()
            result = run()
            io_runs[kind].append(time.perf_counter() - start)
            check(result, n_io, f"{kind} I/O replay")
    io_s = {kind: median(values) for kind, values in io_runs.items()}
    io_met = {kind: value <= io_target_s for kind, value in io_s.items()}
    if quick:  # fixed costs per replay dominate 100 items: judging the scaled target is moot
        io_met = {kind: True for kind in io_s}

    def judged(met: bool) -> str:
        return "(smoke run: not judged)" if quick else verdict(met)

    # -- where the time goes
    breakdowns = {
        "per-item (cheap, max_concurrency=1)": phase_rows(run_cheap),
        "I/O-bound sync (max_concurrency=50)": phase_rows(runners["sync"]),
        "I/O-bound async (max_concurrency=50)": phase_rows(runners["async"]),
    }
    profiles: dict[str, str] = {}
    if opts.profile or not (per_item_met or quick):
        profiles["per-item replay"] = profile_text(run_cheap)
    for kind in ("sync", "async"):
        if opts.profile or not io_met[kind]:
            profiles[f"I/O-bound {kind} replay"] = profile_text(runners[kind])
    SLEEP = False
    bf.shutdown(timeout=30)
    tmp_root.cleanup()
    elapsed = time.perf_counter() - began

    # -- report
    results_table = table(
        ["measurement", "value", "target", "result"],
        [
            [
                f"per-item overhead, {n_cheap} items, max_concurrency=1 (vs the undecorated function)",
                f"{per_item_ms:.3f} ms/item",
                f"<= {per_item_target_ms:g} ms",
                judged(per_item_met),
            ],
            [
                "  same, vs the traced function called directly (recording on)",
                f"{per_item_vs_traced_ms:.3f} ms/item",
                "",
                "",
            ],
            [
                f"  replay of {n_cheap} / direct loop (undecorated) / direct loop (traced)",
                f"{replay_s * 1000:.1f} / {raw_s * 1000:.2f} / {traced_s * 1000:.2f} ms",
                "",
                "",
            ],
            [
                f"{n_io:,} x `time.sleep(0.01)`, max_concurrency={concurrency}, wall",
                f"{io_s['sync']:.3f} s",
                f"<= {io_target_s:g} s",
                judged(io_met["sync"]),
            ],
            [
                f"{n_io:,} x `await asyncio.sleep(0.01)`, max_concurrency={concurrency}, wall",
                f"{io_s['async']:.3f} s",
                f"<= {io_target_s:g} s",
                judged(io_met["async"]),
            ],
            [
                f"  (the sleeps alone: {n_io:,} / {concurrency} x 10 ms)",
                f"{ideal_io_s:.3f} s",
                "",
                "",
            ],
        ],
        "lrrl",
    )
    print(results_table)
    breakdown_text = []
    for title, (total, rows) in breakdowns.items():
        block = table(["phase", "ms", "calls"], rows)
        print(f"\n{title}: {total * 1000:.1f} ms\n{block}")
        breakdown_text.append(f"**{title}** (one instrumented run):\n\n{block}")
    for title, text in profiles.items():
        print(f"\ncProfile, {title}:\n{text}")
    print(f"\nreplay: done in {elapsed:.1f} s")

    def sentence(label: str, met: bool, value: str, limit: str) -> str:
        word = "not judged (smoke run)" if quick else ("met" if met else "missed")
        return f"- {label}: **{word}**, {value} (target {limit})."

    raw_repeats = ", ".join(f"{value * 1000:.1f}" for value in replayed)
    target_lines = [
        sentence(
            "per-item overhead of replay",
            per_item_met,
            f"{per_item_ms:.3f} ms per item beyond the function's own time",
            f"<= {per_item_target_ms:g} ms",
        ),
        sentence(
            f"{n_io:,} sleeping items, sync",
            io_met["sync"],
            f"{io_s['sync']:.3f} s wall",
            f"<= {io_target_s:g} s",
        ),
        sentence(
            f"{n_io:,} sleeping items, async",
            io_met["async"],
            f"{io_s['async']:.3f} s wall",
            f"<= {io_target_s:g} s",
        ),
    ]
    for label, met, value, limit in (
        ("per-item", per_item_met, per_item_ms, per_item_target_ms),
        ("sync I/O", io_met["sync"], io_s["sync"], io_target_s),
        ("async I/O", io_met["async"], io_s["async"], io_target_s),
    ):
        if not met and not quick:
            target_lines.append(f"  - {label} missed by {value / limit:.2f}x.")
    quick_note = (
        "\n> **Smoke run (`--quick`)**: fewer items (targets scaled), one repetition; the figures "
        "mean little.\n"
        if quick
        else ""
    )
    profile_blocks = "".join(
        f"\n**cProfile, {title}** (main thread only: the pool's threads are not profiled; "
        f"sorted by cumulative time):\n\n```text\n{text}\n```\n"
        for title, text in profiles.items()
    )
    body = f"""## Replay
{quick_note}
Command: `{command_line()}` (run from the repository root), {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, {elapsed:.0f} s.

{machine()}

Method: one `Bitfab(db=...)` in a temp dir. Per item: {n_cheap} recorded calls of a cheap function
(`dict` copy, a product, a `sorted`, a `pop`), then `fn.replay(limit={n_cheap},
max_concurrency=1)` against a plain loop calling the undecorated function on the same inputs;
(replay - direct) / {n_cheap}. I/O-bound: {n_io:,} calls recorded with the sleep off, replayed
with `time.sleep(0.01)` / `await asyncio.sleep(0.01)` on, `limit={n_io}`,
`max_concurrency={concurrency}`. Every replay is checked: {n_cheap} or {n_io:,} items, all
`same`. Medians of {repeats} repetition(s) (replay times of the per-item case, ms: {raw_repeats}).
Each replay also records the replayed calls (spans of the test run) and writes the run's items,
as it does for a user.

{chr(10).join(target_lines)}

{results_table}

### Where the time goes

{(chr(10) * 2).join(breakdown_text)}
{profile_blocks}"""
    if not opts.no_write:
        path = results_path(opts.results, quick)
        write_section("replay", body, path)
        print(f"wrote the replay section of {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
