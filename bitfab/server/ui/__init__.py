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

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from bitfab.server.auth import ServerContext
from bitfab.server.ui.pages import Pages
from bitfab.server.ui.render import STATIC_DIR, Renderer
from bitfab.server.ui.session import Session

__all__ = ["UI", "routes"]


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
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ]


def routes(ctx: ServerContext) -> list[BaseRoute]:
    """The UI's routes over ``ctx``'s store."""
    return UI(ctx).routes()
