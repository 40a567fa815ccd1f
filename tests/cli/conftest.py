"""The `recorded` store the read commands' tests look at; the e2e helpers (real `bitfab serve`
processes) importable as `e2e_helpers`."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bitfab import Bitfab

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[tuple[str, Bitfab]]:
    """A store with 3 calls of `quote` (one failing), each with a nested LLM call; fixed clock."""
    db = str(tmp_path / "rec.db")
    ticks = itertools.count()
    client = Bitfab(
        db=db,
        clock=lambda: 1_795_000_000_000_000_000 + next(ticks) * 1_000_000,  # +1 ms per read
    )

    @client.trace(key="cli.llm", span_type="llm", mock_on_replay=True)
    def llm(prompt: str) -> dict[str, Any]:
        return {
            "model": "m-1",
            "text": prompt.upper(),
            "usage": {"input_tokens": 10, "output_tokens": 2},
        }

    @client.trace(key="cli.quote")
    def quote(item: str, qty: int) -> dict[str, Any]:
        if qty < 0:
            raise ValueError("negative quantity")
        return {"item": llm(item)["text"], "total": qty * 3}

    quote("apple", 2)
    quote("pear", 1)
    with pytest.raises(ValueError):
        quote("fig", -1)
    assert client.flush()
    yield db, client
    client.shutdown()
