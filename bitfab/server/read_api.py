"""bitfab's own read API under ``/api/v1`` (scope ``read``), for the UI and the CLI.

Described in :mod:`bitfab.server.openapi`. Listing parameters are checked here (types, ranges,
lengths; ``limit`` above :attr:`Limits.max_page` is a 422) and passed to the store as bound
values, never into SQL text.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bitfab.server.auth import Endpoint, ServerContext, guarded
from bitfab.server.errors import ApiError, json_response
from bitfab.server.ingest import MAX_KEY_CHARS
from bitfab.server.params import INT64_MAX, query_bool, query_int, query_str
from bitfab.server.sdk import run_url
from bitfab.store.base import MAX_SEARCH_CHARS, TestRun

__all__ = ["DEFAULT_PAGE", "routes"]

DEFAULT_PAGE = 50


def _run_json(run: TestRun, *, with_items: bool) -> dict[str, Any]:
    data = dataclasses.asdict(run)
    data["url"] = run_url(run.id)
    if not with_items:
        del data["items"]
    return data


def routes(ctx: ServerContext) -> list[Route]:
    """The read API routes."""
    store = ctx.store

    def limit_of(request: Request) -> int:
        limit = query_int(
            request, "limit", default=DEFAULT_PAGE, minimum=1, maximum=ctx.limits.max_page
        )
        assert limit is not None
        return limit

    async def functions(request: Request) -> Response:
        stats = await ctx.call(store.functions)
        return json_response({"functions": [dataclasses.asdict(s) for s in stats]})

    async def traces(request: Request) -> Response:
        key = query_str(request, "key", max_chars=MAX_KEY_CHARS)
        limit = limit_of(request)
        before_us = query_int(
            request, "before_us", default=None, minimum=-INT64_MAX, maximum=INT64_MAX
        )
        errors = query_bool(request, "errors", False)
        replays = query_bool(request, "include_replays", False)
        search = query_str(request, "search", max_chars=MAX_SEARCH_CHARS)
        summaries = await ctx.call(
            lambda: store.traces(
                key,
                limit=limit,
                before_us=before_us,
                errors_only=errors,
                include_replays=replays,
                search=search,
            )
        )
        last = summaries[-1].start_us if len(summaries) == limit and summaries else None
        return json_response(
            {
                "traces": [dataclasses.asdict(s) for s in summaries],
                "next_before_us": last,
            }
        )

    async def trace(request: Request) -> Response:
        trace_id = request.path_params["traceId"]
        spans = await ctx.call(store.trace_spans, trace_id)
        completion = await ctx.call(store.get_trace, trace_id)
        if not spans and completion is None:
            raise ApiError(404, "not_found", "no trace with this id")
        return json_response({"trace_id": trace_id, "spans": spans, "completion": completion})

    async def span(request: Request) -> Response:
        record = await ctx.call(store.get_span, request.path_params["spanId"])
        if record is None:
            raise ApiError(404, "not_found", "no span with this id")
        return json_response({"span": record})

    async def runs(request: Request) -> Response:
        key = query_str(request, "key", max_chars=MAX_KEY_CHARS)
        limit = limit_of(request)
        found = await ctx.call(lambda: store.list_test_runs(key, limit=limit))
        return json_response({"runs": [_run_json(run, with_items=False) for run in found]})

    async def run(request: Request) -> Response:
        found = await ctx.call(store.get_test_run, request.path_params["runId"])
        if found is None:
            raise ApiError(404, "not_found", "no test run with this id")
        return json_response({"run": _run_json(found, with_items=True)})

    def read(handler: Endpoint) -> Endpoint:
        return guarded(ctx, "read", handler)

    return [
        Route("/api/v1/functions", read(functions), methods=["GET"]),
        Route("/api/v1/traces", read(traces), methods=["GET"]),
        Route("/api/v1/traces/{traceId:path}", read(trace), methods=["GET"]),
        Route("/api/v1/spans/{spanId:path}", read(span), methods=["GET"]),
        Route("/api/v1/runs", read(runs), methods=["GET"]),
        Route("/api/v1/runs/{runId:path}", read(run), methods=["GET"]),
    ]
