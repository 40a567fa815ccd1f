"""The web UI that ``bitfab serve`` shows: server-rendered pages over the store.

Pages (all GET, all needing a key of scope ``read`` when the server requires keys):

======================  =============================================================
``/``, ``/functions``   every traced key: calls, root calls, error rate, p50, tokens
``/traces?key=K``       traces newest first (also ``/functions/K``); errors, time, search
``/traces/ID``          one trace: span tree with a timeline, the selected span's detail
``/spans/ID``           redirects to the span's trace, the span selected
``/runs``               test runs: verdict counts, latency and token changes
``/runs/ID``            one test run: summary, items with side-by-side outputs and diffs
``/login``              asks for a read key once (a cookie keeps it; see ``session``)
======================  =============================================================

``/ui/span?id=ID`` gives the trace page's script one span's detail as JSON. Templates are in
``templates/``, the script and style sheet in ``static/`` (served at ``/static``; no build
step, nothing fetched from elsewhere).
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from bitfab.server.auth import ServerContext
from bitfab.server.ui.pages import Pages
from bitfab.server.ui.render import STATIC_DIR, Renderer
from bitfab.server.ui.session import Session

__all__ = ["UI", "routes"]


class _Static(StaticFiles):
    """The script, style sheet and icon. Pages link them with ``?v=<hash of the file>``, so a
    browser may keep them for a year: a changed file gets a new URL."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["X-Content-Type-Options"] = "nosniff"
        if response.status_code == 200:
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response


class UI:
    """The UI of one app: its routes and its 404 page."""

    def __init__(self, ctx: ServerContext) -> None:
        self.renderer = Renderer(auth=ctx.auth)
        self.pages = Pages(ctx, self.renderer)
        self.session = Session(ctx, self.renderer)

    def routes(self) -> list[BaseRoute]:
        pages, page = self.pages, self.pages.guard
        return [
            Route("/", page(pages.functions), methods=["GET"]),
            Route("/functions", page(pages.functions), methods=["GET"]),
            Route("/functions/{key:path}", page(pages.function_traces), methods=["GET"]),
            Route("/traces", page(pages.traces), methods=["GET"]),
            Route("/traces/{trace_id:path}", page(pages.trace), methods=["GET"]),
            Route("/spans/{span_id:path}", page(pages.span), methods=["GET"]),
            Route("/runs", page(pages.runs), methods=["GET"]),
            Route("/runs/{run_id:path}", page(pages.run), methods=["GET"]),
            Route("/ui/span", pages.guard_json(pages.span_json), methods=["GET"]),
            Route("/login", self.session.login_page, methods=["GET"]),
            Route("/login", self.session.login, methods=["POST"]),
            Route("/logout", self.session.logout, methods=["POST"]),
            Mount("/static", _Static(directory=STATIC_DIR), name="static"),
        ]


def routes(ctx: ServerContext) -> list[BaseRoute]:
    """The UI's routes over ``ctx``'s store."""
    return UI(ctx).routes()
