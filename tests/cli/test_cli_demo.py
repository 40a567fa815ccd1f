"""`bitfab demo`: records, changes, replays; the store it leaves works with the other commands."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import bitfab
from bitfab.cli import main


@pytest.fixture
def restore_default() -> Iterator[None]:
    yield
    bitfab.configure(db=None)


def test_demo_as_a_subprocess(tmp_path: Path) -> None:
    """`python -m bitfab demo --dir DIR`: a few seconds, the table, and how to look at it."""
    directory = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITFAB_")}
    done = subprocess.run(
        [sys.executable, "-m", "bitfab", "demo", "--dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    db = str(directory / "bitfab.db")
    out = done.stdout
    assert out.startswith(
        f"bitfab demo: a support-ticket triage pipeline, recorded into {db}\n\n"
        "1. version 1 handles 36 tickets"
    )
    assert "34 routed, 2 failed (a customer missing from the CRM)" in out
    assert "replay of 'triage': 36 calls" in out
    assert "36 calls: 26 same, 8 changed, 2 fixed | mean " in out
    assert '$.priority: "normal" -> "high"' in out
    tail = out[out.index("Look at it:") :].splitlines()
    assert tail[1] == f"  bitfab runs --db {db}"
    assert tail[2].startswith("  bitfab run ") and tail[2].endswith(f" --db {db}")
    assert tail[-3:-1] == [
        "Open it in the browser (the web UI):",
        f"  bitfab serve --db {db} --no-auth",
    ]
    assert tail[-1].startswith("  then http://127.0.0.1:8000/runs/")
    assert "Traceback" not in out


def test_demo_in_process_then_the_read_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_default: None
) -> None:
    """The printed `bitfab show` and `bitfab run` lines work on the demo's store."""
    directory = tmp_path / "d"
    assert main(["demo", "--dir", str(directory)]) == 0
    out = capsys.readouterr().out
    db = str(directory / "bitfab.db")
    show = next(line for line in out.splitlines() if line.startswith("  bitfab show "))
    trace_id = show.split()[2]
    assert main(["show", trace_id, "--db", db]) == 0
    tree = capsys.readouterr().out
    assert "├─ classify  (llm)" in tree and "└─ lookup_customer  (custom)" in tree
    assert "usage: fake-gpt-mini in " in tree

    run_line = next(line for line in out.splitlines() if line.startswith("  bitfab run "))
    assert main(["run", run_line.split()[2], "--db", db]) == 0
    listing = capsys.readouterr().out
    assert listing.splitlines()[1] == "36 calls: 26 same, 8 changed, 2 fixed"
    assert listing.count(" fixed ") == 2 and "was: " in listing

    assert main(["functions", "--db", db]) == 0
    keys = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert keys == ["classify", "lookup_customer", "triage"]

    # the pipeline is importable: replaying version 1 against its own recordings
    assert main(["replay", "bitfab.demo:triage", "--db", db, "--limit", "5"]) == 0
    assert "5 calls: 5 same" in capsys.readouterr().out


def test_demo_dir_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    assert main(["demo", "--dir", str(path)]) == 1
    assert capsys.readouterr().err == f"bitfab: --dir {path} exists and is not a directory\n"
