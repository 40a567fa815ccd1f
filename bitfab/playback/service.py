"""Replay semantics over a store, written once: the local backend calls it in-process and the
server's replay endpoints call it for remote SDKs.

- which recorded calls a test run selects (``select_items``),
- the ``spanTree`` shape of a recorded subtree (``span_tree``),
- the per-item facts sent with ``replay/start`` (``item_payload``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bitfab.store import Store, TestRun, TestRunItem
from bitfab.store.records import utc_now_iso

__all__ = [
    "ItemRef",
    "Selection",
    "create_run",
    "item_payload",
    "run_item_rows",
    "select_items",
    "span_tree",
    "usage_of",
]


@dataclass(frozen=True)
class ItemRef:
    """One recorded call a test run will replay."""

    original_trace_id: str
    original_span_id: str
    original_duration_ms: float | None = None
    original_tokens: dict[str, int] = field(default_factory=dict)
    original_model: str | None = None


@dataclass(frozen=True)
class Selection:
    items: list[ItemRef]
    unknown_trace_ids: list[str]


def _span_data(record: Mapping[str, Any]) -> Mapping[str, Any]:
    raw = record.get("rawSpan")
    data = raw.get("span_data") if isinstance(raw, Mapping) else None
    return data if isinstance(data, Mapping) else {}


def usage_of(record: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The LLM usage context of a span record, if any."""
    for entry in _span_data(record).get("contexts") or ():
        if isinstance(entry, Mapping) and (
            "inputTokens" in entry or "outputTokens" in entry or entry.get("type") == "usage"
        ):
            return entry
    return None


def _duration_ms(record: Mapping[str, Any]) -> float | None:
    from bitfab.store.records import iso_to_us

    raw = record.get("rawSpan") or {}
    start = iso_to_us(raw.get("started_at"))
    end = iso_to_us(raw.get("ended_at"))
    if start is None or end is None:
        return None
    return (end - start) / 1000.0


def select_items(
    store: Store, key: str, *, limit: int | None, trace_ids: Sequence[str] | None
) -> Selection:
    """The newest ``limit`` non-replay root calls of ``key``, or the roots of ``trace_ids``."""
    unknown: list[str] = []
    if trace_ids is not None:
        found = store.roots_of_traces(list(trace_ids))
        roots = []
        for trace_id in trace_ids:
            record = found.get(trace_id)
            replay_of = record.get("testRunId") or record.get("experimentId") if record else None
            if record is None or record.get("traceFunctionKey") != key or replay_of:
                # A replay is never replayed as an original: it is reported like an unknown id.
                unknown.append(trace_id)
            else:
                roots.append(record)
    else:
        roots = store.newest_roots(key, limit if limit is not None else 5)
    ids = [str(record.get("traceId")) for record in roots]
    tokens = store.token_totals(ids) if ids else {}
    models = store.trace_models(ids) if ids else {}
    items = []
    for record in roots:
        trace_id = str(record.get("traceId"))
        model = _model_of_root(record) or models.get(trace_id)
        items.append(
            ItemRef(
                original_trace_id=trace_id,
                original_span_id=str(record.get("id")),
                original_duration_ms=_duration_ms(record),
                original_tokens=dict(tokens.get(trace_id) or _zero_tokens()),
                original_model=model,
            )
        )
    return Selection(items=items, unknown_trace_ids=unknown)


def _zero_tokens() -> dict[str, int]:
    return {"input": 0, "output": 0, "cached": 0, "total": 0}


def _model_of_root(root: Mapping[str, Any]) -> str | None:
    """The model the root span itself reports (an LLM call replayed on its own)."""
    usage = usage_of(root)
    if usage is not None and usage.get("model"):
        return str(usage["model"])
    return None


def item_payload(item: ItemRef) -> dict[str, Any]:
    """An item of the ``replay/start`` answer, with the older field names too (PROTOCOL.md)."""
    payload: dict[str, Any] = {
        "originalTraceId": item.original_trace_id,
        "originalSpanId": item.original_span_id,
        "sourceTraceId": item.original_trace_id,
        "sourceSpanId": item.original_span_id,
        "externalSpanId": item.original_span_id,
    }
    if item.original_duration_ms is not None:
        payload["originalDurationMs"] = payload["durationMs"] = item.original_duration_ms
    if item.original_tokens:
        payload["originalTokens"] = payload["tokens"] = dict(item.original_tokens)
    if item.original_model is not None:
        payload["originalModel"] = payload["model"] = item.original_model
    return payload


def _seq(record: Mapping[str, Any]) -> int:
    """The span's start order within its trace (bitfab records it; other SDKs don't)."""
    seq = _span_data(record).get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else 0


def span_tree(
    records: Sequence[Mapping[str, Any]],
    root_id: str,
    *,
    include_outputs: bool = True,
    include_root_output: bool = True,
) -> dict[str, Any] | None:
    """The ``spanTree`` node of ``root_id`` built from its subtree's records (PROTOCOL.md).

    Children are ordered by ``started_at``. With outputs excluded the keys are absent, not null.
    bitfab adds ``error``/``errorType`` so mocks can replay a recorded exception.
    """
    by_id: dict[str, Mapping[str, Any]] = {}
    children: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        raw = record.get("rawSpan") or {}
        span_id = str(record.get("id") or raw.get("id"))
        by_id[span_id] = record
        parent = raw.get("parent_id")
        if parent is not None:
            children.setdefault(str(parent), []).append(record)
    if root_id not in by_id:
        return None

    def node(record: Mapping[str, Any], is_root: bool) -> dict[str, Any]:
        data = _span_data(record)
        span_id = str(record.get("id"))
        built: dict[str, Any] = {
            "sourceSpanId": span_id,
            "externalSpanId": span_id,
            "traceFunctionKey": record.get("traceFunctionKey"),
            "spanName": data.get("name"),
            "type": data.get("type"),
        }
        if include_outputs and (include_root_output or not is_root):
            if "output" in data:
                built["output"] = data.get("output")
                built["outputMeta"] = data.get("output_meta")
            if data.get("error") is not None:
                built["error"] = data.get("error")
                built["errorType"] = data.get("error_type")
        kids = sorted(
            children.get(span_id, ()),
            key=lambda child: (
                str((child.get("rawSpan") or {}).get("started_at") or ""),
                _seq(child),
                str(child.get("id")),
            ),
        )
        built["children"] = [node(child, False) for child in kids]
        return built

    return node(by_id[root_id], True)


def create_run(
    store: Store,
    key: str,
    selection: Selection,
    *,
    name: str | None,
    options: Mapping[str, Any],
    code_version: str | None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Store a new running test run for ``selection`` and return its id."""
    run_id = str(uuid.uuid4())
    store.create_test_run(
        TestRun(
            id=run_id,
            key=key,
            created_at=utc_now_iso(),
            name=name,
            status="running",
            options=dict(options),
            code_version=code_version,
            extra={
                "items": [item_payload(item) for item in selection.items],
                "unknownTraceIds": selection.unknown_trace_ids,
                **(extra or {}),
            },
        )
    )
    return run_id


def run_item_rows(items: Sequence[Mapping[str, Any]]) -> list[TestRunItem]:
    """A completed run's items (``ReplayItem.to_dict()`` shapes) as the store's rows."""
    return [
        TestRunItem(
            idx=index,
            original_trace_id=item.get("original_trace_id"),
            original_span_id=item.get("original_span_id"),
            replay_trace_id=item.get("trace_id"),
            verdict=item.get("verdict"),
            item=item,
        )
        for index, item in enumerate(items)
    ]
