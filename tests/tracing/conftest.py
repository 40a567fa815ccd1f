"""Fixtures of the recording-side tests: a private Bitfab recording into memory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bitfab import Bitfab
from bitfab.testing import FakeClock, MemorySink, SequentialIds


@pytest.fixture
def sink() -> MemorySink:
    """Where the ``bf`` fixture's records go."""
    return MemorySink()


@pytest.fixture
def bf(sink: MemorySink) -> Iterator[Bitfab]:
    """A Bitfab with ids 1, 2, 3... and a clock that moves 1 ms per reading, recording to ``sink``."""
    client = Bitfab(sink=sink, id_generator=SequentialIds(), clock=FakeClock())
    yield client
    client.shutdown(timeout=5)


@pytest.fixture
def make_bitfab() -> Iterator[Callable[..., Bitfab]]:
    """Build extra Bitfab instances that are shut down after the test."""
    made: list[Bitfab] = []

    def make(**options: Any) -> Bitfab:
        client = Bitfab(**options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.shutdown(timeout=5)
