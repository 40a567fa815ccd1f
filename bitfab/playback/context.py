"""The replay context: what a replayed call carries in OpenTelemetry context.

One :class:`ReplayContext` per replayed item holds the test run id, the source span and trace,
and the mock plan (the recorded subtree). Every span recorded under it is tagged with the test
run, and nested traced calls are matched against the recording by (key, span name, occurrence
among siblings of that key and name) so that ``mock_on_replay`` calls can be served from it.

A call selected for mocking whose recording is missing or unreadable **fails closed**: the real
call is not made, it raises :class:`MockMissingError`, and the item fails even if the app
swallows that exception.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bitfab.codec import decode_value
from bitfab.exceptions import ReplayDecodeError, ReplayError

if TYPE_CHECKING:
    from bitfab.tracing.decorator import FunctionSpec
    from bitfab.tracing.span import Span

__all__ = [
    "MOCK_MODES",
    "MockMissingError",
    "MockNode",
    "RecordedCallError",
    "ReplayContext",
    "RunPlan",
]

MOCK_MODES = ("marked", "all", "none")


class MockMissingError(ReplayError):
    """A nested call selected for mocking has no usable recording; the real call was not made."""


class RecordedCallError(ReplayError):
    """A mocked call whose recording is an exception: raised in its place, with the recorded message."""

    def __init__(self, message: str, *, error_type: str | None) -> None:
        super().__init__(f"{error_type or 'Error'}: {message} (recorded)")
        self.recorded_type = error_type
        self.recorded_message = message


@dataclass
class MockNode:
    """One recorded span of the source trace, with its children grouped for matching."""

    span_id: str
    key: str
    name: str
    has_output: bool
    output: Any = None
    output_meta: Any = None
    error: str | None = None
    error_type: str | None = None
    children: dict[tuple[str, str], list[MockNode]] = field(default_factory=dict)

    @classmethod
    def from_tree(cls, node: Mapping[str, Any]) -> MockNode:
        """Build from a ``spanTree`` node (PROTOCOL.md): ``sourceSpanId``, ``children``, ``output``..."""
        built = cls(
            span_id=str(node.get("sourceSpanId") or node.get("externalSpanId") or ""),
            key=str(node.get("traceFunctionKey") or ""),
            name=str(node.get("spanName") or ""),
            has_output="output" in node,
            output=node.get("output"),
            output_meta=node.get("outputMeta"),
            error=node.get("error"),
            error_type=node.get("errorType"),
        )
        for child in node.get("children") or ():
            if isinstance(child, Mapping):
                sub = cls.from_tree(child)
                built.children.setdefault((sub.key, sub.name), []).append(sub)
        return built

    def match(self, key: str, name: str, occurrence: int) -> MockNode | None:
        siblings = self.children.get((key, name))
        if siblings is None or occurrence >= len(siblings):
            return None
        return siblings[occurrence]


@dataclass
class RunPlan:
    """What is fixed for a whole test run."""

    test_run_id: str
    mock: str = "marked"
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mock not in MOCK_MODES:
            raise ReplayError(f"mock must be one of {MOCK_MODES}, not {self.mock!r}")


class _Intercepted:
    """A nested call answered without running it: a recorded/overridden value, or an error."""

    __slots__ = ("error", "source", "value")

    def __init__(
        self, value: Any = None, *, source: str = "recorded", error: BaseException | None = None
    ) -> None:
        self.value = value
        self.source = source
        self.error = error

    def deliver(self, spec: FunctionSpec, span: Span) -> Any:
        span.mock_source = self.source
        if self.error is not None:
            spec.fail(span, self.error)
            raise self.error
        spec.finish(span, self.value)
        if spec.kind == "generator":
            return iter(self.value if isinstance(self.value, (list, tuple)) else ())
        if spec.kind == "async_generator":
            return _aiter(self.value if isinstance(self.value, (list, tuple)) else ())
        return self.value


async def _aiter(items: Any) -> AsyncIterator[Any]:
    for item in items:
        yield item


class ReplayContext:
    """The context of one replayed item; lives in OpenTelemetry context under ``REPLAY_KEY``."""

    def __init__(
        self, plan: RunPlan, *, source_span_id: str, source_trace_id: str, source: MockNode | None
    ) -> None:
        self.plan = plan
        self.test_run_id = plan.test_run_id
        self.source_span_id = source_span_id
        self.source_trace_id = source_trace_id
        self.source = source
        self.spans: list[Span] = []
        self.failures: list[str] = []
        self.mocked: list[str] = []
        self.root: Span | None = None
        self._nodes: dict[int, MockNode | None] = {}
        self._seen: dict[tuple[int, str, str], int] = {}
        self._lock = threading.Lock()

    def intercept(
        self, spec: FunctionSpec, span: Span, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> _Intercepted | None:
        """Place ``span`` in the recorded tree; answer it from the recording if it is to be mocked."""
        with self._lock:
            self.spans.append(span)
            if span.parent_id is None:
                if self.root is None:
                    self.root = span
                self._nodes[span.span_id] = self.source
                return None
            parent_node = self._nodes.get(span.parent_id)
            slot = (span.parent_id, spec.key, spec.name)
            occurrence = self._seen.get(slot, 0)
            self._seen[slot] = occurrence + 1
            node = (
                parent_node.match(spec.key, spec.name, occurrence)
                if parent_node is not None
                else None
            )
            self._nodes[span.span_id] = node
        overrides = self.plan.overrides
        if overrides:
            override = overrides.get(spec.key, _MISSING)
            if override is _MISSING:
                override = overrides.get(spec.name, _MISSING)
            if override is not _MISSING:
                return self._override(spec, override, args, kwargs)
        mode = self.plan.mock
        if mode == "none" or (mode == "marked" and not spec.mock_on_replay):
            return None
        where = f"{spec.key} ({spec.name}, call #{occurrence + 1} under its parent)"
        if node is None:
            return self._fail(f"no recording of the mocked call {where} in the source trace")
        if node.error is not None:
            with self._lock:
                self.mocked.append(spec.key)
            return _Intercepted(error=RecordedCallError(node.error, error_type=node.error_type))
        if not node.has_output:
            return self._fail(f"the recording of the mocked call {where} has no output")
        try:
            value = decode_value(node.output, node.output_meta, types=spec.allowed_types())
        except ReplayDecodeError as exc:
            return self._fail(
                f"the recorded output of the mocked call {where} cannot be rebuilt: {exc}"
            )
        with self._lock:
            self.mocked.append(spec.key)
        return _Intercepted(value)

    def _override(
        self, spec: FunctionSpec, override: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> _Intercepted:
        if callable(override):
            try:
                value = override(_inputs(spec, args, kwargs))
            except Exception as exc:
                return _Intercepted(error=exc, source="override")
        else:
            value = override
        with self._lock:
            self.mocked.append(spec.key)
        return _Intercepted(value, source="override")

    def _fail(self, reason: str) -> _Intercepted:
        with self._lock:
            self.failures.append(reason)
        return _Intercepted(error=MockMissingError(reason), source="missing")


_MISSING = object()


def _inputs(spec: FunctionSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments by parameter name (what a ``mock_overrides`` callable receives)."""
    import inspect

    target = spec.target
    try:
        signature = inspect.signature(target)
        params = list(signature.parameters)
        if params and params[0] in ("self", "cls") and len(args) < len(params):
            signature = signature.replace(parameters=list(signature.parameters.values())[1:])
        bound = signature.bind_partial(*args, **kwargs)
        return dict(bound.arguments)
    except (TypeError, ValueError):
        return {"args": list(args), "kwargs": dict(kwargs)}
