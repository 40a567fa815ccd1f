"""Shared test setup: bitfab's internal errors raise here (strict), and no test touches the cwd."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bitfab import _internal


@pytest.fixture(autouse=True)
def _strict_and_isolated(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Make internal errors raise, keep BITFAB_* from the environment out, and run in a temp dir."""
    for name in list(__import__("os").environ):
        if name.startswith("BITFAB_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    old = _internal.set_strict(True)
    _internal.reset_warnings()
    yield
    _internal.set_strict(old)


@pytest.fixture
def lenient() -> Iterator[None]:
    """Production behaviour for this test: internal errors are logged once, not raised."""
    old = _internal.set_strict(False)
    yield
    _internal.set_strict(old)
