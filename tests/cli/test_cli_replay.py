"""`bitfab replay`: targets, --fail-on, --json, progress, and one-line errors."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import bitfab
from bitfab.cli import main

SHOP = textwrap.dedent(
    """
    import bitfab

    RATE = 3

    @bitfab.trace(key="cli.rate", span_type="llm", mock_on_replay=True)
    def rate(item: str) -> dict:
        return {"model": "m-1", "rate": RATE, "usage": {"input_tokens": 5, "output_tokens": 1}}

    @bitfab.trace(key="cli.price")
    def price(item: str, qty: int) -> int:
        if qty < 0:
            raise ValueError("negative quantity")
        return rate(item)["rate"] * qty + EXTRA

    EXTRA = 0

    class Cart:
        @bitfab.trace(key="cli.cart_total")
        def total(self) -> int:
            return 0
    """
)


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, ModuleType]]:
    """The user's module `cli_shop` (on sys.path) with 3 recorded calls of `price` in a store."""
    (tmp_path / "cli_shop.py").write_text(SHOP)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("cli_shop", None)
    db = str(tmp_path / "shop.db")
    bitfab.configure(db=db)
    cli_shop = importlib.import_module("cli_shop")
    for qty in (1, 2, 3):
        cli_shop.price("apple", qty)
    assert bitfab.flush()
    yield db, cli_shop
    sys.modules.pop("cli_shop", None)
    for key in ("cli.rate", "cli.price", "cli.cart_total"):
        bitfab.default_instance().registry.remove(key)
    bitfab.configure(db=None)


