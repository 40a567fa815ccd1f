"""The replay half of the SDK protocol (PROTOCOL.md, "Replay"), over the shared replay service.

Which calls a test run selects, the ``spanTree`` shape and the per-item facts come from
:mod:`bitfab.playback.service`, the same code the in-process backend runs, so a replay against
the server and one against the embedded store see the same things.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bitfab.playback import service
from bitfab.server.auth import Endpoint, ServerContext, guarded
from bitfab.server.body import read_json, require_object, type_name
from bitfab.server.errors import ApiError, FieldError, json_response
from bitfab.server.ingest import MAX_ID_CHARS, MAX_KEY_CHARS
from bitfab.server.params import (
    body_bool,
    body_int,
    body_object,
    body_str,
    body_str_list,
    query_bool,
)
from bitfab.store.base import MAX_LIMIT, TEST_RUN_STATUSES, Store, TestRunItem

__all__ = ["routes", "run_items"]

DEFAULT_LIMIT = 5
MAX_TRACE_IDS = 10_000
MAX_NAME_CHARS = 500
MAX_NOTES_CHARS = 10_000


def run_url(run_id: str) -> str:
    return f"/runs/{run_id}"


def run_items(items: Sequence[Any]) -> list[TestRunItem]:
    """Items of ``replay/complete``, checked, as stored rows (``service.run_item_rows``)."""
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ApiError.invalid(
                FieldError(f"body.items[{index}]", f"must be an object, got {type_name(item)}")
            )
        for name in ("original_trace_id", "original_span_id", "trace_id", "verdict"):
            value = item.get(name)
            if value is not None and (not isinstance(value, str) or len(value) > MAX_ID_CHARS):
                raise ApiError.invalid(
                    FieldError(
                        f"body.items[{index}].{name}",
                        f"must be a string of at most {MAX_ID_CHARS} characters",
                    )
                )
    return service.run_item_rows(items)


def _run_id(body: Mapping[str, Any]) -> str:
    """The run a replay call is about: ``testRunId``, or the older ``experimentId``."""
    run_id = body_str(body, "testRunId", max_chars=MAX_ID_CHARS) or body_str(
        body, "experimentId", max_chars=MAX_ID_CHARS
    )
    if not run_id:
        raise ApiError.invalid(FieldError("body.testRunId", "is required (or experimentId)"))
    return run_id


def _start(store: Store, body: dict[str, Any]) -> dict[str, Any]:
    key = body_str(body, "traceFunctionKey", max_chars=MAX_KEY_CHARS, required=True)
    assert key is not None
    trace_ids = body_str_list(body, "traceIds", max_items=MAX_TRACE_IDS, max_chars=MAX_ID_CHARS)
    limit = body_int(body, "limit", minimum=1, maximum=MAX_LIMIT)
    name = body_str(body, "name", max_chars=MAX_NAME_CHARS)
    notes = body_str(body, "notes", max_chars=MAX_NOTES_CHARS)
    metadata = body_object(body, "metadata") or {}
    dry_run = body_bool(body, "dryRun")
    options = metadata.get("options")
    code_version = metadata.get("codeVersion")

    selection = service.select_items(
        store,
        key,
        limit=limit if limit is not None else DEFAULT_LIMIT,
        trace_ids=trace_ids,
    )
    items = [service.item_payload(item) for item in selection.items]
    run_id: str | None = None
    if not dry_run:
        run_id = service.create_run(
            store,
            key,
            selection,
            name=name,
            options=options if isinstance(options, dict) else {},
            code_version=code_version if isinstance(code_version, str) else None,
            extra={"notes": notes, "metadata": metadata},
        )
    return {
        "experimentId": run_id,
        "testRunId": run_id,
        "experimentUrl": None if run_id is None else run_url(run_id),
        "testRunUrl": None if run_id is None else run_url(run_id),
        "items": items,
        "unknownTraceIds": selection.unknown_trace_ids,
    }


def _complete(store: Store, body: dict[str, Any]) -> dict[str, Any]:
    run_id = _run_id(body)
    raw_items = body.get("items")
    if raw_items is not None and not isinstance(raw_items, list):
        raise ApiError.invalid(FieldError("body.items", "must be an array"))
    rows = run_items(raw_items or [])
    summary = body_object(body, "summary") or {}
    status = body_str(body, "status", max_chars=40) or "completed"
    if status not in TEST_RUN_STATUSES:
        raise ApiError.invalid(
            FieldError("body.status", f"must be one of {', '.join(sorted(TEST_RUN_STATUSES))}")
        )
    store.complete_test_run(run_id, items=rows, summary=summary, status=status)
    trace_ids = store.replay_trace_ids(run_id)
    return {
        "traceIds": {trace_id: trace_id for trace_id in trace_ids},
        "tokens": store.token_totals(trace_ids),
        "traceCount": len(trace_ids),
    }


def _status(store: Store, body: dict[str, Any]) -> dict[str, Any]:
    expected = body_object(body, "expectedSpanCounts") or {}
    if len(expected) > MAX_TRACE_IDS:
        raise ApiError.invalid(
            FieldError("body.expectedSpanCounts", f"has more than {MAX_TRACE_IDS} traces")
        )
    counts: dict[str, int] = {}
    for trace_id, count in expected.items():
        if isinstance(count, float) and count.is_integer():
            count = int(count)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ApiError.invalid(
                FieldError(f"body.expectedSpanCounts.{trace_id[:MAX_ID_CHARS]}", "must be >= 0")
            )
        counts[trace_id] = count
    whole = store.trace_status(counts)
    return {"traceIds": {trace_id: trace_id for trace_id in whole}}


def _known_run(store: Store, run_id: str) -> None:
    if store.get_test_run(run_id) is None:
        raise ApiError(404, "not_found", "no test run with this id")


def routes(ctx: ServerContext) -> list[Route]:
    """The replay endpoints (scope ``read``)."""

    async def body_of(request: Request) -> dict[str, Any]:
        return require_object(await read_json(request, ctx.limits))

    async def start(request: Request) -> Response:
        return json_response(await ctx.call(_start, ctx.store, await body_of(request)))

    async def complete(request: Request) -> Response:
        return json_response(await ctx.call(_complete, ctx.store, await body_of(request)))

    async def status(request: Request) -> Response:
        return json_response(await ctx.call(_status, ctx.store, await body_of(request)))

    async def heartbeat(request: Request) -> Response:
        await ctx.call(_known_run, ctx.store, _run_id(await body_of(request)))
        return json_response({})

    async def interrupt(request: Request) -> Response:
        run_id = _run_id(await body_of(request))
        await ctx.call(ctx.store.set_test_run_status, run_id, "interrupted")
        return json_response({})

    async def external_span(request: Request) -> Response:
        span_id = request.path_params["spanId"]
        record = await ctx.call(ctx.store.get_span, span_id)
        if record is None:
            raise ApiError(404, "not_found", "no span with this id")
        raw = record.get("rawSpan")
        data = raw.get("span_data") if isinstance(raw, dict) else None
        return json_response(
            {
                "id": record.get("id"),
                "externalTraceId": record.get("traceId"),
                "rawData": {"span_data": data if isinstance(data, dict) else {}},
                "record": record,
            }
        )

    async def span_tree(request: Request) -> Response:
        span_id = request.path_params["spanId"]
        include_outputs = query_bool(request, "includeOutputs", True)
        include_root = query_bool(request, "includeRootOutput", True)
        records = await ctx.call(ctx.store.subtree, span_id)
        root = service.span_tree(
            records,
            span_id,
            include_outputs=include_outputs,
            include_root_output=include_root,
        )
        if root is None:
            raise ApiError(404, "not_found", "no span with this id")
        return json_response({"root": root})

    def read(handler: Endpoint) -> Endpoint:
        return guarded(ctx, "read", handler)

    return [
        Route("/api/sdk/replay/start", read(start), methods=["POST"]),
        Route("/api/sdk/replay/complete", read(complete), methods=["POST"]),
        Route("/api/sdk/replay/status", read(status), methods=["POST"]),
        Route("/api/sdk/replay/heartbeat", read(heartbeat), methods=["POST"]),
        Route("/api/sdk/replay/interrupt", read(interrupt), methods=["POST"]),
        Route("/api/sdk/replay/spanTree/{spanId:path}", read(span_tree), methods=["GET"]),
        Route("/api/sdk/externalSpans/{spanId:path}", read(external_span), methods=["GET"]),
    ]
