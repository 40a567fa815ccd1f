"""`bitfab functions`, `traces`, `show`, `runs`, `run` over a real SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import run

from bitfab import Bitfab
from bitfab.cli import main
from bitfab.store.function_stats import ACCURACY


def test_functions_lists_recorded_keys(
    recorded: tuple[str, Bitfab], capsys: pytest.CaptureFixture[str]
) -> None:
    """One row per key with calls, errors, p50, tokens; nothing is defined in imported code."""
    db, _ = recorded
    status, out, err = run(capsys, "functions", "--db", db)
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == [
        "KEY", "NAME", "CALLS", "ERRORS", "P50", "TOKENS", "LAST", "SEEN", "DEFINED", "AT",
    ]  # fmt: skip
    llm, quote = lines[1].split(), lines[2].split()
    # The median is read from a histogram: within ACCURACY of the exact one (FunctionStats),
    # then shown to two decimals.
    assert llm[:4] + llm[5:8] == ["cli.llm", "llm", "2", "0", "ms", "24", "2026-11-18"]
    assert abs(float(llm[4]) - 1.0) <= 1.0 * ACCURACY + 0.005
    assert quote[:4] == ["cli.quote", "quote", "3", "1"]
    assert abs(float(quote[4]) - 3.0) <= 3.0 * ACCURACY + 0.005
    assert lines[2].endswith("-") and len(lines) == 3


def test_functions_merges_the_registry_of_imported_modules(
    recorded: tuple[str, Bitfab], capsys: pytest.CaptureFixture[str]
) -> None:
    """--import adds keys declared in code with their file:line, recorded or not."""
    db, _ = recorded
    status, out, _ = run(capsys, "functions", "--import", "bitfab.demo", "--db", db)
    assert status == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert {"classify", "cli.llm", "cli.quote", "lookup_customer", "triage"} <= set(rows)
    assert rows["triage"].split()[2] == "0"
    assert "bitfab/demo.py:" in rows["triage"]


def test_traces_newest_first_and_errors(
    recorded: tuple[str, Bitfab], capsys: pytest.CaptureFixture[str]
) -> None:
    """Whole output: newest first; --errors keeps the failing call; --limit cuts."""
    db, _ = recorded
    status, out, _ = run(capsys, "traces", "cli.quote", "--db", db)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["TRACE", "ID", "STARTED", "DURATION", "ERROR", "TOKENS", "MODEL"]
    assert len(lines) == 4
    assert "negative quantity" in lines[1] and lines[1].rstrip().endswith("-")
    assert lines[2].split()[-2:] == ["12", "m-1"] and lines[3].split()[-2:] == ["12", "m-1"]
    assert "2026-11-18 " in lines[3] and "3.00 ms" in lines[3]

    status, out, _ = run(capsys, "traces", "cli.quote", "--errors", "--db", db)
    assert status == 0 and len(out.splitlines()) == 2 and "negative quantity" in out
    status, out, _ = run(capsys, "traces", "cli.quote", "--limit", "1", "--db", db)
    assert status == 0 and len(out.splitlines()) == 2

    status, out, err = run(capsys, "traces", "cli.llm", "--errors", "--db", db)
    assert (status, out) == (0, "")
    assert err == "no recorded calls with an error of key 'cli.llm'\n"


def test_show_prints_the_span_tree(
    recorded: tuple[str, Bitfab], capsys: pytest.CaptureFixture[str]
) -> None:
    """Root and nested span with timings, compact inputs/outputs and usage; errors shown."""
    db, _ = recorded
    _, out, _ = run(capsys, "traces", "cli.quote", "--db", db)
    failing, ok = out.splitlines()[1].split()[0], out.splitlines()[3].split()[0]

    status, out, err = run(capsys, "show", ok, "--db", db)
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith(f"trace {ok}  2 span(s)  started 2026-11-18T")
    assert lines[0].endswith("complete")
    assert lines[1:] == [
        "quote  [cli.quote]  3.00 ms",
        '│  in:    ["apple",2]',
        '│  out:   {"item":"APPLE","total":6}',
        "└─ llm  [cli.llm]  (llm)  1.00 ms  @+1.00 ms",
        '      in:    ["apple"]',
        '      out:   {"model":"m-1","text":"APPLE","usage":{"input_tokens":10,"output_tokens":2}}',
        "      usage: m-1 in 10 out 2",
    ]

    status, out, _ = run(capsys, "show", failing, "--db", db)
    assert status == 0
    assert "error: ValueError: negative quantity" in out


def test_runs_and_run_show_a_replay(
    recorded: tuple[str, Bitfab], capsys: pytest.CaptureFixture[str]
) -> None:
    """After a replay, `runs` lists it and `run` shows its items with verdicts."""
    db, client = recorded
    status, _, err = run(capsys, "runs", "--db", db)
    assert status == 0 and err.startswith("no test runs yet; replay recorded calls with")

    quote = client.registry.get("cli.quote").traced
    result = quote.replay(limit=3)
    assert client.flush()
    assert sorted(item.verdict for item in result.items) == ["same", "same", "still_error"]

    status, out, _ = run(capsys, "runs", "--db", db)
    assert status == 0
    lines = out.splitlines()
    assert len(lines) == 2 and lines[1].startswith(f"{result.test_run_id}  cli.quote  ")
    assert lines[1].endswith("completed      3  2 same, 1 still_error")
    status, out, _ = run(capsys, "runs", "--key", "nope", "--db", db)
    assert (status, out) == (0, "")

    status, out, _ = run(capsys, "run", str(result.test_run_id), "--db", db)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"test run {result.test_run_id}  key cli.quote  completed")
    assert lines[1] == "3 calls: 2 same, 1 still_error"
    assert lines[2].split()[:6] == ["#", "VERDICT", "ORIGINAL", "NEW", "TOKENS", "ORIGINAL"]
    assert "still_error" in lines[3] and "ValueError: negative quantity" in lines[3]
    assert len(lines) == 6


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["traces", "nope"], "no recorded calls of key 'nope'; keys recorded: cli.llm, cli.quote"),
        (["show", "not-a-trace"], "no trace with id 'not-a-trace'; see `bitfab traces KEY`"),
        (["run", "not-a-run"], "no test run with id 'not-a-run'; see `bitfab runs --db {db}`"),
    ],
)
def test_unknown_ids_are_one_line_errors(
    recorded: tuple[str, Bitfab],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    db, _ = recorded
    status, out, err = run(capsys, *argv, "--db", db)
    assert (status, out, err) == (1, "", f"bitfab: {message.format(db=db)}\n")


@pytest.mark.parametrize(
    "argv", [["functions"], ["traces", "k"], ["show", "t"], ["runs"], ["run", "r"]]
)
def test_a_missing_store_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """No file is created; the message says how to get one."""
    db = tmp_path / "missing.db"
    status, out, err = run(capsys, *argv, "--db", str(db))
    assert (status, out) == (1, "")
    assert (
        err
        == f"bitfab: no store at {db}; record calls first (try `bitfab demo`), pass --db PATH, or"
        " set BITFAB_URL to read from a server\n"
    )
    assert not db.exists()


def test_an_empty_store_has_no_functions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "empty.db")
    Bitfab(db=db)  # nothing recorded
    from bitfab.store import open_store

    open_store(db).close()
    status, out, err = run(capsys, "functions", "--db", db)
    assert (status, out) == (1, "")
    assert err.startswith(f"bitfab: no recorded functions in {db};") and err.count("\n") == 1


def test_bad_limit_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["traces", "k", "--limit", "0"])
    assert exit_info.value.code == 2
    assert "expected a positive integer, not '0'" in capsys.readouterr().err


def test_every_new_command_has_help_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("demo", "functions", "traces", "show", "replay", "runs", "run"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert "example:\n  bitfab " + command in out, command
