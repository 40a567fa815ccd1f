"""Carry bitfab's context into threads and thread-pool tasks started inside a traced call.

asyncio tasks copy context by themselves; threads and ``concurrent.futures`` pools do not. When
installed (by default, on the first traced call; ``configure(propagate_threads=False)`` opts out),
``threading.Thread.start`` and ``ThreadPoolExecutor.submit`` copy the caller's context **only when
a bitfab span or replay is active**, each thread and each task into its own copy (a context object
can't be entered twice at once). A pool's own worker threads are never given a copy: they outlive
the call and would leak its span into later, unrelated tasks.
"""

from __future__ import annotations

import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import thread as _futures_thread
from typing import Any

from bitfab.tracing.context import REPLAY_KEY, SPAN_KEY, get_current
from bitfab.tracing.span import Span


def has_bitfab_context() -> bool:
    """A span of an instance that propagates to threads, or a replay, is active here."""
    ctx = get_current()
    span = ctx.get(SPAN_KEY)
    if isinstance(span, Span):
        return bool(span.spec.client.config.propagate_threads)
    return ctx.get(REPLAY_KEY) is not None


__all__ = ["install", "installed", "uninstall"]

_lock = threading.Lock()
_original_start: Callable[[threading.Thread], None] | None = None
_original_submit: Callable[..., Future[Any]] | None = None
_POOL_WORKER = getattr(_futures_thread, "_worker", None)


def _start(self: threading.Thread) -> None:
    assert _original_start is not None
    if has_bitfab_context() and getattr(self, "_target", None) is not _POOL_WORKER:
        context = contextvars.copy_context()
        run = self.run
        self.run = functools.partial(context.run, run)  # type: ignore[method-assign]
    _original_start(self)


def _submit(self: ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    assert _original_submit is not None
    if has_bitfab_context():
        fn = functools.partial(contextvars.copy_context().run, fn)
    return _original_submit(self, fn, *args, **kwargs)


def install() -> None:
    """Patch ``Thread.start`` and ``ThreadPoolExecutor.submit`` (idempotent)."""
    global _original_start, _original_submit
    with _lock:
        if _original_start is not None:
            return
        _original_start = threading.Thread.start
        _original_submit = ThreadPoolExecutor.submit
        threading.Thread.start = _start  # type: ignore[method-assign]
        ThreadPoolExecutor.submit = _submit  # type: ignore[method-assign,assignment]


def uninstall() -> None:
    """Undo :func:`install`."""
    global _original_start, _original_submit
    with _lock:
        if _original_start is None or _original_submit is None:
            return
        threading.Thread.start = _original_start  # type: ignore[method-assign,assignment]
        ThreadPoolExecutor.submit = _original_submit  # type: ignore[method-assign]
        _original_start = _original_submit = None


def installed() -> bool:
    return _original_start is not None
