"""The read commands against a real `bitfab serve` when BITFAB_URL is set.

The same store is read twice, through the server and from the file: the outputs must be the
same, byte for byte. Failures (a wrong key, no server, a server that answers nonsense) are one
line each.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import run
from e2e_helpers import ServerProcess, create_key

from bitfab import Bitfab


@pytest.fixture
def served(recorded: tuple[str, Bitfab]) -> Iterator[tuple[str, ServerProcess, str]]:
    """The recorded store (with one replay of it) behind a real server, and a key for it."""
    db, client = recorded
    quote = client.registry.get("cli.quote").traced
    quote.replay(limit=3)
    assert client.flush()
    key = create_key(Path(db))
    server = ServerProcess(Path(db))
    yield db, server, key
    server.stop()


def _both(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    served: tuple[str, ServerProcess, str],
    *argv: str,
) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
    db, server, key = served
    local = run(capsys, *argv, "--db", db)
    monkeypatch.setenv("BITFAB_URL", server.url)
    monkeypatch.setenv("BITFAB_API_KEY", key)
    remote = run(capsys, *argv)
    monkeypatch.delenv("BITFAB_URL")
    monkeypatch.delenv("BITFAB_API_KEY")
    return local, remote


def test_every_read_command_answers_the_same_through_the_server(
    served: tuple[str, ServerProcess, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local, remote = _both(capsys, monkeypatch, served, "traces", "cli.quote")
    assert local == remote and local[0] == 0 and len(local[1].splitlines()) == 4
    trace_id = local[1].splitlines()[1].split()[0]

    local, remote = _both(capsys, monkeypatch, served, "runs")
    assert local == remote and local[0] == 0 and "2 same, 1 still_error" in local[1]
    run_id = local[1].splitlines()[1].split()[0]

    for argv in (
        ["functions"],
        ["traces", "cli.quote", "--errors"],
        ["traces", "cli.quote", "--limit", "1"],
        ["show", trace_id],
        ["runs", "--key", "cli.quote", "--limit", "1"],
        ["run", run_id],
    ):
        local, remote = _both(capsys, monkeypatch, served, *argv)
        assert local == remote, argv
        assert local[0] == 0 and local[1] and local[2] == "", argv


def test_unknown_ids_through_the_server_are_the_same_one_line_errors(
    served: tuple[str, ServerProcess, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, server, key = served
    monkeypatch.setenv("BITFAB_URL", server.url)
    monkeypatch.setenv("BITFAB_API_KEY", key)
    assert run(capsys, "show", "no-such-trace") == (
        1,
        "",
        "bitfab: no trace with id 'no-such-trace'; see `bitfab traces KEY`\n",
    )
    assert run(capsys, "run", "no-such-run") == (
        1,
        "",
        "bitfab: no test run with id 'no-such-run'; see `bitfab runs`\n",
    )
    status, out, err = run(capsys, "traces", "nope")
    assert (status, out) == (1, "")
    assert err == "bitfab: no recorded calls of key 'nope'; keys recorded: cli.llm, cli.quote\n"


def test_a_wrong_key_is_one_line_that_names_the_variable_and_not_the_key(
    served: tuple[str, ServerProcess, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, server, key = served
    monkeypatch.setenv("BITFAB_URL", server.url)
    monkeypatch.setenv("BITFAB_API_KEY", key[:-4] + "xxxx")
    status, out, err = run(capsys, "functions")
    assert (status, out) == (1, "")
    assert err.count("\n") == 1 and "HTTP 401" in err and "BITFAB_API_KEY" in err
    assert key[:-4] not in err


def test_db_wins_over_bitfab_url(
    recorded: tuple[str, Bitfab],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--db names a local store: the (unreachable) server is not asked."""
    db, _ = recorded
    monkeypatch.setenv("BITFAB_URL", "http://127.0.0.1:9")
    status, out, err = run(capsys, "functions", "--db", db)
    assert (status, err) == (0, "") and "cli.quote" in out


def test_no_server_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BITFAB_URL", "http://127.0.0.1:9")
    status, out, err = run(capsys, "runs")
    assert (status, out) == (1, "")
    assert err.startswith(
        "bitfab: cannot reach the server at http://127.0.0.1:9 (GET /api/v1/runs)"
    )
    assert err.count("\n") == 1


def test_plain_http_to_another_host_is_refused_before_sending_the_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BITFAB_URL", "http://bitfab.example.com")
    monkeypatch.setenv("BITFAB_API_KEY", "bfk_secret")
    status, out, err = run(capsys, "functions")
    assert (status, out) == (1, "")
    assert "refusing to send the API key in clear text" in err and "bfk_secret" not in err


class _Nonsense(http.server.BaseHTTPRequestHandler):
    """Answers every GET with JSON of the wrong shape for the path."""

    answers = {
        "/api/v1/functions": {"functions": [{"key": 5}]},
        "/api/v1/traces": {"traces": "not a list"},
        "/api/v1/runs": {"runs": [{"id": "r", "key": "k", "created_at": None}]},
    }

    def do_GET(self) -> None:
        body = json.dumps(self.answers.get(self.path.split("?")[0], {})).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("argv", "detail"),
    [
        (["functions"], "field 'key' is int, not str"),
        (["traces", "k"], "`traces` is not a list of objects"),
        (["runs"], "field 'created_at' is NoneType, not str"),
    ],
)
def test_a_server_answering_nonsense_is_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    detail: str,
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Nonsense)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("BITFAB_URL", f"http://127.0.0.1:{server.server_address[1]}")
        status, out, err = run(capsys, *argv)
    finally:
        server.shutdown()
        server.server_close()
    assert (status, out) == (1, "")
    assert err.startswith("bitfab: the server's /api/v1/") and detail in err
    assert err.count("\n") == 1
