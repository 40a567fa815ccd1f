"""The multi-server tests: a fresh PostgreSQL schema per test, and the e2e process helpers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))

from pg import PG_URL, SKIP_REASON, fresh_schema_url


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL of a fresh, empty schema of the test PostgreSQL, dropped after the test."""
    if PG_URL is None:
        pytest.skip(SKIP_REASON)
    with fresh_schema_url() as url:
        yield url
