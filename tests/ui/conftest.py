"""Fixtures of the UI tests: the demo's store (recorded once), a hostile one, in-process clients."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the UI tests need the 'server' extra")
pytest.importorskip("jinja2", reason="the UI tests need the 'server' extra")

from ui_helpers import Client, fill_hostile, record_demo

from bitfab.store import SQLiteStore
from bitfab.store.keys import new_api_key


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives chromium through the UI (Playwright)")


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store `bitfab demo` records: 36 triage traces and one test run. Read-only."""
    return record_demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="session")
def hostile_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A store of hostile recordings (see ``fill_hostile``). Read-only."""
    db = tmp_path_factory.mktemp("hostile") / "hostile.db"
    with SQLiteStore(db) as store:
        ids = fill_hostile(store)
    return db, ids


@pytest.fixture
def make_client() -> Iterator[Callable[..., Client]]:
    """``make_client(db, auth=False, ui=True, base_url=...)``: a client of a fresh app."""
    clients: list[Client] = []

    def make(db: Path, **kwargs: Any) -> Client:
        client = Client(db, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def demo(demo_db: Path, make_client: Callable[..., Client]) -> Client:
    """A client of the demo's store without auth."""
    return make_client(demo_db)


@pytest.fixture
def auth_db(tmp_path: Path, demo_db: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the demo's store with a key per scope and a revoked one; their secrets."""
    db = tmp_path / "auth.db"
    shutil.copyfile(demo_db, db)
    secrets = {}
    with SQLiteStore(db) as store:
        for scope in ("ingest", "read", "all", "revoked"):
            key, secret = new_api_key(name=scope, scope="read" if scope == "revoked" else scope)
            store.create_api_key(key)
            secrets[scope] = secret
            if scope == "revoked":
                store.revoke_api_key(key.id)
    return db, secrets
