"""Templates to HTML answers: the Jinja environment, security headers, links and data blocks.

Every page is rendered with autoescape on and answered with a strict Content-Security-Policy:
scripts and styles only from ``/static`` (no inline script or style), nothing from other
origins, no framing. Values that the page's script reads go into ``<script
type="application/json">`` blocks, which the browser never runs; :func:`json_block` escapes
``<``, ``>`` and ``&`` so that recorded text can't close the block.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from bitfab.server.ui import runs, values
from bitfab.store.records import RecordError, dump_json

__all__ = [
    "SECURITY_HEADERS",
    "STATIC_DIR",
    "Renderer",
    "json_block",
    "run_href",
    "trace_href",
    "traces_href",
]

_HERE = Path(__file__).parent
STATIC_DIR = _HERE / "static"
TEMPLATES_DIR = _HERE / "templates"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def json_block(value: Any) -> Markup:
    """``value`` as JSON that is safe inside ``<script type="application/json">``."""
    try:
        text = dump_json(value)
    except RecordError:
        text = "null"
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)  # noqa: S704 - only ASCII JSON with <, > and & escaped


def _q(value: str) -> str:
    return quote(value, safe="")


def trace_href(trace_id: str, span_id: str | None = None) -> str:
    href = "/traces/" + _q(trace_id)
    return href + ("?" + urlencode({"span": span_id}) if span_id else "")


def run_href(run_id: str, verdict: str | None = None) -> str:
    href = "/runs/" + _q(run_id)
    return href + ("?" + urlencode({"verdict": verdict}) if verdict else "")


def traces_href(key: str | None = None, **params: Any) -> str:
    query = {"key": key} if key is not None else {}
    query.update({k: v for k, v in params.items() if v is not None and v is not False and v != ""})
    return "/traces" + ("?" + urlencode(query) if query else "")


def _asset_versions() -> dict[str, str]:
    versions = {}
    for path in sorted(STATIC_DIR.iterdir()):
        if path.is_file():
            versions[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    return versions


class Renderer:
    """Renders the UI's templates; one per app."""

    def __init__(self, *, auth: bool) -> None:
        self.auth = auth
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        versions = _asset_versions()

        def static(name: str) -> str:
            return f"/static/{_q(name)}?v={versions.get(name, '0')}"

        self.env.globals.update(
            static=static,
            trace_href=trace_href,
            run_href=run_href,
            traces_href=traces_href,
            json_block=json_block,
            fmt_ms=values.fmt_ms,
            fmt_int=values.fmt_int,
            fmt_time=values.fmt_time,
            fmt_pct=values.fmt_pct_change,
            verdict_class=runs.verdict_class,
            auth=auth,
        )
        self.env.filters["clip"] = values.clip

    def page(
        self,
        request: Request,
        template: str,
        context: Mapping[str, Any],
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        now_us = time.time_ns() // 1000
        body = self.env.get_template(template).render(
            {
                "nav": "",
                "title": "bitfab",
                **context,
                "request_path": request.url.path,
                "ago": lambda us: values.fmt_ago(us, now_us),
            }
        )
        return HTMLResponse(
            body, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})}
        )

    def error(self, request: Request, status: int, title: str, detail: str) -> Response:
        return self.page(
            request,
            "error.html",
            {"status": status, "title": title, "detail": detail},
            status=status,
        )
