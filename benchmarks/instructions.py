"""Instructions per traced call, counted by valgrind's callgrind: bitfab next to OpenTelemetry.

Wall-clock ratios on a shared 2-core machine move by 10-20% from run to run; instruction counts
do not (same binary, same inputs, PYTHONHASHSEED fixed). Each candidate runs in a fresh process
twice, with 0 and with N calls, and the difference divided by N is the cost of one call.

Run: python benchmarks/instructions.py [--calls N] [--no-write]   (needs valgrind)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import arguments, command_line, machine, results_path, table, write_section

CHILD = r"""
import json, os, sys, tempfile
mode, calls, size = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if size == "large":
    arg = {f"k{i}": "short" for i in range(20)}
    arg["big"] = "x" * 1024
else:
    arg = 1
if mode == "bitfab":
    import bitfab
    # The worker is held back (no batch fills, no timer fires), so only the caller's thread counts.
    bf = bitfab.Bitfab(db=os.path.join(tempfile.mkdtemp(), "b.db"), schedule_delay=1e6,
                       max_batch_size=1_000_000, max_queue_size=1_000_000)
    @bf.trace(key="f")
    def f(x):
        return dict(x) if size == "large" else x
elif mode in ("otel", "otel_json"):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    class Drop(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=1_000_000,
        max_export_batch_size=1_000_000, schedule_delay_millis=1e9))
    tracer = provider.get_tracer("bench")
    def f(x):
        with tracer.start_as_current_span("f") as span:
            if mode == "otel_json":
                span.set_attribute("input", json.dumps([x]))
            result = dict(x) if size == "large" else x
            if mode == "otel_json":
                span.set_attribute("output", json.dumps(result))
            return result
else:
    def f(x):
        return dict(x) if size == "large" else x
f(arg)
for _ in range(calls):
    f(arg)
os._exit(0)
"""


def count(mode: str, calls: int, size: str) -> int:
    """Instructions callgrind counts for a child process making ``calls`` traced calls."""
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "child.py")
        with open(script, "w", encoding="utf-8") as handle:
            handle.write(CHILD)
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={os.path.join(tmp, 'out')}",
                sys.executable,
                script,
                mode,
                str(calls),
                size,
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
            timeout=900,
            check=True,
        )
    found = re.search(r"Collected : ([\d,]+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_call(mode: str, calls: int, size: str = "small") -> float:
    return (count(mode, calls, size) - count(mode, 0, size)) / calls


def main() -> int:
    parser = arguments(__doc__, "300 calls, scratch results file")
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("instructions: valgrind is not installed (apt-get install valgrind); skipped")
        return 0
    calls = 300 if args.quick else args.calls
    costs = {mode: per_call(mode, calls) for mode in ("plain", "otel", "bitfab")}
    large = {mode: per_call(mode, calls, "large") for mode in ("plain", "otel_json", "bitfab")}
    ratio = costs["bitfab"] / costs["otel"]
    large_ratio = large["bitfab"] / large["otel_json"]
    rows = [
        ["`f(1)`", "plain call", f"{costs['plain']:,.0f}", ""],
        ["`f(1)`", "OTel SDK span (dropping exporter)", f"{costs['otel']:,.0f}", "1.000"],
        ["`f(1)`", "bitfab traced call, embedded store", f"{costs['bitfab']:,.0f}", f"{ratio:.3f}"],
        ["20-key dict + 1 KB", "plain call", f"{large['plain']:,.0f}", ""],
        [
            "20-key dict + 1 KB",
            "OTel span + JSON attributes",
            f"{large['otel_json']:,.0f}",
            "1.000",
        ],
        [
            "20-key dict + 1 KB",
            "bitfab traced call, embedded store",
            f"{large['bitfab']:,.0f}",
            f"{large_ratio:.3f}",
        ],
    ]
    result = table(["call", "candidate", "instructions per call", "ratio to OTel"], rows)
    body = f"""## Instructions per call (callgrind)

Command: `{command_line()}`; {calls:,} calls per candidate, PYTHONHASHSEED=0.

{machine()}

Wall-clock ratios on this shared machine move by 10-20% between runs; instruction counts are
repeatable. Each candidate runs in a fresh process with 0 and with {calls:,} calls; the
difference divided by the calls is one call. bitfab's worker is held back, so this is the
caller's thread only (the stated targets); the export work is in the overhead section.

{result}

- small args: bitfab <= 1/5 of an OTel span: **{"met" if ratio <= 0.2 else "missed"}**, {ratio:.3f}.
- large dict: bitfab <= 1/2 of an OTel span with JSON attributes: **{"met" if large_ratio <= 0.5 else "missed"}**, {large_ratio:.3f}.
"""
    print(body)
    if not args.no_write:
        path = results_path(args.results, args.quick)
        write_section("instructions", body, path)
        print(f"wrote the instructions section of {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
