"""Errors as answers: one JSON shape for every failure, and nothing inside it that leaks.

Every failure answers ``{"error": "<code>", "detail": "<what, where>", "requestId": "..."}``.
Handlers raise :class:`ApiError`; the store's own errors are translated here (busy -> 503,
full -> 507, anything else -> 500 with the message kept for the log). A detail never holds a
stack trace, SQL, a file path or a secret: store messages name the database file, so they go
to the log only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from bitfab.exceptions import StoreError
from bitfab.store.base import StoreBusyError, StoreFullError, UnknownTestRunError
from bitfab.store.records import RecordError, dump_json

__all__ = [
    "ApiError",
    "FieldError",
    "error_response",
    "handle_api_error",
    "handle_http_exception",
    "handle_store_error",
    "json_response",
    "request_id_of",
]

logger = logging.getLogger("bitfab.server")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "too_many_requests",
    503: "unavailable",
}


class FieldError(Exception):
    """One invalid field of a request: where (``body.spans[3].rawSpan.id``) and what."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class ApiError(Exception):
    """A failure to answer as ``{"error": code, "detail": detail}`` with this status."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        fields: Sequence[FieldError] = (),
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})
        self.fields = tuple(fields)

    @classmethod
    def invalid(cls, *errors: FieldError) -> ApiError:
        """422 listing the invalid fields by path."""
        detail = "; ".join(str(error) for error in errors[:5])
        if len(errors) > 5:
            detail += f"; and {len(errors) - 5} more"
        return cls(422, "invalid", detail, fields=errors)


def json_response(
    data: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """``data`` as strict ASCII JSON (so a stored lone surrogate still encodes)."""
    try:
        body = dump_json(data)
    except RecordError:  # pragma: no cover - stored and parsed data is always valid JSON
        logger.exception("bitfab server: an answer could not be written as JSON")
        body = dump_json({"error": "internal", "detail": "see the server log"})
        status = 500
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def request_id_of(request: Request) -> str:
    value = request.scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else ""


def error_response(
    request_id: str,
    status: int,
    code: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    fields: Sequence[FieldError] = (),
) -> Response:
    body: dict[str, Any] = {"error": code, "detail": detail, "requestId": request_id}
    if fields:
        body["fields"] = [{"path": f.path, "message": f.message} for f in fields[:100]]
    return json_response(body, status, headers)


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(
        request_id_of(request),
        exc.status,
        exc.code,
        exc.detail,
        headers=exc.headers,
        fields=exc.fields,
    )


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no route) and 405 (route, other method) in our shape."""
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if status == 404:
        detail = f"no endpoint at {request.url.path}"
    elif status == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        detail = f"{request.method} is not allowed on {request.url.path}" + (
            f"; allowed: {allowed}" if allowed else ""
        )
    else:
        detail = "the request could not be handled"
    return error_response(
        request_id_of(request),
        status,
        _HTTP_CODES.get(status, "error"),
        detail,
        headers=exc.headers,
    )


def retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


async def handle_store_error(request: Request, exc: Exception) -> Response:
    """Store failures: busy -> 503 + Retry-After, full -> 507, unknown run -> 404, else 500."""
    rid = request_id_of(request)
    if isinstance(exc, StoreBusyError):
        logger.warning("bitfab server: store busy [%s]: %s", rid, exc)
        return error_response(
            rid,
            503,
            "store_busy",
            "the store is busy with other writers; retry after the Retry-After delay",
            headers=retry_after(exc.retry_after),
        )
    if isinstance(exc, StoreFullError):
        logger.error("bitfab server: store cannot write [%s]: %s", rid, exc)
        return error_response(
            rid,
            507,
            "store_full",
            "the store cannot write (disk full or failing); the server's operator must free space",
        )
    if isinstance(exc, UnknownTestRunError):
        return error_response(rid, 404, "not_found", "no test run with this id")
    logger.error("bitfab server: store error [%s]: %s", rid, exc)
    return error_response(rid, 500, "store_error", "the store failed; see the server log")


EXCEPTION_HANDLERS = {
    ApiError: handle_api_error,
    HTTPException: handle_http_exception,
    StoreError: handle_store_error,
}
