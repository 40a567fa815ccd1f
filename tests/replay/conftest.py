"""Fixtures of the end-to-end replay tests: a real Bitfab recording into its own SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bitfab import Bitfab
from bitfab.store import Store, open_store


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """The SQLite file of this test."""
    return tmp_path / "bitfab.db"


@pytest.fixture
def bf(db: Path) -> Iterator[Bitfab]:
    """A recorder of its own, writing to ``db``; shut down after the test."""
    client = Bitfab(db=str(db))
    yield client
    client.shutdown(timeout=5)


@pytest.fixture
def store(db: Path, bf: Bitfab) -> Iterator[Store]:
    """A second, reading connection to the recorder's store (as the UI or a CI job would open it)."""
    opened = open_store(db)
    yield opened
    opened.close()