def test_unchanged_code_replays_same_and_exits_0(
    shop: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    """module:function; the table on stdout, progress with the verdicts so far on stderr."""
    db, _ = shop
    assert main(["replay", "cli_shop:price", "--db", db]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("replay of 'cli.price': 3 calls\n")
    assert "3 calls: 3 same" in out
    assert err.splitlines() == [f"replayed {n}/3: same {n}" for n in (1, 2, 3)]


def test_a_change_fails_with_fail_on_and_json_parses(
    shop: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    """A changed output exits 1 under the default --fail-on, 0 with --fail-on error."""
    db, module = shop
    setattr(module, "EXTRA", 1)  # noqa: B010 - the code change
    assert main(["replay", "cli_shop:price", "--db", db, "--json"]) == 1
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["key"] == "cli.price"
    assert [item["verdict"] for item in doc["items"]] == ["changed"] * 3
    assert err.splitlines()[-1] == "bitfab: 3 of 3 calls are changed (--fail-on changed,error)"

    assert main(["replay", "cli_shop:price", "--db", db, "--fail-on", "error"]) == 0
    assert main(["replay", "cli_shop:price", "--db", db, "--fail-on", ""]) == 0
    capsys.readouterr()


def test_a_key_from_an_imported_module_limit_and_trace_ids(
    shop: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    """TARGET as a key found with --import; --limit and --trace-id pick the calls."""
    db, _ = shop
    assert main(["replay", "cli.price", "--import", "cli_shop", "--db", db, "--limit", "2"]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("replay of 'cli.price': 2 calls\n")

    assert main(["traces", "cli.price", "--db", db, "--limit", "1"]) == 0
    trace_id = capsys.readouterr().out.splitlines()[1].split()[0]
    argv = ["replay", "cli.price", "--import", "cli_shop", "--db", db, "--json"]
    assert main([*argv, "--trace-id", trace_id, "--mock", "none", "--concurrency", "1"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [item["original_trace_id"] for item in doc["items"]] == [trace_id]


def test_an_error_verdict_fails(
    shop: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    """A recorded call that fails now is `error`; --fail-on changed lets it pass."""
    db, module = shop
    setattr(module, "RATE", None)  # noqa: B010 - None * qty raises
    assert main(["replay", "cli_shop:price", "--db", db, "--mock", "none"]) == 1
    out, _ = capsys.readouterr()
    assert "3 calls: 3 error" in out
    assert (
        main(["replay", "cli_shop:price", "--db", db, "--mock", "none", "--fail-on", "changed"])
        == 0
    )
    capsys.readouterr()


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            "no_such_module_xyz:f",
            "cannot import module 'no_such_module_xyz': no such module (run from the project's"
            " directory or set PYTHONPATH)",
        ),
        ("cli_shop:nope", "module 'cli_shop' has no 'nope'"),
        ("cli_shop:RATE", "cli_shop:RATE is not a @bitfab.trace function, so it has no recordings"),
        (
            "cli_shop:Cart.total",
            "cli_shop:Cart.total is a method: replaying it needs an instance, which the command"
            " line cannot make; call `Cart(...).total.replay()` from Python",
        ),
        ("cli.unknown", "no @bitfab.trace function with key 'cli.unknown'; keys of the imported"),
        (":f", "TARGET ':f' is not module:function or a key"),
    ],
)
def test_bad_targets_are_one_line_errors(
    shop: tuple[str, ModuleType],
    capsys: pytest.CaptureFixture[str],
    target: str,
    message: str,
) -> None:
    db, _ = shop
    assert main(["replay", target, "--import", "cli_shop", "--db", db]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"bitfab: {message}")


def test_unknown_trace_id_and_bad_fail_on(
    shop: tuple[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = shop
    assert main(["replay", "cli_shop:price", "--db", db, "--trace-id", "nope"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"bitfab: no recorded calls of 'cli.price' to replay (unknown trace ids: nope) in {db}\n"
    )
    assert main(["replay", "cli_shop:price", "--db", db, "--fail-on", "changd"]) == 2
    assert capsys.readouterr().err.startswith("bitfab: --fail-on: unknown verdict 'changd';")


def test_a_module_that_fails_to_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cli_broken.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    db = str(tmp_path / "x.db")
    try:
        assert main(["replay", "cli_broken:f", "--db", db]) == 1
    finally:
        sys.modules.pop("cli_broken", None)
        bitfab.configure(db=None)
    err = capsys.readouterr().err
    assert err == "bitfab: importing module 'cli_broken' failed: RuntimeError: boom at import\n"


SCRIPT = textwrap.dedent(
    """
    from dataclasses import dataclass

    import bitfab

    @dataclass
    class Order:
        sku: str
        qty: int

    @bitfab.trace(key="cli.script_quote")
    def quote(order: Order) -> float:
        return 12.5 * order.qty

    if __name__ == "__main__":
        quote(Order("mug", 2))
        quote(Order("tee", 3))
    """
)


def test_calls_recorded_by_running_the_script_replay_when_it_is_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python cli_script.py` records Order as __main__:Order; `bitfab replay cli_script:quote`
    imports the module as cli_script and still rebuilds the arguments (the function's own
    annotated classes answer to their __main__ name)."""
    import subprocess

    (tmp_path / "cli_script.py").write_text(SCRIPT)
    db = tmp_path / "script.db"
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("BITFAB_")}
    done = subprocess.run(
        [sys.executable, str(tmp_path / "cli_script.py")],
        env={**env, "BITFAB_DB": str(db)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("cli_script", None)
    try:
        status = main(["replay", "cli_script:quote", "--db", str(db), "--json"])
        out = capsys.readouterr().out
    finally:
        sys.modules.pop("cli_script", None)
        bitfab.default_instance().registry.remove("cli.script_quote")
        bitfab.configure(db=None)
    assert status == 0
    items = json.loads(out)["items"]
    assert sorted(item["verdict"] for item in items) == ["same", "same"]
    assert sorted(item["result"] for item in items) == [25.0, 37.5]


def test_progress_is_a_bar_on_a_terminal_and_a_line_per_tenth_elsewhere() -> None:
    import io
    from types import SimpleNamespace

    from bitfab.cli.replaying import _Progress

    log = io.StringIO()
    progress = _Progress(log, interactive=False)
    for n in range(1, 101):
        progress(n, 100, SimpleNamespace(verdict="changed" if n % 4 == 0 else "same"))
    progress.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 11
    assert lines[0] == "replayed 1/100: same 1"
    assert lines[-1] == "replayed 100/100: changed 25 · same 75"

    screen = io.StringIO()
    progress = _Progress(screen, interactive=True)
    for n in range(1, 4):
        progress(n, 3, SimpleNamespace(verdict="same"))
    progress.close()
    frames = screen.getvalue().split("\r\033[K")[1:]
    assert frames[0] == "[" + "#" * 8 + "." * 16 + "] 1/3  same 1"
    assert frames[-1] == "[" + "#" * 24 + "] 3/3  same 3\n"
