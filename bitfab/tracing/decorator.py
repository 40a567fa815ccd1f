"""``@bitfab.trace``: the wrapper that turns each call of a function into a span.

The path (sync, async, generator, async generator) is chosen once, at decoration time. Every
bitfab step around the user's call is guarded: a failure is logged once and the call goes on
untraced. The user's own result and exception pass through untouched (same object, same
traceback).
"""

from __future__ import annotations

import inspect
import traceback as tb_module
import weakref
from collections.abc import AsyncGenerator, Callable, Generator, Iterable
from contextvars import Token
from threading import get_ident as _get_ident
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

import wrapt
from opentelemetry.context import Context as OtelContext

from bitfab._internal import internal_error
from bitfab.codec import GLOBAL_TYPES, Encoded, Redactor, TypeAllowList, encode_call, encode_value
from bitfab.exceptions import ConfigError
from bitfab.tracing.context import (
    REPLAY_KEY,
    SPAN_KEY,
    SUPPRESS_KEY,
    attach,
    detach,
    detach_same_context,
    get_current,
    otel_ids,
    set_value,
)
from bitfab.tracing.registry import FunctionInfo, describe
from bitfab.tracing.span import Span
from bitfab.tracing.usage import usage_from_response

if TYPE_CHECKING:
    from bitfab.client import Bitfab, Runtime

__all__ = ["SPAN_TYPES", "FunctionSpec", "TracedBoundFunction", "TracedFunction"]

SPAN_TYPES = frozenset({"function", "llm", "agent", "guardrail", "handoff", "custom"})

P = ParamSpec("P")
R = TypeVar("R")

_ATOMS = frozenset({type(None), bool, int, float, str, bytes})
_MAX_TRACEBACK_FRAMES = 32
_PLAIN_INT = 1 << 63
_new_span = object.__new__
_Context = OtelContext
_set_item = dict.__setitem__
_REDACT_FAILED = Encoded("<dropped: redact hook failed>", None, ("redact hook failed",), 32)
_NOT_CAPTURED = Encoded(None, None, ("input not captured (capture_input=False)",), 4)

try:
    from opentelemetry.trace.propagation import _SPAN_KEY as _OTEL_SPAN_KEY
except ImportError:  # pragma: no cover - very old opentelemetry-api
    _OTEL_SPAN_KEY = "current-span"


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except BaseException as inner:
        if isinstance(inner, (KeyboardInterrupt, SystemExit)):
            raise
        return f"<str() of {_type_name(exc)} failed>"


