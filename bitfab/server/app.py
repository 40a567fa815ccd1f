"""The server as an ASGI app: ``create_app(store)`` and serve it with any ASGI server.

Example::

    from bitfab.server import create_app
    from bitfab.store import open_store

    app = create_app(open_store("bitfab.db"))   # then: uvicorn, or `bitfab serve`

Every request gets a request id (the client's ``X-Request-ID`` when it is a short token, else a
new one), sent back in ``X-Request-ID`` and in error bodies, and one INFO log line. An
unexpected exception answers 500 ``{"error": "internal", ...}``; its traceback goes to the log
only. Store calls run in the thread pool; the store is closed when the app shuts down.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bitfab.server import ingest, read_api, sdk
from bitfab.server.auth import ServerContext
from bitfab.server.body import Limits
from bitfab.server.errors import EXCEPTION_HANDLERS, error_response, json_response
from bitfab.server.openapi import openapi_document
from bitfab.store.base import Store

__all__ = ["create_app"]

logger = logging.getLogger("bitfab.server")

_GOOD_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def create_app(
    store: Store, *, auth: bool = True, limits: Limits | None = None, ui: bool = True
) -> Starlette:
    """The bitfab server over ``store``.

    Args:
        store: where records are kept; closed when the app shuts down (lifespan).
        auth: require API keys (``Authorization: Bearer bfk_...``). Turn off only for a server
            bound to loopback (``bitfab serve --no-auth`` checks this).
        limits: body sizes, in-flight recording requests, page size; defaults from
            :class:`~bitfab.server.body.Limits`.
        ui: serve the web UI (:mod:`bitfab.server.ui`) at ``/``, ``/traces``, ``/runs``, ...
    """
    ctx = ServerContext(store=store, limits=limits or Limits(), auth=auth)
    document = openapi_document(max_page=ctx.limits.max_page)

    async def healthz(request: Request) -> Response:
        return json_response({"ok": True})

    async def openapi(request: Request) -> Response:
        return json_response(document)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await ctx.drain()
        await run_in_threadpool(store.close)
        logger.info("store closed")

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/api/v1/openapi.json", openapi, methods=["GET"]),
        *ingest.routes(ctx),
        *sdk.routes(ctx),
        *read_api.routes(ctx),
    ]
    handlers: dict[Any, Any] = dict(EXCEPTION_HANDLERS)
    if ui:
        from bitfab.server.ui import UI  # jinja2 is needed only with the UI

        web = UI(ctx)
        routes += web.routes()
        handlers[HTTPException] = web.pages.not_found
    app = Starlette(
        routes=routes,
        # Answers of 4 KiB or more are gzipped for clients that accept it (span trees, traces).
        middleware=[Middleware(RequestMiddleware), Middleware(GZipMiddleware, minimum_size=4096)],
        exception_handlers=handlers,
        lifespan=lifespan,
    )
    app.state.bitfab = ctx
    return app


class RequestMiddleware:
    """Request id, one log line per request, and a JSON 500 for anything unexpected."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("bitfab server: unexpected error [%s]", request_id)
            if status == 0:
                response = error_response(request_id, 500, "internal", "see the server log")
                await response(scope, receive, send_with_id)
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            logger.info(
                "%s %s %s %.1fms %s",
                scope.get("method", "-"),
                _printable(scope.get("path", "")),
                status or "-",
                elapsed_ms,
                request_id,
            )


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = bytes(value).decode("latin-1")
            if _GOOD_REQUEST_ID.match(text):
                return text
            break
    return uuid.uuid4().hex


def _printable(path: Any) -> str:
    text = str(path)
    if len(text) > 300:
        text = text[:300] + "..."
    # Control characters and non-ASCII escaped: a path can't forge log lines.
    escaped: str = text.encode("unicode_escape").decode("ascii")
    return escaped
