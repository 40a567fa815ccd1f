"""Remote mode end to end: record to a real (fake) server over loopback, replay against it, and
get what the embedded store gives for the same recordings."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fake_server import API_KEY, FakeBitfabServer, closed_port
from remote_helpers import assert_accounted, log_text

import bitfab
from bitfab import Bitfab, ConfigError, ReplayError
from bitfab.export.http import HttpSink
from bitfab.playback.backend import LocalBackend
from bitfab.playback.engine import run_replay
from bitfab.playback.result import ReplayItem, ReplayResult


@pytest.fixture
def bf(server: FakeBitfabServer) -> Iterator[Bitfab]:
    client = Bitfab(url=server.url, api_key=API_KEY)
    yield client
    client.shutdown(timeout=5)


def _app(bf: Bitfab, version: dict[str, int]) -> Any:
    """A traced function with a nested call that replay serves from the recording."""

    @bf.trace(key="lookup", mock_on_replay=True)
    def lookup(word: str) -> dict[str, Any]:
        return {"word": word, "source": f"live-{version['v']}"}

    @bf.trace(key="triage")
    def triage(ticket: str, *, urgent: bool = False) -> dict[str, Any]:
        info = lookup(ticket)
        if ticket == "boom":
            raise ValueError("bad ticket")
        return {"ticket": ticket, "urgent": urgent, "info": info, "v": version["v"]}

    return triage


def _record(triage: Any) -> None:
    triage("a")
    triage("bb", urgent=True)
    with pytest.raises(ValueError, match="bad ticket"):
        triage("boom")


def _facts(item: ReplayItem) -> dict[str, Any]:
    data = item.to_dict()
    for volatile in ("trace_id", "duration_ms"):
        data.pop(volatile)
    return data


def test_replay_against_the_server_matches_the_embedded_store(
    bf: Bitfab, server: FakeBitfabServer
) -> None:
    """Results, verdicts, diffs and mocks of a remote replay equal a local replay of the same
    recordings; the run is completed on the server and its URL is absolute."""
    version = {"v": 1}
    triage = _app(bf, version)
    _record(triage)
    assert bf.flush(timeout=5)
    assert len(server.stored_ids()) == 6
    version["v"] = 2

    remote: ReplayResult = triage.replay(limit=10)
    local_backend = LocalBackend(server.store)
    local = run_replay(bf, triage, limit=10, backend=local_backend)

    assert [_facts(item) for item in remote] == [_facts(item) for item in local]
    assert [item.verdict for item in remote] == ["still_error", "changed", "changed"]
    assert [item.mocked for item in remote][1:] == [["lookup"], ["lookup"]]
    assert remote[1].result == {
        "ticket": "bb",
        "urgent": True,
        "info": {"word": "bb", "source": "live-1"},
        "v": 2,
    }
    assert remote.test_run_url == f"{server.url}/runs/{remote.test_run_id}"
    run = server.store.get_test_run(remote.test_run_id or "")
    assert run is not None and run.status == "completed"
    assert [item.verdict for item in run.items] == ["still_error", "changed", "changed"]
    assert bf.flush(timeout=5)
    replayed = server.store.replay_trace_ids(remote.test_run_id or "")
    assert len(replayed) == 3
    assert_accounted(bf.stats())
    assert bf.stats().dropped == {}


def test_dry_run_and_unknown_trace_ids_over_the_server(
    bf: Bitfab, server: FakeBitfabServer
) -> None:
    """A dry run decodes without a test run; unknown trace ids are reported as locally."""
    triage = _app(bf, {"v": 1})
    _record(triage)
    everything = triage.replay(limit=10)

    dry = triage.replay(limit=10, dry_run=True)
    picked = triage.replay(trace_ids=[everything[1].original_trace_id, "no-such-trace"])

    assert (dry.test_run_id, dry.test_run_url) == (None, None)
    assert [item.verdict for item in dry] == ["valid", "valid", "valid"]
    assert [item.original_trace_id for item in picked] == [everything[1].original_trace_id]
    assert picked.unknown_trace_ids == ["no-such-trace"]


def test_whole_records_from_the_server_replay_the_same(
    bf: Bitfab, server: FakeBitfabServer
) -> None:
    """A server that sends ``record`` with each span gives the same results."""
    triage = _app(bf, {"v": 1})
    _record(triage)
    plain = triage.replay(limit=10)
    server.send_record = True
    whole = triage.replay(limit=10)

    assert [_facts(item) for item in whole] == [_facts(item) for item in plain]


def test_the_environment_turns_remote_mode_on(
    server: FakeBitfabServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BITFAB_URL and BITFAB_API_KEY send spans to the server."""
    monkeypatch.setenv("BITFAB_URL", server.url + "/")
    monkeypatch.setenv("BITFAB_API_KEY", API_KEY)
    client = Bitfab()

    @client.trace(key="env")
    def double(n: int) -> int:
        return 2 * n

    try:
        assert [double(n) for n in range(3)] == [0, 2, 4]
        assert client.flush(timeout=5)
        assert client.config.url == server.url
        assert isinstance(client._exporter.sink, HttpSink)
        assert len(server.stored_ids()) == 3
    finally:
        client.shutdown(timeout=5)