class FunctionSpec:
    """What is fixed per traced function: its options and the steps around each call."""

    def __init__(
        self,
        client: Bitfab,
        func: Callable[..., Any],
        *,
        key: str,
        name: str | None,
        span_type: str,
        mock_on_replay: bool,
        capture_input: bool,
        capture_output: bool,
        redact: Iterable[str] | Callable[[str, Any], Any] | None,
        kind: str,
    ) -> None:
        if not isinstance(key, str) or not key.strip():
            raise ConfigError("bitfab.trace(key=...) needs a non-empty string key")
        if span_type not in SPAN_TYPES:
            raise ConfigError(f"span_type must be one of {sorted(SPAN_TYPES)}, not {span_type!r}")
        target = getattr(func, "__func__", func)
        self.target = target
        self._annotation_types: TypeAllowList | None = None
        self.client = client
        self.key = key
        self.function_name: str = getattr(target, "__name__", None) or type(target).__name__
        self.name = name or self.function_name
        self.span_type = span_type
        self.mock_on_replay = bool(mock_on_replay)
        self.capture_input = bool(capture_input)
        self.capture_output = bool(capture_output)
        self.kind = kind
        self.redact_hook: Callable[[str, Any], Any] | None = None
        extra: tuple[str, ...] = ()
        if callable(redact):
            self.redact_hook = redact
        elif redact is not None:
            if isinstance(redact, str):
                raise ConfigError("redact= takes a list of names or a callable, not a string")
            extra = tuple(redact)
            if not all(isinstance(item, str) for item in extra):
                raise ConfigError("redact= names must be strings")
        self.extra_redact = extra
        self._cached_for: object = None
        self._cached_redactor: Redactor | None = None
        self._plain_ok = False
        self.param_names, self.bound_param_names = _param_names(target)
        self.takes_receiver = self.param_names[:1] in (("self",), ("cls",)) and "." in getattr(
            target, "__qualname__", ""
        )
        self.info: FunctionInfo = describe(
            func,
            key=key,
            name=self.name,
            span_type=span_type,
            mock_on_replay=self.mock_on_replay,
            kind=kind,
        )

    def _refresh(self, runtime: Runtime) -> None:
        """Cache what depends on the settings: the redactor, and whether plain values may skip it."""
        redactor = runtime.redactor(self.extra_redact)
        self._cached_redactor = redactor
        self._plain_ok = (
            self.capture_input
            and self.redact_hook is None
            and not any(redactor.name_is_secret(name) for name in self.param_names)
        )
        self._cached_for = runtime

    def _redactor(self) -> Redactor:
        runtime = self.client._runtime
        if runtime is None:
            return self.client._redactor_for(self.extra_redact)
        if self._cached_for is not runtime:
            self._refresh(runtime)
        assert self._cached_redactor is not None
        return self._cached_redactor

    def allowed_types(self) -> TypeAllowList:
        """Classes replay may rebuild for this function: registered ones and its annotations'."""
        if self._annotation_types is None:
            allow = TypeAllowList()
            allow.allow_annotations(self.target)
            self._annotation_types = allow
        return GLOBAL_TYPES.union(self._annotation_types)

    # -- span life ------------------------------------------------------------------------------

    def start(
        self, ctx: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Span | None:
        """Open a span for this call, or return None when recording is off here."""
        if ctx.get(SUPPRESS_KEY) is not None:
            return None
        client = self.client
        runtime = client._runtime
        if runtime is None:
            if not client._start():
                return None
            runtime = client._runtime
            assert runtime is not None
        parent: Span | None = ctx.get(SPAN_KEY)
        if parent is None:
            # A root span, built in place (no __init__ frame: this runs on every call).
            span = _new_span(Span)
            span.trace_id = span.span_id = client._new_id()
            span.root = span
            span.spec = self
            span.start_ns = client._clock()
            span.replay = ctx.get(REPLAY_KEY)
        else:
            span = Span(client._new_id(), parent, self, client._clock(), parent.replay)
        span.thread_id = _get_ident()
        if ctx.get(_OTEL_SPAN_KEY) is not None:
            span.otel = otel_ids(ctx)
        if self.capture_input:
            if instance is None and self.takes_receiver and args:
                args, instance = args[1:], args[0]  # fget(obj) from a property
            if self._cached_for is not runtime:
                self._refresh(runtime)
            if self._plain_ok and not kwargs:
                # Numbers, booleans and None are immutable and never secret: the args tuple is
                # already a snapshot, encoded on the exporter's thread (see wire.py).
                for arg in args:
                    kind = type(arg)
                    if kind is int:
                        if -_PLAIN_INT < arg < _PLAIN_INT:
                            continue
                    elif arg is None or kind is bool or (kind is float and arg - arg == 0.0):
                        continue
                    break
                else:
                    span.plain_input = args
                    return span
            encoded = encode_call(
                args,
                kwargs,
                param_names=self.param_names if instance is None else self.bound_param_names,
                limits=runtime.limits,
                redactor=self._cached_redactor,
                budget=runtime.max_field_bytes,
            )
            if self.redact_hook is not None:
                encoded = self._apply_hook("input", encoded)
            span.input = encoded
        else:
            span.input = _NOT_CAPTURED
        return span

    def _apply_hook(self, field: str, encoded: Encoded) -> Encoded:
        """Run the user's redact hook on a readable value; if it raises, drop the content."""
        assert self.redact_hook is not None
        try:
            value = self.redact_hook(field, encoded.value)
            if value == encoded.value:
                return encoded
            checked = encode_value(value)
        except Exception:
            return _REDACT_FAILED
        meta = None
        if encoded.meta is not None and "kwarg_names" in encoded.meta:
            meta = {"v": 1, "kwarg_names": encoded.meta["kwarg_names"]}
        problems = (*encoded.problems, f"{field} changed by the redact hook")
        return Encoded(checked.value, meta, problems, checked.size)

    def finish(self, span: Span, result: Any, *, encoded: Encoded | None = None) -> None:
        """Close a span whose call returned ``result`` (or whose output is ``encoded``) and export it."""
        client = self.client
        try:
            span.end_ns = client._clock()
            kind = type(result)
            if encoded is not None:
                span.output = encoded
            elif (
                self.capture_output
                and self._plain_ok
                and (
                    result is None
                    or kind is bool
                    or (kind is int and -_PLAIN_INT < result < _PLAIN_INT)
                    or (kind is float and result - result == 0.0)
                )
            ):
                span.plain_output = result
                # _end(), spelled out: the commonest way a span ends.
                if span.root is span and span._span_count == 1:
                    span._open = 0
                    span.completes_trace = 1
                else:
                    span.close()
                exporter = client._exporter
                if exporter is not None:
                    exporter.emit(span)
                return
            elif self.capture_output:
                runtime = client._runtime
                assert runtime is not None
                used = span.input.size if span.input is not None else 0
                budget = runtime.max_span_bytes - used
                if budget > runtime.max_field_bytes:
                    budget = runtime.max_field_bytes
                elif budget < 1024:
                    budget = 1024
                encoded = encode_value(
                    result, limits=runtime.limits, redactor=self._redactor(), budget=budget
                )
                if self.redact_hook is not None:
                    encoded = self._apply_hook("output", encoded)
                span.output = encoded
            if span.usage is None and kind not in _ATOMS:
                span.usage = usage_from_response(result)
        except Exception:
            internal_error("encoding an output")
        self._end(span)

    def _end(self, span: Span) -> None:
        try:
            if span.root is span and span._span_count == 1:
                # A root that never had a child ends its trace without the lock: a child
                # started at this very moment in another thread counts as a late span, like
                # one started after its root ended (both get a completion record of their own).
                span._open = 0
                span.completes_trace = 1
            else:
                span.close()
            exporter = self.client._exporter
            if exporter is not None:
                exporter.emit(span)
        except Exception:
            internal_error("ending a span")

    def fail(self, span: Span, exc: BaseException) -> None:
        """Close a span whose call raised ``exc`` (recorded, never changed) and export it."""
        try:
            span.end_ns = self.client._clock()
            span.error = _safe_str(exc)
            span.error_type = _type_name(exc)
            span.traceback = tb_module.StackSummary.extract(
                tb_module.walk_tb(exc.__traceback__),
                limit=-_MAX_TRACEBACK_FRAMES,  # keep the innermost frames
                lookup_lines=False,
            )
        except Exception:
            internal_error("recording an exception")
        self._end(span)

    def encode_item(self, item: Any, budget: int) -> Encoded:
        """Snapshot one yielded item now: the consumer may change it later."""
        runtime = self.client._runtime
        assert runtime is not None
        return encode_value(item, limits=runtime.limits, redactor=self._redactor(), budget=budget)

    def item_budget(self) -> int:
        """Bytes all of a generator's recorded items may take together."""
        runtime = self.client._runtime
        return runtime.max_field_bytes if runtime is not None else 0

    def finish_items(self, span: Span, items: list[Any], truncated: int, returned: Any) -> None:
        """Close a generator's span: its output is the list of yielded items (capped)."""
        from bitfab.codec.nodes import attach as attach_node

        if truncated:
            span.add_problem(f"generator output truncated: {truncated} more items not recorded")
        if returned is not None:
            span.set_metadata(generator_return=returned)
        children = None
        problems: list[str] = []
        for i, item in enumerate(items):
            if item.meta is not None:
                children = attach_node(children, str(i), item.meta["values"])
            problems.extend(p.replace(" at $", f" at $[{i}]", 1) for p in item.problems)
        meta = None if children is None else {"v": 1, "values": children}
        size = 2 + sum(item.size for item in items)
        joined = Encoded([item.value for item in items], meta, tuple(problems), size)
        if self.capture_output and self.redact_hook is not None:
            joined = self._apply_hook("output", joined)
        self.finish(span, None, encoded=joined if self.capture_output else None)


def _param_names(func: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return (), ()
    names: list[str] = []
    for param in params:
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            names.append(param.name)
        elif param.kind is param.VAR_POSITIONAL:
            names.append(param.name)
            break
    all_names = tuple(names)
    return all_names, all_names[1:]


# -- the four call paths ---------------------------------------------------------------------------


def _sync_path(spec: FunctionSpec) -> Callable[..., Any]:
    client = spec.client

    def call(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if not client._active:
            return wrapped(*args, **kwargs)
        ctx = get_current()
        try:
            span = spec.start(ctx, instance, args, kwargs)
        except Exception:
            internal_error("starting a span")
            span = None
        if span is None:
            return wrapped(*args, **kwargs)
        if span.replay is not None:
            intercepted = span.replay.intercept(spec, span, args, kwargs)
            if intercepted is not None:
                return intercepted.deliver(spec, span)
        new_ctx = _Context(ctx)  # set_value() with one dict copy instead of two, and no frame
        _set_item(new_ctx, SPAN_KEY, span)
        token = attach(new_ctx)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            detach_same_context(token)
            spec.fail(span, exc)
            raise
        detach_same_context(token)
        spec.finish(span, result)
        return result

    return call


def _begin(
    spec: FunctionSpec, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, Span | None]:
    """The current context and a new span for this call (None: run untraced)."""
    ctx = get_current()
    try:
        return ctx, spec.start(ctx, instance, args, kwargs)
    except Exception:
        internal_error("starting a span")
        return ctx, None


def _async_path(spec: FunctionSpec) -> Callable[..., Any]:
    client = spec.client

    async def call(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        span = _begin(spec, instance, args, kwargs)[1] if client._active else None
        if span is None:
            return await wrapped(*args, **kwargs)
        if span.replay is not None:
            intercepted = span.replay.intercept(spec, span, args, kwargs)
            if intercepted is not None:
                return intercepted.deliver(spec, span)
        # Attached inside the coroutine: it runs in one task's context from start to end.
        token = attach(set_value(SPAN_KEY, span, get_current()))
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            detach(token)
            spec.fail(span, exc)
            raise
        detach(token)
        spec.finish(span, result)
        return result

    return call


class _Items:
    """A generator's yielded items, snapshotted as they are yielded, within the caps."""

    def __init__(self, spec: FunctionSpec, span: Span) -> None:
        self.spec = spec
        self.span = span
        self.cap = spec.client.config.max_generator_items if spec.capture_output else 0
        self.budget = spec.item_budget()
        self.items: list[Encoded] = []
        self.dropped = 0
        self.started = False

    def add(self, item: Any) -> None:
        if len(self.items) < self.cap and self.budget > 0:
            encoded = self.spec.encode_item(item, self.budget)
            self.budget -= encoded.size
            self.items.append(encoded)
        elif self.cap:
            self.dropped += 1

    def done(self, returned: Any = None, *, closed_early: bool = False) -> None:
        if closed_early:
            self.span.set_metadata(closed_early=True)
        self.spec.finish_items(self.span, self.items, self.dropped, returned)

    def end_if_never_started(self) -> None:
        # The generator object was dropped without being iterated: its span still ends.
        if not self.started:
            self.done(closed_early=True)


def _step_failed(spec: FunctionSpec, span: Span, token: Token[Any], exc: BaseException) -> None:
    detach(token)
    spec.fail(span, exc)


def _drive_generator(
    spec: FunctionSpec, span: Span, gen: Generator[Any, Any, Any], items: _Items
) -> Generator[Any, Any, Any]:
    """Run ``gen`` step by step with the span current during each step (never across a yield)."""
    items.started = True
    method: Callable[[Any], Any] = gen.send
    arg: Any = None
    while True:
        token = attach(set_value(SPAN_KEY, span, get_current()))
        try:
            item = method(arg)
        except StopIteration as stop:
            detach(token)
            items.done(stop.value)
            return stop.value
        except BaseException as exc:
            _step_failed(spec, span, token, exc)
            raise
        detach(token)
        items.add(item)
        try:
            arg = yield item
        except GeneratorExit:
            token = attach(set_value(SPAN_KEY, span, get_current()))
            try:
                gen.close()
            except BaseException as exc:
                _step_failed(spec, span, token, exc)
                raise
            detach(token)
            items.done(closed_early=True)
            raise
        except BaseException as exc:
            method, arg = gen.throw, exc
        else:
            method = gen.send


async def _drive_async_generator(
    spec: FunctionSpec, span: Span, agen: AsyncGenerator[Any, Any], items: _Items
) -> AsyncGenerator[Any, Any]:
    """The async twin of :func:`_drive_generator`."""
    items.started = True
    method: Callable[[Any], Any] = agen.asend
    arg: Any = None
    while True:
        token = attach(set_value(SPAN_KEY, span, get_current()))
        try:
            item = await method(arg)
        except StopAsyncIteration:
            detach(token)
            items.done()
            return
        except BaseException as exc:
            _step_failed(spec, span, token, exc)
            raise
        detach(token)
        items.add(item)
        try:
            arg = yield item
        except GeneratorExit:
            token = attach(set_value(SPAN_KEY, span, get_current()))
            try:
                await agen.aclose()
            except BaseException as exc:
                _step_failed(spec, span, token, exc)
                raise
            detach(token)
            items.done(closed_early=True)
            raise
        except BaseException as exc:
            method, arg = agen.athrow, exc
        else:
            method = agen.asend


def _generator_paths(spec: FunctionSpec) -> Callable[..., Any]:
    client = spec.client
    is_async = spec.kind == "async_generator"

    def call(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        ctx, span = _begin(spec, instance, args, kwargs) if client._active else (None, None)
        if span is None:
            return wrapped(*args, **kwargs)
        if span.replay is not None:
            intercepted = span.replay.intercept(spec, span, args, kwargs)
            if intercepted is not None:
                return intercepted.deliver(spec, span)
        # Creating the generator runs no user code for a plain generator function, but a
        # function returning a generator may: it runs with the span current.
        token = attach(set_value(SPAN_KEY, span, ctx))
        try:
            inner = wrapped(*args, **kwargs)
        except BaseException as exc:
            _step_failed(spec, span, token, exc)
            raise
        detach(token)
        items = _Items(spec, span)
        driver: Any = (
            _drive_async_generator(spec, span, inner, items)
            if is_async
            else _drive_generator(spec, span, inner, items)
        )
        weakref.finalize(driver, items.end_if_never_started).atexit = False
        return driver

    return call


_PATHS = {
    "function": _sync_path,
    "async": _async_path,
    "generator": _generator_paths,
    "async_generator": _generator_paths,
}


def kind_of(func: Any) -> str:
    target = getattr(func, "__func__", func)
    if inspect.isasyncgenfunction(target):
        return "async_generator"
    if inspect.iscoroutinefunction(target):
        return "async"
    if inspect.isgeneratorfunction(target):
        return "generator"
    return "function"


# -- the wrapper objects -----------------------------------------------------------------------------


class TracedBoundFunction(wrapt.BoundFunctionWrapper):  # type: ignore[misc,type-arg,unused-ignore]
    """A traced method bound to its instance (or class): ``obj.method.replay()`` knows ``obj``."""

    @property
    def bitfab_spec(self) -> FunctionSpec:
        spec: FunctionSpec = self._self_parent._self_spec
        return spec

    def replay(self, *args: Any, **kwargs: Any) -> Any:
        """Replay recorded calls of this method with this instance as the receiver."""
        return self.bitfab_spec.client.replay(self, *args, **kwargs)

    async def areplay(self, *args: Any, **kwargs: Any) -> Any:
        """The async form of :meth:`replay`."""
        return await self.bitfab_spec.client.areplay(self, *args, **kwargs)


class TracedFunction(wrapt.FunctionWrapper, Generic[P, R]):  # type: ignore[misc,type-arg,unused-ignore]
    """A function decorated with ``@bitfab.trace``; call it as before, or ``.replay()`` it."""

    __bound_function_wrapper__ = TracedBoundFunction

    def __init__(self, wrapped: Callable[P, R], spec: FunctionSpec) -> None:
        super().__init__(wrapped, _PATHS[spec.kind](spec))
        self._self_spec = spec
        self._self_direct = self._self_binding == "function"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        # Plain functions skip wrapt's generic dispatch (and its failing __self__ lookup):
        # this is the hot path of most traced calls.
        if self._self_direct:
            wrapper: Callable[..., R] = self._self_wrapper
            return wrapper(self.__wrapped__, None, args, kwargs)
        result: R = super().__call__(*args, **kwargs)
        return result

    @property
    def bitfab_spec(self) -> FunctionSpec:
        spec: FunctionSpec = self._self_spec
        return spec

    def replay(self, *args: Any, **kwargs: Any) -> Any:
        """Replay recorded calls of this function through its current code (see ``bitfab.replay``)."""
        return self._self_spec.client.replay(self, *args, **kwargs)

    async def areplay(self, *args: Any, **kwargs: Any) -> Any:
        """The async form of :meth:`replay`, for use inside a running event loop."""
        return await self._self_spec.client.areplay(self, *args, **kwargs)
