"""Where bitfab keeps its state in OpenTelemetry context.

The current span and the replay context live under ``opentelemetry.context`` keys, so they follow
``await``, asyncio tasks and (with :mod:`bitfab.tracing.propagation`) threads, and they nest
inside any OpenTelemetry instrumentation the app already has.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

from bitfab.tracing.span import Span

__all__ = [
    "REPLAY_KEY",
    "SPAN_KEY",
    "SUPPRESS_KEY",
    "active_span",
    "attach",
    "detach",
    "get_current",
    "otel_ids",
    "replay_context",
    "set_value",
]

SPAN_KEY = otel_context.create_key("bitfab-span")
REPLAY_KEY = otel_context.create_key("bitfab-replay")
SUPPRESS_KEY = otel_context.create_key("bitfab-suppress")

set_value = otel_context.set_value


def _runtime_var() -> ContextVar[otel_context.Context] | None:
    # OpenTelemetry's default runtime context is one ContextVar; using it directly saves the
    # indirection on every traced call. Any other runtime context goes through the public API.
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    if type(runtime) is not ContextVarsRuntimeContext:
        return None
    var = getattr(runtime, "_current_context", None)
    return var if isinstance(var, ContextVar) else None


_VAR = _runtime_var()

get_current: Callable[[], otel_context.Context]
attach: Callable[[otel_context.Context], Token[otel_context.Context]]
detach: Callable[[Token[otel_context.Context]], None]

if _VAR is not None:
    _reset = _VAR.reset

    def _detach(token: Token[otel_context.Context]) -> None:
        """Restore the context before ``attach``; never raises into the traced call."""
        try:
            _reset(token)
        except Exception:
            otel_context.detach(token)

    get_current, attach, detach = _VAR.get, _VAR.set, _detach
    # For a synchronous call, where attach and detach happen in the same context and in order,
    # ContextVar.reset cannot fail: the hot path calls it directly.
    detach_same_context: Callable[[Token[otel_context.Context]], None] = _reset
else:  # pragma: no cover - a custom OTEL_PYTHON_CONTEXT
    get_current = otel_context.get_current
    attach = otel_context.attach
    detach = otel_context.detach
    detach_same_context = otel_context.detach


def active_span() -> Span | None:
    """The bitfab span of the current context, if any."""
    span = get_current().get(SPAN_KEY)
    return span if isinstance(span, Span) else None


def replay_context() -> Any:
    """The replay context of the current context (set by replay), if any."""
    ctx = get_current()
    span = ctx.get(SPAN_KEY)
    if isinstance(span, Span) and span.replay is not None:
        return span.replay
    return ctx.get(REPLAY_KEY)


def otel_ids(ctx: otel_context.Context) -> tuple[str, str] | None:
    """Hex trace and span id of an active OpenTelemetry span, so the two traces can be joined."""
    otel_span = otel_trace.get_current_span(ctx)
    span_context = otel_span.get_span_context()
    if not span_context.is_valid:
        return None
    return (
        otel_trace.format_trace_id(span_context.trace_id),
        otel_trace.format_span_id(span_context.span_id),
    )
