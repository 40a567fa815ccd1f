"""Who may call what: bearer API keys with scopes, and the in-flight limit on recording.

A missing, malformed, unknown or revoked key is 401 with one message for all four, so an answer
never tells which keys exist. A valid key without the endpoint's scope is 403. The secret is
hashed and looked up by its hash; the stored hash is then compared in constant time.

The web UI's login keeps the key's secret in a cookie (:data:`COOKIE_NAME`), checked on every
request like a bearer key, so any server process behind a load balancer accepts it. The cookie
counts only for GET/HEAD requests that need the ``read`` scope (the UI's pages and the read
API): a recording or replay endpoint never takes it, so another site cannot make a logged-in
browser write (CSRF).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from bitfab.exceptions import StoreError
from bitfab.server.body import Limits
from bitfab.server.errors import ApiError
from bitfab.store.base import Store
from bitfab.store.keys import KEY_PREFIX, ApiKey, Scope, hash_secret, scope_allows

__all__ = ["COOKIE_NAME", "Endpoint", "ServerContext", "cookie_secret", "guarded"]

logger = logging.getLogger("bitfab.server")

Endpoint = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")

_TOUCH_EVERY_S = 60.0
_MAX_SECRET_CHARS = 200
_COOKIE_METHODS = ("GET", "HEAD")
COOKIE_NAME = "bitfab_key"
"""The cookie of the web UI's login: the key's secret itself (HttpOnly, SameSite=Strict)."""
_UNAUTHORIZED = (
    "a valid API key is required: send Authorization: Bearer <key> (create one with"
    " `bitfab keys create`)"
)


@dataclass
class ServerContext:
    """What every handler of one app shares."""

    store: Store
    limits: Limits
    auth: bool = True
    ingest_in_flight: int = 0
    _touched: dict[str, float] = field(default_factory=dict)
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a (blocking) store call in the thread pool."""
        return await run_in_threadpool(fn, *args, **kwargs)

    async def authenticate(self, request: Request, needed: Scope | None) -> ApiKey | None:
        """The request's key if it may use an endpoint needing ``needed`` (None: any valid
        key); 401/403 otherwise. None without auth.

        The key comes from ``Authorization: Bearer``, or else, for a GET or HEAD needing
        ``read``, from the UI's login cookie."""
        if not self.auth:
            return None
        secret = _bearer(request.headers.get("authorization"))
        if secret is None and needed == "read" and request.method in _COOKIE_METHODS:
            secret = cookie_secret(request.cookies.get(COOKIE_NAME))
        return await self.check_secret(secret, needed, request.url.path)

    async def check_secret(self, secret: str | None, needed: Scope | None, path: str) -> ApiKey:
        """The active key of ``secret`` if it has ``needed``; 401/403 otherwise."""
        if secret is None:
            raise _unauthorized()
        digest = hash_secret(secret)
        key = await self.call(self.store.find_api_key, digest)
        if key is None or not hmac.compare_digest(key.key_hash, digest) or not key.active:
            raise _unauthorized()
        if needed is not None and not scope_allows(key.scope, needed):
            raise ApiError(
                403,
                "forbidden",
                f"this API key may not use {path}: it needs a key of scope {needed!r} or 'all'",
            )
        self._touch(key)
        return key

    def _touch(self, key: ApiKey) -> None:
        # last_used_at is written at most once a minute per key, off the request's path, and
        # a failure to write it (a busy store) is not the request's failure.
        now = time.monotonic()
        if now - self._touched.get(key.id, -_TOUCH_EVERY_S) < _TOUCH_EVERY_S:
            return
        self._touched[key.id] = now
        task = asyncio.get_running_loop().create_task(self._write_touch(key.id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _write_touch(self, key_id: str) -> None:
        try:
            await self.call(self.store.touch_api_key, key_id)
        except StoreError as exc:
            logger.debug("bitfab server: could not record the use of key %s: %s", key_id, exc)

    async def drain(self) -> None:
        """Wait for background writes (at shutdown, before the store closes)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


def _bearer(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(KEY_PREFIX):
        return None
    if len(token) > _MAX_SECRET_CHARS:
        return None
    return token


def cookie_secret(value: str | None) -> str | None:
    """The key secret a login cookie holds, or None if it doesn't look like one."""
    if value is None or not value.startswith(KEY_PREFIX) or len(value) > _MAX_SECRET_CHARS:
        return None
    if (
        not value.isascii()
        or not value[len(KEY_PREFIX) :].replace("-", "").replace("_", "").isalnum()
    ):
        return None
    return value


def _unauthorized() -> ApiError:
    return ApiError(401, "unauthorized", _UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})


def guarded(
    ctx: ServerContext, scope: Scope | None, handler: Endpoint, *, ingest: bool = False
) -> Endpoint:
    """``handler`` behind the key check; recording handlers also behind the in-flight limit."""

    async def endpoint(request: Request) -> Response:
        await ctx.authenticate(request, scope)
        if not ingest:
            return await handler(request)
        limit = ctx.limits.max_ingest_in_flight
        if ctx.ingest_in_flight >= limit:
            seconds = ctx.limits.retry_after
            raise ApiError(
                429,
                "too_many_requests",
                f"more than {limit} recording requests are in flight (the server's"
                f" max_ingest_in_flight); retry after {seconds}s",
                headers={"Retry-After": str(seconds)},
            )
        ctx.ingest_in_flight += 1
        try:
            return await handler(request)
        finally:
            ctx.ingest_in_flight -= 1

    endpoint.__name__ = getattr(handler, "__name__", "endpoint")
    return endpoint
