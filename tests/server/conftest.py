"""Fixtures of the server tests: a SQLite file per test, keys of each scope, in-process clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the server tests need the 'server' extra")

from server_helpers import Api

from bitfab.server import Limits, create_app
from bitfab.store import SQLiteStore
from bitfab.store.keys import new_api_key


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "server.db"


@pytest.fixture
def store(db: Path) -> Iterator[SQLiteStore]:
    """The server's store; a short busy timeout so that lock tests answer 503 quickly."""
    opened = SQLiteStore(db, busy_timeout=0.3)
    yield opened
    opened.close()


@pytest.fixture
def keys(store: SQLiteStore) -> dict[str, str]:
    """One secret per scope (``ingest``, ``read``, ``all``), plus a revoked one."""
    secrets = {}
    for scope in ("ingest", "read", "all", "revoked"):
        key, secret = new_api_key(name=scope, scope="all" if scope == "revoked" else scope)
        store.create_api_key(key)
        secrets[scope] = secret
        if scope == "revoked":
            store.revoke_api_key(key.id)
    return secrets


@pytest.fixture
def make_api(store: SQLiteStore, keys: dict[str, str], db: Path) -> Iterator[Callable[..., Api]]:
    """``make_api(key="all", limits=None, auth=True)``: a checked client of a fresh app."""
    made: list[Api] = []

    def make(
        key: str | None = "all",
        *,
        limits: Limits | None = None,
        auth: bool = True,
        app: Any = None,
    ) -> Api:
        app = app or create_app(store, auth=auth, limits=limits)
        api = Api(app, key=keys.get(key, key) if key else None, secrets=[*keys.values(), str(db)])
        made.append(api)
        return api

    yield make
    for api in made:
        api.close()


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    """A client with a key of scope ``all``."""
    return make_api("all")
