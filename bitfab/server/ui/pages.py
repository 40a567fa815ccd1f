"""The UI's pages: functions, traces of a function, one trace, test runs, one test run.

Each handler reads the store (in the thread pool), shapes the records with
:mod:`~bitfab.server.ui.spans` or :mod:`~bitfab.server.ui.runs` and renders a template. Query
parameters are checked like the read API's (:mod:`bitfab.server.params`): a bad one is a 4xx
page, never a 500.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bitfab.exceptions import StoreError
from bitfab.server.auth import ServerContext
from bitfab.server.errors import ApiError, FieldError, handle_http_exception, json_response
from bitfab.server.ingest import MAX_ID_CHARS, MAX_KEY_CHARS
from bitfab.server.params import INT64_MAX, query_bool, query_int, query_str
from bitfab.server.ui import runs, spans, values
from bitfab.server.ui.render import SECURITY_HEADERS, Renderer, trace_href
from bitfab.server.ui.session import login_href
from bitfab.store.base import MAX_SEARCH_CHARS, StoreBusyError, StoreFullError, TestRunItem
from bitfab.store.records import iso_to_us

__all__ = ["RUN_PAGE", "TRACES_PAGE", "Pages"]

TRACES_PAGE = 50
"""Traces per page unless ``?limit=`` says otherwise (at most 200)."""
RUN_PAGE = 200
"""Items of a test run per page."""
RUNS_PAGE = 100

Handler = Callable[[Request], Awaitable[Response]]

_RELATIVE = re.compile(r"^(\d{1,6})([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_VERDICT = re.compile(r"^[a-z_]{1,40}$")
SINCE_CHOICES = (
    ("", "any time"),
    ("15m", "last 15 min"),
    ("1h", "last hour"),
    ("24h", "last 24 h"),
    ("7d", "last 7 days"),
    ("30d", "last 30 days"),
)


def _invalid(name: str, message: str) -> ApiError:
    return ApiError.invalid(FieldError(f"query.{name}", message))


def parse_moment(name: str, value: str | None, now_us: int) -> int | None:
    """``?since=1h`` / ``?before=2026-11-27T10:00:00Z`` as microseconds since the epoch."""
    if value is None or value.strip() == "":
        return None
    text = value.strip()
    match = _RELATIVE.match(text)
    if match:
        return now_us - int(match.group(1)) * _UNIT_S[match.group(2)] * 1_000_000
    moment = iso_to_us(text)
    if moment is None:
        raise _invalid(name, "must be an ISO-8601 time (2026-11-27T10:00:00Z) or 15m, 1h, 7d")
    return moment


def verdicts_of(request: Request) -> list[str]:
    """``?verdict=changed,error`` (or repeated) as a list; 422 for anything else."""
    found: list[str] = []
    for value in request.query_params.getlist("verdict"):
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            if not _VERDICT.match(part):
                raise _invalid("verdict", "must be verdict names (same, changed, error, ...)")
            if part not in found:
                found.append(part)
    return found


class Pages:
    """The page handlers of one app."""

    def __init__(self, ctx: ServerContext, renderer: Renderer) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.renderer = renderer

    # -- plumbing -------------------------------------------------------------------------

    def guard(self, handler: Handler) -> Handler:
        """``handler`` behind the read key (else the login page), errors as pages."""

        async def endpoint(request: Request) -> Response:
            try:
                await self.ctx.authenticate(request, "read")
            except ApiError as exc:
                if exc.status == 401:
                    return RedirectResponse(login_href(request), 303, headers=SECURITY_HEADERS)
                return self.renderer.error(request, exc.status, "Forbidden", exc.detail)
            try:
                return await handler(request)
            except ApiError as exc:
                title = "Not found" if exc.status == 404 else "Bad request"
                return self.renderer.error(request, exc.status, title, exc.detail)
            except StoreBusyError:
                return self.renderer.error(
                    request,
                    503,
                    "Busy",
                    "The store is busy with other writers; reload in a moment.",
                )
            except StoreFullError:
                return self.renderer.error(request, 507, "Store full", "The store cannot write.")
            except StoreError:
                return self.renderer.error(
                    request, 500, "Store error", "The store failed; see the server log."
                )

        endpoint.__name__ = handler.__name__
        return endpoint

    def guard_json(self, handler: Handler) -> Handler:
        """``handler`` behind the read key; errors answer in the API's JSON shape."""

        async def endpoint(request: Request) -> Response:
            await self.ctx.authenticate(request, "read")
            return await handler(request)

        endpoint.__name__ = handler.__name__
        return endpoint

    async def not_found(self, request: Request, exc: Exception) -> Response:
        """Starlette's 404/405: a page for people, JSON for the API."""
        assert isinstance(exc, HTTPException)
        path = request.url.path
        wants_html = "text/html" in request.headers.get("accept", "")
        if path.startswith("/api/") or not wants_html or exc.status_code != 404:
            return await handle_http_exception(request, exc)
        return self.renderer.error(request, 404, "Not found", "There is no page at this address.")

    # -- functions ------------------------------------------------------------------------

    async def functions(self, request: Request) -> Response:
        stats = await self.ctx.call(self.store.functions)
        stats = sorted(stats, key=lambda s: (s.root_calls == 0, -(s.last_seen_us or 0)))
        latest: dict[str, dict[str, Any]] = {}
        for run in await self.ctx.call(lambda: self.store.list_test_runs(None, limit=200)):
            if run.key not in latest:
                latest[run.key] = runs.run_row(run)
        return self.renderer.page(
            request,
            "functions.html",
            {
                "title": "Functions",
                "nav": "functions",
                "functions": stats,
                "latest_runs": latest,
                "total_calls": sum(s.calls for s in stats),
            },
        )

    # -- traces ---------------------------------------------------------------------------

    async def function_traces(self, request: Request) -> Response:
        key = request.path_params["key"]
        if len(key) > MAX_KEY_CHARS:
            raise _invalid("key", f"is longer than {MAX_KEY_CHARS} characters")
        return await self._traces(request, key)

    async def traces(self, request: Request) -> Response:
        key = query_str(request, "key", max_chars=MAX_KEY_CHARS) or None
        return await self._traces(request, key)

    async def _traces(self, request: Request, key: str | None) -> Response:
        now_us = time.time_ns() // 1000
        limit = query_int(request, "limit", default=TRACES_PAGE, minimum=1, maximum=200)
        assert limit is not None
        errors = query_bool(request, "errors", False)
        replays = query_bool(request, "replays", False)
        search = query_str(request, "search", max_chars=MAX_SEARCH_CHARS) or None
        since_text = query_str(request, "since", max_chars=64)
        before_text = query_str(request, "before", max_chars=64)
        since_us = parse_moment("since", since_text, now_us)
        before_us = query_int(
            request, "before_us", default=None, minimum=-INT64_MAX, maximum=INT64_MAX
        )
        if before_us is None:
            before_us = parse_moment("before", before_text, now_us)
        summaries = await self.ctx.call(
            lambda: self.store.traces(
                key,
                limit=limit,
                before_us=before_us,
                errors_only=errors,
                include_replays=replays,
                search=search,
            )
        )
        more = len(summaries) == limit
        if since_us is not None:
            kept = [s for s in summaries if s.start_us is not None and s.start_us >= since_us]
            more = more and len(kept) == len(summaries)
            summaries = kept
        roots = await self.ctx.call(self.store.roots_of_traces, [s.trace_id for s in summaries])
        rows = []
        for summary in summaries:
            record = roots.get(summary.trace_id) or {}
            raw = record.get("rawSpan") if isinstance(record.get("rawSpan"), dict) else {}
            data = raw.get("span_data") if isinstance(raw, dict) else None
            data = data if isinstance(data, dict) else {}
            rows.append(
                {
                    "s": summary,
                    "input": values.preview_args(data.get("input"), 120),
                    "output": values.preview(data.get("output"), 80),
                }
            )
        filters = {
            "errors": errors,
            "replays": replays,
            "search": search or "",
            "since": since_text or "",
            "before": before_text or "",
        }
        next_before = summaries[-1].start_us if more and summaries else None
        return self.renderer.page(
            request,
            "traces.html",
            {
                "title": f"Traces of {values.clip(key, 80)}" if key else "Traces",
                "nav": "traces",
                "key": key,
                "rows": rows,
                "filters": filters,
                "limit": limit,
                "since_choices": SINCE_CHOICES,
                "paged": before_us is not None,
                "next_before_us": next_before,
            },
        )

    # -- one trace ------------------------------------------------------------------------

    async def trace(self, request: Request) -> Response:
        trace_id = request.path_params["trace_id"]
        if len(trace_id) > MAX_ID_CHARS:
            raise ApiError(404, "not_found", "No trace has this id.")
        selected = query_str(request, "span", max_chars=MAX_ID_CHARS)
        records = await self.ctx.call(self.store.trace_spans, trace_id)
        completion = await self.ctx.call(self.store.get_trace, trace_id)
        if not records and completion is None:
            raise ApiError(
                404, "not_found", f"No trace with id {values.clip(trace_id, 100)} is stored."
            )
        view = spans.trace_view(trace_id, records, completion)
        ids = {row.id for row in view.rows}
        if selected not in ids:
            selected = view.root.id if view.root else None
        source_trace = None
        if view.source_span_id:
            source = await self.ctx.call(self.store.get_span, view.source_span_id)
            if source is not None and isinstance(source.get("traceId"), str):
                source_trace = source["traceId"]
        title = view.root.name if view.root else trace_id
        return self.renderer.page(
            request,
            "trace.html",
            {
                "title": f"{values.clip(title, 60)} · trace",
                "nav": "traces",
                "view": view,
                "selected": selected,
                "source_trace": source_trace,
            },
        )

    async def span_json(self, request: Request) -> Response:
        """The detail pane's data of one span (``/ui/span?id=``), as JSON."""
        span_id = query_str(request, "id", max_chars=MAX_ID_CHARS)
        if not span_id:
            raise _invalid("id", "is required")
        record = await self.ctx.call(self.store.get_span, span_id)
        if record is None:
            raise ApiError(404, "not_found", "no span with this id")
        response = json_response(spans.span_detail(record))
        response.headers.update(SECURITY_HEADERS)
        return response

    async def span(self, request: Request) -> Response:
        span_id = request.path_params["span_id"]
        record = (
            await self.ctx.call(self.store.get_span, span_id)
            if len(span_id) <= MAX_ID_CHARS
            else None
        )
        trace_id = record.get("traceId") if record else None
        if not isinstance(trace_id, str):
            raise ApiError(404, "not_found", "No span with this id is stored.")
        return RedirectResponse(trace_href(trace_id, span_id), 303, headers=SECURITY_HEADERS)

    # -- test runs ------------------------------------------------------------------------

    async def runs(self, request: Request) -> Response:
        key = query_str(request, "key", max_chars=MAX_KEY_CHARS) or None
        limit = query_int(request, "limit", default=RUNS_PAGE, minimum=1, maximum=1000)
        assert limit is not None
        found = await self.ctx.call(lambda: self.store.list_test_runs(key, limit=limit))
        rows = [runs.run_row(run) for run in found]
        return self.renderer.page(
            request,
            "runs.html",
            {
                "title": "Test runs",
                "nav": "runs",
                "key": key,
                "rows": rows,
                "limit": limit,
                "more": len(found) == limit,
            },
        )

    async def run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        verdicts = verdicts_of(request)
        page = query_int(request, "page", default=1, minimum=1, maximum=1_000_000)
        assert page is not None
        found = (
            await self.ctx.call(self.store.get_test_run, run_id)
            if len(run_id) <= MAX_ID_CHARS
            else None
        )
        if found is None:
            raise ApiError(
                404, "not_found", f"No test run with id {values.clip(run_id, 100)} is stored."
            )
        items = list(found.items)
        verdict_of = {item.idx: runs.item_verdict(item.verdict, item.item) for item in items}
        counts: dict[str, int] = {}
        for verdict in verdict_of.values():
            counts[verdict] = counts.get(verdict, 0) + 1
        summary = found.summary or {}
        listed_counts = summary.get("counts")
        listed: dict[str, Any] = listed_counts if isinstance(listed_counts, dict) else {}
        order = [v for v in listed if counts.get(v)] + [v for v in counts if v not in listed]
        client_filter = len(items) <= RUN_PAGE
        if client_filter:
            shown = items
        else:
            shown = [i for i in items if not verdicts or verdict_of[i.idx] in verdicts]
        pages = max(1, -(-len(shown) // RUN_PAGE))
        page = min(page, pages)
        shown = shown[(page - 1) * RUN_PAGE : page * RUN_PAGE]
        views = [runs.item_view(item.idx, item.verdict, _item_data(item)) for item in shown]
        return self.renderer.page(
            request,
            "run.html",
            {
                "title": f"Test run of {values.clip(found.key, 60)}",
                "nav": "runs",
                "run": found,
                "row": runs.run_row(found),
                "items": views,
                "counts": [(v, counts[v]) for v in order],
                "verdicts": verdicts,
                "client_filter": client_filter,
                "page": page,
                "pages": pages,
                "total": len(items),
            },
        )


def _item_data(item: TestRunItem) -> dict[str, Any]:
    """The item's JSON, with the ids the store keeps in columns filled in when missing."""
    data = dict(item.item)
    if not data.get("trace_id"):
        data["trace_id"] = item.replay_trace_id
    if not data.get("original_trace_id"):
        data["original_trace_id"] = item.original_trace_id
    return data
