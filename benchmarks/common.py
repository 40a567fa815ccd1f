"""Shared helpers of the benchmark scripts: machine description, statistics, tables, RESULTS.md.

Each script owns one section of ``benchmarks/RESULTS.md`` between ``<!-- NAME:start -->`` and
``<!-- NAME:end -->`` and rewrites only that section, so the scripts can run in any order.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import statistics
import sys
import tempfile
from collections.abc import Iterable, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "RESULTS.md")

_HEADER = """# bitfab benchmarks

Written by `benchmarks/overhead.py` and `benchmarks/replay.py`; each script rewrites only its own
section (between its markers), so they can run in any order. Numbers from one noisy shared
machine: what counts is the ratio of two candidates measured side by side in the same run.
"""


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    """One line per fact: platform, CPU, cores, Python."""
    return "\n".join(
        [
            f"- platform: `{platform.platform()}`",
            f"- CPU: {cpu_model()}, {os.cpu_count()} cores visible",
            f"- Python: {platform.python_implementation()} {platform.python_version()}",
        ]
    )


def command_line() -> str:
    script = os.path.relpath(os.path.abspath(sys.argv[0]), os.path.dirname(HERE))
    return " ".join(["python", shlex.quote(script), *map(shlex.quote, sys.argv[1:])])


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def p10(values: Sequence[float]) -> float:
    """The 10th percentile (nearest rank): a near-best case, less sensitive to bursts of noise."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = max(0, round(0.1 * (len(ordered) - 1)))
    return ordered[index]


def fmt_ns(value: float) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:,.0f}"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], align: str | None = None) -> str:
    """A Markdown table (it also reads fine on a terminal). ``align``: one of l/r per column."""
    rows = [list(map(str, row)) for row in rows]
    align = align or ("l" + "r" * (len(headers) - 1))
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            out.append(cell.rjust(widths[i]) if align[i] == "r" else cell.ljust(widths[i]))
        return "| " + " | ".join(out) + " |"

    sep = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2))
            for w, a in zip(widths, align, strict=True)
        )
        + "|"
    )
    return "\n".join([line(headers), sep, *(line(row) for row in rows)])


def arguments(doc: str | None, quick_help: str) -> argparse.ArgumentParser:
    """The options every benchmark script takes: --quick, --no-write, --results."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument(
        "--no-write", action="store_true", help="print only; leave RESULTS.md as it is"
    )
    parser.add_argument(
        "--results",
        help="the Markdown file to write the section into (default: benchmarks/RESULTS.md; "
        "with --quick, a file in the temp dir, so a smoke run never replaces real figures)",
    )
    return parser


def results_path(given: str | None, quick: bool) -> str:
    """Where a script writes its section: ``--results``, else RESULTS.md, else (``--quick``) a
    scratch file in the temp dir, so that a smoke run never replaces the real figures."""
    if given:
        return given
    if quick:
        return os.path.join(tempfile.gettempdir(), "bitfab-benchmarks-RESULTS-quick.md")
    return RESULTS


def write_section(name: str, body: str, path: str = RESULTS) -> None:
    """Replace the ``name`` section of RESULTS.md (create the file or the section if missing)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        text = _HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".RESULTS.", suffix=".md")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; the results are for everyone to read
    os.replace(tmp, path)


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"
