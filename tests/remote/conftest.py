"""Fixtures of the remote-mode tests: scripted and real fake servers, a virtual clock, sinks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_server import API_KEY, FakeBitfabServer, ScriptedServer, VirtualClock

from bitfab.export.http import HttpSink


@pytest.fixture
def scripted() -> ScriptedServer:
    return ScriptedServer()


@pytest.fixture
def vclock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def make_sink(scripted: ScriptedServer, vclock: VirtualClock) -> Iterator[Callable[..., HttpSink]]:
    """Build HttpSinks talking to ``scripted`` on the virtual clock, jitter 1.0 unless given."""
    sinks: list[HttpSink] = []

    def build(**options: Any) -> HttpSink:
        options.setdefault("transport", scripted.transport)
        options.setdefault("clock", vclock)
        options.setdefault("jitter", lambda: 1.0)
        sink = HttpSink(options.pop("url", "https://bitfab.example"), API_KEY, **options)
        sinks.append(sink)
        return sink

    yield build
    for sink in sinks:
        sink.shutdown()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FakeBitfabServer]:
    """A real fake server on 127.0.0.1 over its own SQLite file."""
    fake = FakeBitfabServer(tmp_path / "server.db").start()
    yield fake
    fake.close()
