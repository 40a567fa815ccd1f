"""E7: hostile strings in every query parameter match literally and change nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bitfab.store import Store
from bitfab.store.base import MAX_SEARCH_CHARS

from .factories import span

PAYLOADS = [
    "' OR 1=1 --",
    '"; DROP TABLE spans; --',
    "%",
    "_",
    "\\",
    "\x00",
    "\u2019\u201c\u201d\u2018",  # unicode quotes
    "\ud800",
    "x" * 10_000,
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=repr)
def test_hostile_strings_match_literally_and_change_nothing(
    store: Store, catalog: Callable[[], list[tuple[Any, ...]]], payload: str
) -> None:
    """Used as key, id, run id or search term, a payload finds only the record that holds it."""
    hostile = span("hostile", key=payload, input=[payload])
    store.write([span("base-1", input=["alpha"]), span("base-2", input=["beta"]), hostile])
    schema_before = catalog()

    assert [s.span_id for s in store.traces(payload)] == ["hostile"]
    assert store.newest_roots(payload, 10) == [hostile]
    if len(payload) <= MAX_SEARCH_CHARS:
        assert [s.span_id for s in store.traces(search=payload)] == ["hostile"]
        assert store.traces("triage", search=payload) == []
    else:
        with pytest.raises(ValueError, match="search is longer"):
            store.traces(search=payload)
    assert store.get_span(payload) is None
    assert store.get_trace(payload) is None
    assert store.trace_spans(payload) == []
    assert store.subtree(payload) == []
    assert store.roots_of_traces([payload]) == {payload: None}
    assert store.trace_status({payload: 0}) == []
    assert store.token_totals([payload]) == {
        payload: {"input": 0, "output": 0, "cached": 0, "total": 0}
    }
    assert store.replay_trace_ids(payload) == []
    assert store.get_test_run(payload) is None
    assert store.list_test_runs(payload) == []

    assert catalog() == schema_before
    assert store.count_spans() == 3
