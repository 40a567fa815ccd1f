"""The span: one call of a traced function, as it is being recorded.

A :class:`Span` is built on the caller's thread with values that are already snapshots (encoded
input, encoded output), so nothing the app does later changes what was recorded. It is turned into
the wire record on the exporter's thread (:mod:`bitfab.export.wire`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from bitfab._internal import internal_error

if TYPE_CHECKING:
    from bitfab.codec import Encoded
    from bitfab.playback.context import ReplayContext

__all__ = ["NOOP_SPAN", "NO_VALUE", "NoopSpan", "Span", "SpanSpec", "format_id"]

NO_VALUE: Any = object()
"""Marks ``Span.plain_output`` as unset (None is a value)."""


class SpanSpec(Protocol):
    """What a span takes from its traced function (``FunctionSpec``)."""

    key: str
    name: str
    span_type: str
    function_name: str
    client: Any

    def _redactor(self) -> Any: ...


# Guards the per-trace counters that decide when a trace is complete. Held for a few
# instructions only; children may end on other threads than their root.
_TRACE_LOCK = threading.Lock()

_USAGE_FIELDS = {
    "provider": "provider",
    "model": "model",
    "input_tokens": "inputTokens",
    "output_tokens": "outputTokens",
    "cached_tokens": "cachedInputTokens",
    "reasoning_tokens": "reasoningTokens",
    "cost_usd": "costUsd",
}

_MAX_CONTEXTS = 64


def format_id(number: int) -> str:
    """A 128-bit id written as a UUIDv7 string (version and variant bits set here, on the
    exporter's thread, so that minting an id on the caller's thread stays cheap)."""
    text = f"{number & _ID_MASK | _ID_BITS:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_ID_MASK = ((1 << 128) - 1) & ~(0xF << 76) & ~(0x3 << 62)
_ID_BITS = (0x7 << 76) | (0x2 << 62)


class Span:
    """A call being recorded. ``bitfab.current_span()`` returns it inside a traced call."""

    # No __slots__: unset fields fall back to these class defaults, so creating a span assigns
    # only what every span has (the hot path of each traced call).
    end_ns = 0
    input: Encoded | None = None
    output: Encoded | None = None
    error: str | None = None
    error_type: str | None = None
    traceback: Any = None
    contexts: list[dict[str, Any]] | None = None
    metadata: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    problems: list[str] | None = None
    mock_source: str | None = None
    plain_input: tuple[Any, ...] | None = None
    """Arguments that are all numbers, booleans or None: recorded as they are (no encoding)."""
    plain_output: Any = NO_VALUE
    """A number, boolean or None result, recorded as it is (``output`` stays None then)."""
    otel: tuple[str, str] | None = None
    thread_id: int = 0
    completes_trace = 0
    seq = 0
    """Start order within the trace (0 for the root): orders siblings when clocks tie."""
    parent_id: int | None = None
    # Open spans and spans started in this trace: kept on the root only (a root counts itself).
    _open = 1
    _span_count = 1

    span_id: int
    trace_id: int
    root: Span
    spec: SpanSpec
    start_ns: int
    replay: ReplayContext | None

    def __init__(
        self,
        span_id: int,
        parent: Span | None,
        spec: SpanSpec,
        start_ns: int,
        replay: ReplayContext | None,
    ) -> None:
        self.span_id = span_id
        self.spec = spec
        self.start_ns = start_ns
        self.replay = replay
        if parent is None:
            # parent_id, _open and _span_count keep their class defaults (None, 1, 1).
            self.trace_id = span_id
            self.root = self
        else:
            self.parent_id = parent.span_id
            self.trace_id = parent.trace_id
            root = parent.root
            self.root = root
            with _TRACE_LOCK:
                root._open += 1
                self.seq = root._span_count
                root._span_count += 1

    @property
    def key(self) -> str:
        """The traced function's key."""
        return self.spec.key

    @property
    def name(self) -> str:
        """The span name (the function's name unless ``name=`` was given)."""
        return self.spec.name

    @property
    def span_type(self) -> str:
        return self.spec.span_type

    @property
    def function_name(self) -> str:
        return self.spec.function_name

    # -- the user's API (bitfab.current_span()) ------------------------------------------------

    @property
    def id(self) -> str:
        """This span's id as written on the wire."""
        return format_id(self.span_id)

    @property
    def trace_id_str(self) -> str:
        """The trace's id as written on the wire."""
        return format_id(self.trace_id)

    @property
    def is_recording(self) -> bool:
        return True

    def set_usage(
        self,
        *,
        model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cached_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        cost_usd: float | None = None,
        provider: str | None = None,
    ) -> None:
        """Record LLM usage on this span; fields given replace earlier values."""
        given = {
            "provider": provider,
            "model": model,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cached_tokens": cached_tokens,
            "reasoning_tokens": reasoning_tokens,
            "cost_usd": cost_usd,
        }
        usage = dict(self.usage or {})
        for name, value in given.items():
            if value is None:
                continue
            if name in ("provider", "model"):
                usage[_USAGE_FIELDS[name]] = str(value)
            elif name == "cost_usd":
                try:
                    usage["costUsd"] = float(value)
                except (TypeError, ValueError):
                    internal_error("set_usage(cost_usd)")
            else:
                try:
                    usage[_USAGE_FIELDS[name]] = int(value)
                except (TypeError, ValueError):
                    internal_error(f"set_usage({name})")
        self.usage = usage

    def add_context(self, data: Mapping[str, Any]) -> None:
        """Append a dict of context (retrieved documents, the prompt, flags) to this span."""
        try:
            from bitfab.codec import encode_value

            encoded = encode_value(dict(data), redactor=self.spec._redactor())
            if self.contexts is None:
                self.contexts = []
            if len(self.contexts) < _MAX_CONTEXTS:
                self.contexts.append(encoded.value)
        except Exception:
            internal_error("add_context")

    def set_metadata(self, data: Mapping[str, Any] | None = None, /, **values: Any) -> None:
        """Attach metadata (tags, user id, version): ``set_metadata(user="u1")``."""
        try:
            from bitfab.codec import encode_value

            merged = dict(data or {})
            merged.update(values)
            encoded = encode_value(merged, redactor=self.spec._redactor())
            if self.metadata is None:
                self.metadata = {}
            self.metadata.update(encoded.value)
        except Exception:
            internal_error("set_metadata")

    def add_problem(self, reason: str) -> None:
        if self.problems is None:
            self.problems = []
        self.problems.append(reason)

    # -- bookkeeping ---------------------------------------------------------------------------

    def close(self) -> None:
        """Mark the span ended; remember whether its end completes the trace."""
        root = self.root
        with _TRACE_LOCK:
            root._open -= 1
            if root._open == 0:
                self.completes_trace = root._span_count

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    def __repr__(self) -> str:
        return f"<bitfab.Span {self.key}:{self.name} {self.id}>"


class NoopSpan:
    """What ``bitfab.current_span()`` returns outside a traced call: every method does nothing."""

    __slots__ = ()

    id = None
    trace_id_str = None

    @property
    def is_recording(self) -> bool:
        return False

    def set_usage(self, **_: Any) -> None:
        return None

    def add_context(self, data: Mapping[str, Any]) -> None:
        return None

    def set_metadata(self, data: Mapping[str, Any] | None = None, /, **values: Any) -> None:
        return None

    def __repr__(self) -> str:
        return "<bitfab.NoopSpan>"


NOOP_SPAN = NoopSpan()
