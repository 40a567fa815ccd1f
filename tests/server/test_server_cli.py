"""The `bitfab` command: keys, --no-auth, help; and the server staying an optional extra."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from server_helpers import Api

from bitfab.cli import is_loopback, main
from bitfab.server import create_app
from bitfab.store import SQLiteStore


def test_keys_cli_creates_lists_and_revokes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_api: Any
) -> None:
    """`bitfab keys create` prints the secret once; list shows no secret; revoke makes it 401."""
    db = str(tmp_path / "cli.db")
    assert main(["keys", "create", "--name", "ci", "--scope", "ingest", "--db", db]) == 0
    out, err = capsys.readouterr()
    secret = out.strip()
    assert secret.startswith("bfk_") and "shown only this once" in err

    assert main(["keys", "list", "--db", db]) == 0
    out, _ = capsys.readouterr()
    assert "ci" in out and "ingest" in out and secret not in out
    key_id = out.splitlines()[1].split()[0]

    with SQLiteStore(db) as store:
        app = create_app(store)
        api = Api(app, key=secret)
        try:
            assert api.post("/api/bitfab/v1/ingest", json={"spans": []}).status_code == 200
            assert main(["keys", "revoke", key_id, "--db", db]) == 0
            assert api.post("/api/bitfab/v1/ingest", json={"spans": []}).status_code == 401
        finally:
            api.close()
    capsys.readouterr()
    assert main(["keys", "revoke", "nope", "--db", db]) == 1
    assert capsys.readouterr().err.startswith("bitfab: no key with id 'nope'")


def test_keys_cli_refuses_a_bad_scope(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """argparse names the allowed scopes."""
    with pytest.raises(SystemExit) as exit_info:
        main(["keys", "create", "--scope", "admin", "--db", str(tmp_path / "x.db")])
    assert exit_info.value.code == 2
    assert "ingest" in capsys.readouterr().err


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.com"])
def test_no_auth_is_refused_off_loopback(
    host: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bitfab serve --no-auth` on a non-loopback address: one clear line, exit 2, no store."""
    db = tmp_path / "never.db"
    assert main(["serve", "--no-auth", "--host", host, "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("bitfab: --no-auth is allowed only on a loopback address")
    assert not db.exists()


def test_loopback_addresses() -> None:
    """127.0.0.0/8, ::1 and localhost are loopback; the rest is not."""
    assert [is_loopback(h) for h in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost")] == [
        True
    ] * 5
    assert [is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "localhost.example")] == [
        False
    ] * 4


def test_every_command_has_help_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    """--help of each command shows an example."""
    for argv in (
        ["--help"],
        ["serve", "--help"],
        ["keys", "--help"],
        ["keys", "create", "--help"],
        ["keys", "list", "--help"],
        ["keys", "revoke", "--help"],
    ):
        with pytest.raises(SystemExit):
            main(argv)
        assert "example:" in capsys.readouterr().out


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )


def test_importing_bitfab_does_not_import_the_server_stack() -> None:
    """`import bitfab` stays light: no starlette, no uvicorn."""
    done = run_python(
        """
        import sys, bitfab, bitfab.cli
        print(sorted(m for m in ("starlette", "uvicorn") if m in sys.modules))
        """
    )
    assert done.stdout.strip() == "[]", done.stderr


def test_without_the_extra_the_error_says_what_to_install() -> None:
    """With starlette missing, importing the server and `bitfab serve` name the extra."""
    done = run_python(
        """
        import sys
        sys.modules["starlette"] = None
        from bitfab.cli import main
        try:
            import bitfab.server
        except ImportError as exc:
            print(type(exc).__name__, exc)
        sys.exit(main(["serve", "--db", "never.db"]))
        """
    )
    assert done.stdout.strip() == (
        "MissingExtraError bitfab's server needs the 'server' extra: pip install 'bitfab[server]'"
    )
    assert done.returncode == 1
    assert done.stderr == (
        "bitfab: bitfab's server needs the 'server' extra: pip install 'bitfab[server]'\n"
    )