def test_bitfab_configure_switches_the_default_instance_to_the_server(
    server: FakeBitfabServer,
) -> None:
    """``bitfab.configure(url=..., api_key=...)`` works on the module-level functions."""

    @bitfab.trace(key="remote-default-instance")
    def echo(text: str) -> str:
        return text

    bitfab.configure(url=server.url, api_key=API_KEY)
    try:
        echo("hello")
        assert bitfab.flush(timeout=5)
        assert len(server.stored_ids()) == 1
    finally:
        bitfab.shutdown(timeout=5)
        bitfab.configure(url=None, api_key=None)


def test_clients_of_one_server_and_key_share_one_exporter(server: FakeBitfabServer) -> None:
    """F7: one queue, thread and HTTP client per server and key; another key gets its own."""
    first, second = Bitfab(url=server.url, api_key=API_KEY), Bitfab(url=server.url, api_key=API_KEY)
    other = Bitfab(url=server.url, api_key="another-key")
    try:
        exporters = [client._shared_exporter(client.config) for client in (first, second, other)]
        assert exporters[0] is exporters[1]
        assert exporters[2] is not exporters[0]
    finally:
        for exporter in exporters:
            exporter.shutdown(timeout=1)


# ---- secrets and configuration ----------------------------------------------------------------


def test_the_api_key_never_shows_in_logs_reprs_or_errors(
    server: FakeBitfabServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Recording and replaying with a wrong key: 401s logged once and raised, key nowhere."""
    secret = "sk-wrong-0123456789abcdef"
    client = Bitfab(url=server.url, api_key=secret)

    @client.trace(key="secret")
    def work(n: int) -> int:
        return n

    with caplog.at_level(logging.DEBUG):
        work(1)
        client.flush(timeout=5)
        with pytest.raises(ReplayError) as caught:
            work.replay()
        client.shutdown(timeout=5)

    assert "HTTP 401" in str(caught.value)
    assert client.stats().dropped == {"http_401": 1}
    shown = [
        log_text(caplog.records),
        str(caught.value),
        repr(caught.value),
        repr(client.config),
        repr(client._exporter.sink if client._exporter else None),
    ]
    assert all(secret not in text for text in shown)
    assert sum("refused the API key" in r.getMessage() for r in caplog.records) == 1


def test_a_bad_key_value_in_code_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        Bitfab(url="https://bitfab.example", api_key="sk-has a space")
    assert "sk-has" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["ftp://bitfab.example", "bitfab.example", "https://", "https://h/?q=1", "https://h:99999"],
)
def test_a_bad_url_in_code_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="invalid value for url"):
        Bitfab(url=url)


def test_a_url_with_credentials_is_refused_without_showing_them() -> None:
    with pytest.raises(ConfigError, match="pass the key as api_key") as caught:
        Bitfab(url="https://user:hunter2@bitfab.example")
    assert "hunter2" not in str(caught.value)


def test_plain_http_to_another_host_in_code_is_a_config_error() -> None:
    """Configure time, in code: refused unless allowed."""
    with pytest.raises(ConfigError, match="allow_insecure_http=True"):
        Bitfab(url="http://bitfab.example", api_key=API_KEY)
    client = Bitfab(url="http://bitfab.example", api_key=API_KEY, allow_insecure_http=True)
    assert client.config.enabled


def test_plain_http_to_another_host_from_the_environment_disables_recording(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """From the environment: a warning, recording off, the app unaffected; the opt-in works."""
    monkeypatch.setenv("BITFAB_URL", "http://bitfab.example")
    monkeypatch.setenv("BITFAB_API_KEY", API_KEY)
    client = Bitfab()

    @client.trace(key="insecure")
    def double(n: int) -> int:
        return 2 * n

    with caplog.at_level(logging.WARNING, logger="bitfab"):
        assert double(2) == 4
    assert not client.config.enabled
    assert client.stats().emitted == 0
    assert any("clear text" in r.getMessage() for r in caplog.records)
    with pytest.raises(ConfigError, match="clear text"):
        double.replay()

    monkeypatch.setenv("BITFAB_ALLOW_INSECURE_HTTP", "1")
    assert Bitfab().config.enabled


def test_an_unreachable_server_fails_replay_clearly() -> None:
    """Replaying with the server down is a ReplayError naming it, quickly."""
    url = f"http://127.0.0.1:{closed_port()}"
    client = Bitfab(url=url, api_key=API_KEY)

    @client.trace(key="down")
    def work(n: int) -> int:
        return n

    try:
        with pytest.raises(ReplayError, match=f"cannot reach the server at {url}"):
            work.replay()
    finally:
        client.shutdown(timeout=1)


def test_an_http_sink_given_in_code_gets_the_http_exporter(server: FakeBitfabServer) -> None:
    """``Bitfab(sink=HttpSink(...))`` still lets shutdown cut the sink's waits short."""
    client = Bitfab(sink=HttpSink(server.url, API_KEY))

    @client.trace(key="given")
    def work(n: int) -> int:
        return n

    work(1)
    assert isinstance(client._exporter.sink, HttpSink)
    assert client.shutdown(timeout=5)
    assert len(server.stored_ids()) == 1
