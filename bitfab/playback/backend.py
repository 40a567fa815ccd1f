"""Where replay gets recorded calls and keeps test runs: one interface, two implementations.

:class:`LocalBackend` calls the store in-process (the embedded mode). A remote backend speaking
PROTOCOL.md's replay endpoints implements the same methods over HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bitfab.playback import service
from bitfab.playback.service import ItemRef
from bitfab.store import Store, open_store

__all__ = ["Backend", "LocalBackend", "StartedRun"]


@dataclass(frozen=True)
class StartedRun:
    """A test run the backend opened (``test_run_id`` is None for a dry run) and its items."""

    test_run_id: str | None
    test_run_url: str | None
    items: list[ItemRef]
    unknown_trace_ids: list[str] = field(default_factory=list)


class Backend(Protocol):
    def start_run(
        self,
        key: str,
        *,
        limit: int | None,
        trace_ids: Sequence[str] | None,
        name: str | None,
        options: Mapping[str, Any],
        code_version: str | None,
        dry_run: bool,
    ) -> StartedRun: ...

    def fetch_span(self, span_id: str) -> dict[str, Any] | None: ...

    def span_tree(self, span_id: str) -> dict[str, Any] | None: ...

    def complete_run(
        self,
        run_id: str,
        *,
        items: Sequence[Mapping[str, Any]],
        summary: Mapping[str, Any],
        status: str,
    ) -> None: ...

    def interrupt_run(self, run_id: str) -> None: ...

    def close(self) -> None: ...


class LocalBackend:
    """Replay against a store in this process (``.bitfab/bitfab.db`` by default)."""

    def __init__(self, store: Store | str, *, url_prefix: str = "") -> None:
        self._owns = isinstance(store, str)
        self.store: Store = open_store(store) if isinstance(store, str) else store
        self.url_prefix = url_prefix.rstrip("/")

    def run_url(self, run_id: str) -> str:
        return f"{self.url_prefix}/runs/{run_id}"

    def start_run(
        self,
        key: str,
        *,
        limit: int | None,
        trace_ids: Sequence[str] | None,
        name: str | None,
        options: Mapping[str, Any],
        code_version: str | None,
        dry_run: bool,
    ) -> StartedRun:
        selection = service.select_items(self.store, key, limit=limit, trace_ids=trace_ids)
        if dry_run or not selection.items:
            # Nothing to replay: no test run is created (the result says why).
            return StartedRun(None, None, selection.items, selection.unknown_trace_ids)
        run_id = service.create_run(
            self.store,
            key,
            selection,
            name=name,
            options=options,
            code_version=code_version,
        )
        return StartedRun(
            run_id, self.run_url(run_id), selection.items, selection.unknown_trace_ids
        )

    def fetch_span(self, span_id: str) -> dict[str, Any] | None:
        return self.store.get_span(span_id)

    def span_tree(self, span_id: str) -> dict[str, Any] | None:
        return service.span_tree(self.store.subtree(span_id), span_id)

    def complete_run(
        self,
        run_id: str,
        *,
        items: Sequence[Mapping[str, Any]],
        summary: Mapping[str, Any],
        status: str,
    ) -> None:
        rows = service.run_item_rows(items)
        self.store.complete_test_run(run_id, items=rows, summary=summary, status=status)

    def interrupt_run(self, run_id: str) -> None:
        self.store.set_test_run_status(run_id, "interrupted")

    def close(self) -> None:
        if self._owns:
            self.store.close()
