"""Serving the app with uvicorn: the socket, the timeouts, graceful shutdown.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) but sets no deadline on a
connection that sends its request head slowly, a byte at a time (slowloris). The protocol
class here adds one: a connection that has not sent a whole request head within
``head_timeout`` seconds of opening, or of its previous response, is closed. Bodies have their
own deadline in the app (:attr:`Limits.body_timeout`, 408).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from bitfab.retention import RetentionThread
from bitfab.server.app import create_app
from bitfab.server.body import Limits
from bitfab.store.base import Store

__all__ = ["ServeOptions", "bind", "serve"]

logger = logging.getLogger("bitfab.server")


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head."""

    head_timeout: float = 10.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._head_deadline: asyncio.TimerHandle | None = None
        self._arm_head_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._cancel_head_deadline()
        if not self.transport.is_closing():
            self._head_deadline = self.loop.call_later(self.head_timeout, self._head_expired)

    def _cancel_head_deadline(self) -> None:
        deadline = getattr(self, "_head_deadline", None)
        if deadline is not None:
            deadline.cancel()
            self._head_deadline = None

    def _head_expired(self) -> None:
        self._head_deadline = None
        waiting_for_head = self.cycle is None or self.cycle.response_complete
        if waiting_for_head and not self.transport.is_closing():
            self.transport.close()


class ServeOptions:
    """How ``bitfab serve`` runs uvicorn (the CLI's flags)."""

    def __init__(
        self,
        *,
        auth: bool = True,
        limits: Limits | None = None,
        log_level: str = "info",
        timeout_keep_alive: int = 5,
        head_timeout: float = 10.0,
        limit_concurrency: int = 1000,
        graceful_timeout: int = 10,
        backlog: int = 2048,
        retention_s: float | None = None,
        retention_every_s: float = 600.0,
    ) -> None:
        self.auth = auth
        self.limits = limits or Limits()
        self.log_level = log_level
        self.timeout_keep_alive = timeout_keep_alive
        self.head_timeout = head_timeout
        self.limit_concurrency = limit_concurrency
        self.graceful_timeout = graceful_timeout
        self.backlog = backlog
        self.retention_s = retention_s
        """Delete traces older than this many seconds, in the background (None: keep all)."""
        self.retention_every_s = retention_every_s


def bind(host: str, port: int, *, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port). Raises ``OSError``."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    if not infos:  # pragma: no cover - getaddrinfo raises instead
        raise OSError(f"cannot resolve {host}")
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def _stop_quietly(signum: int, frame: FrameType | None) -> None:
    # uvicorn handles SIGTERM/SIGINT itself (graceful shutdown) and, once done, raises the
    # signal again against the previous handler: this one, which ends the process with 0.
    raise SystemExit(0)


def serve(
    store: Store,
    sock: socket.socket,
    options: ServeOptions,
    *,
    ready: Callable[[], None] | None = None,
) -> None:
    """Serve the app over ``store`` on ``sock`` until SIGTERM or SIGINT; closes the store."""
    app = create_app(store, auth=options.auth, limits=options.limits)
    protocol = type(
        "BitfabH11Protocol", (GuardedH11Protocol,), {"head_timeout": options.head_timeout}
    )
    config_args: dict[str, Any] = {
        "http": protocol,
        "lifespan": "on",
        "log_config": None,
        "log_level": options.log_level,
        "access_log": False,
        "timeout_keep_alive": options.timeout_keep_alive,
        "timeout_graceful_shutdown": options.graceful_timeout,
        "limit_concurrency": options.limit_concurrency,
        "backlog": options.backlog,
        "h11_max_incomplete_event_size": 32 * 1024,
        "server_header": False,
    }
    server = uvicorn.Server(uvicorn.Config(app, **config_args))
    previous = {sig: signal.signal(sig, _stop_quietly) for sig in (signal.SIGTERM, signal.SIGINT)}
    retention = None
    if options.retention_s is not None:
        retention = RetentionThread(store, options.retention_s, every_s=options.retention_every_s)
    try:
        if ready is not None:
            ready()
        if retention is not None:
            retention.start()
        server.run(sockets=[sock])
    finally:
        if retention is not None:
            retention.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        store.close()
