"""Helpers of the end-to-end replay tests: reading what a replay stored, forging recorded spans."""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Mapping
from typing import Any

from bitfab.playback.result import ReplayResult
from bitfab.store import Store

_forged = itertools.count(1)


def replay_spans(store: Store, result: ReplayResult) -> list[dict[str, Any]]:
    """Every span record stored during the replay ``result``, trace by trace."""
    assert result.test_run_id is not None
    return [
        record
        for trace_id in store.replay_trace_ids(result.test_run_id)
        for record in store.trace_spans(trace_id)
    ]


def newest_root(store: Store, key: str) -> dict[str, Any]:
    """The newest recorded (non-replay) root span record of ``key``."""
    roots = store.newest_roots(key, 1)
    assert roots, f"nothing recorded for {key!r}"
    return roots[0]


def forge(
    template: Mapping[str, Any],
    *,
    span_data: Mapping[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    trace_id: str | None = None,
    parent_id: str | None = None,
    started_at: str | None = None,
) -> dict[str, Any]:
    """A copy of a real span record with fresh ids and ``span_data`` fields replaced or dropped.

    Forged roots start in 2099 so that they are the newest of their key; a forged child passes
    ``trace_id`` and ``parent_id`` of its forged root.
    """
    n = next(_forged)
    record = copy.deepcopy(dict(template))
    raw = record["rawSpan"]
    span_id = str(uuid.uuid4())
    trace_id = trace_id or span_id
    record["id"] = raw["id"] = span_id
    record["traceId"] = record["sourceTraceId"] = raw["trace_id"] = trace_id
    raw["started_at"] = started_at or f"2099-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}.000000Z"
    raw["ended_at"] = raw["started_at"].replace(".000000Z", ".500000Z")
    raw.pop("parent_id", None)
    if parent_id is not None:
        raw["parent_id"] = parent_id
    data = raw["span_data"]
    data.update(span_data or {})
    for name in drop:
        data.pop(name, None)
    return record
