"""Logging in to the UI: a read key, asked for once, kept in a cookie that holds the key itself.

The server keeps no sessions. The cookie carries the key's secret and every request checks it
like a bearer key (:meth:`ServerContext.authenticate`), so every server process behind a load
balancer accepts it and revoking the key logs the browser out. The cookie is ``HttpOnly``,
``SameSite=Strict``, ``Path=/``, and ``Secure`` when the request came over https (directly or
through a proxy that says so in ``X-Forwarded-Proto``). The server takes it only on GET pages
and GET read endpoints, never on the recording or replay endpoints.

Logging in and out are POSTs from the UI's own forms: one from another origin (``Origin`` or
``Sec-Fetch-Site`` say so) is refused, so another site can't log a browser in or out.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlencode

import anyio
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bitfab.server.auth import COOKIE_NAME, ServerContext, cookie_secret
from bitfab.server.errors import ApiError
from bitfab.server.ui.render import SECURITY_HEADERS, Renderer

__all__ = ["COOKIE_MAX_AGE", "Session", "login_href", "safe_next"]

COOKIE_MAX_AGE = 14 * 24 * 3600
"""How long a browser keeps the login: two weeks, or until the key is revoked."""

_MAX_FORM_BYTES = 8192
_FORM_TIMEOUT_S = 10.0
_SAFE_NEXT = re.compile(r"^/(?![/\\])[\x21-\x7e]*$")


def safe_next(value: str | None) -> str:
    """``value`` if it is a path on this server (``/runs/x?verdict=changed``), else ``/``."""
    if value is None or len(value) > 2000 or not _SAFE_NEXT.match(value) or "\\" in value:
        return "/"
    return value


def login_href(request: Request) -> str:
    """The login page, coming back to ``request``'s page afterwards."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/login?" + urlencode({"next": safe_next(target)})


def _https(request: Request) -> bool:
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def _same_origin(request: Request) -> bool:
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1].rstrip("/").lower() == host.lower()


async def _form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise ApiError(415, "unsupported_media_type", "send the login form")
    body = bytearray()
    with anyio.fail_after(_FORM_TIMEOUT_S):
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_FORM_BYTES:
                raise ApiError(413, "too_large", "the form is too large")
    try:
        fields = parse_qs(body.decode("ascii"), max_num_fields=10, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "bad_request", "the form could not be read") from None
    return {name: values[0] for name, values in fields.items() if values}


class Session:
    """The login page, logging in and out."""

    def __init__(self, ctx: ServerContext, renderer: Renderer) -> None:
        self.ctx = ctx
        self.renderer = renderer

    def _form_page(
        self, request: Request, next_path: str, error: str | None, status: int
    ) -> Response:
        return self.renderer.page(
            request,
            "login.html",
            {"next": next_path, "error": error, "title": "Log in", "nav": "login"},
            status=status,
        )

    async def login_page(self, request: Request) -> Response:
        next_path = safe_next(request.query_params.get("next"))
        if not self.ctx.auth:
            return RedirectResponse(next_path, 303, headers=SECURITY_HEADERS)
        return self._form_page(request, next_path, None, 200)

    async def login(self, request: Request) -> Response:
        if not _same_origin(request):
            return self.renderer.error(
                request, 403, "Forbidden", "This form must be sent from this site."
            )
        if not self.ctx.auth:
            return RedirectResponse("/", 303, headers=SECURITY_HEADERS)
        try:
            form = await _form(request)
        except ApiError as exc:
            return self.renderer.error(request, exc.status, "Cannot log in", exc.detail)
        except TimeoutError:
            return self.renderer.error(
                request, 408, "Cannot log in", "the form took too long to arrive"
            )
        next_path = safe_next(form.get("next"))
        secret = cookie_secret(form.get("key", "").strip())
        try:
            await self.ctx.check_secret(secret, "read", "the UI")
        except ApiError as exc:
            message = (
                "This key may not read: log in with a key of scope read or all."
                if exc.status == 403
                else "Unknown, revoked or mistyped key. Create one with `bitfab keys create --scope read`."
            )
            return self._form_page(request, next_path, message, exc.status)
        assert secret is not None
        response = RedirectResponse(next_path, 303, headers=SECURITY_HEADERS)
        response.set_cookie(
            COOKIE_NAME,
            secret,
            max_age=COOKIE_MAX_AGE,
            path="/",
            secure=_https(request),
            httponly=True,
            samesite="strict",
        )
        return response

    async def logout(self, request: Request) -> Response:
        if not _same_origin(request):
            return self.renderer.error(
                request, 403, "Forbidden", "This form must be sent from this site."
            )
        response = RedirectResponse(
            "/login" if self.ctx.auth else "/", 303, headers=SECURITY_HEADERS
        )
        response.delete_cookie(
            COOKIE_NAME, path="/", secure=_https(request), httponly=True, samesite="strict"
        )
        return response
