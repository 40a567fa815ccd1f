"""The replay engine: recorded calls in, a test run out.

1. The backend starts a test run (the newest ``limit`` recorded root calls of the key, or the
   roots of ``trace_ids``).
2. Each item's recorded arguments are rebuilt with the safe codec and bound to the function's
   *current* signature (``adapt_inputs`` may reshape them first).
3. The current code runs under a :class:`~bitfab.playback.context.ReplayContext` held in
   OpenTelemetry context: nested spans carry the test run, marked calls are served from the
   recording. Sync functions run on up to ``max_concurrency`` threads, async ones as tasks under
   a semaphore; results keep the order of the items.
4. Outputs are compared in canonical form, spans are flushed, the run is completed (a failure
   there is a warning, never lost results).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import Token
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry.context import Context

from bitfab.codec import decode_call, decode_value, encode_value
from bitfab.exceptions import ReplayDecodeError, ReplayError
from bitfab.playback.backend import Backend, LocalBackend, StartedRun
from bitfab.playback.compare import Change, diff, parse_ignore, verdict
from bitfab.playback.context import MockNode, ReplayContext, RunPlan
from bitfab.playback.result import ReplayItem, ReplayResult
from bitfab.playback.service import ItemRef
from bitfab.tracing.context import REPLAY_KEY, SPAN_KEY, attach, detach, get_current, set_value
from bitfab.tracing.decorator import FunctionSpec, TracedBoundFunction, TracedFunction
from bitfab.tracing.span import Span, format_id

if TYPE_CHECKING:
    from bitfab.client import Bitfab

__all__ = ["run_areplay", "run_replay"]

logger = logging.getLogger("bitfab")

AdaptInputs = Callable[
    [tuple[Any, ...], dict[str, Any], Mapping[str, Any]], tuple[Sequence[Any], Mapping[str, Any]]
]


@dataclass
class _Target:
    spec: FunctionSpec
    call: Callable[..., Any]
    signature: inspect.Signature | None


@dataclass
class _Prepared:
    """An item ready to run, or the reason it can't (``failure``)."""

    index: int
    ref: ItemRef
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None
    original_output: Any = None
    original_canonical: tuple[Any, Any] | None = None
    original_error: str | None = None
    source: MockNode | None = None
    failure: str | None = None
    readable_input: Any = None


@dataclass
class _Options:
    limit: int | None
    trace_ids: list[str] | None
    max_concurrency: int | None
    mock: str
    mock_overrides: Mapping[str, Any]
    compare: Callable[[Any, Any], bool | float] | None
    ignore: Any
    ignore_paths: list[str]
    adapt_inputs: AdaptInputs | None
    name: str | None
    on_progress: Callable[[int, int, ReplayItem], None] | None
    dry_run: bool
    min_score: float


def _options(
    limit: int | None = 5,
    trace_ids: Iterable[str] | None = None,
    max_concurrency: int | None = 10,
    *,
    mock: str = "marked",
    mock_overrides: Mapping[str, Any] | None = None,
    compare: Callable[[Any, Any], bool | float] | None = None,
    ignore: Iterable[str] = (),
    adapt_inputs: AdaptInputs | None = None,
    name: str | None = None,
    on_progress: Callable[[int, int, ReplayItem], None] | None = None,
    dry_run: bool = False,
    min_score: float = 1.0,
) -> _Options:
    if trace_ids is not None:
        if isinstance(trace_ids, str):
            raise ReplayError("trace_ids takes a list of trace ids, not a single string")
        trace_ids = [str(item) for item in trace_ids]
    elif limit is not None and (
        not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0
    ):
        raise ReplayError(f"limit must be a positive integer, not {limit!r}")
    if max_concurrency is not None and (
        not isinstance(max_concurrency, int)
        or isinstance(max_concurrency, bool)
        or max_concurrency <= 0
    ):
        raise ReplayError(
            f"max_concurrency must be a positive integer or None, not {max_concurrency!r}"
        )
    if mock not in ("marked", "all", "none"):
        raise ReplayError(f"mock must be 'marked', 'all' or 'none', not {mock!r}")
    paths = [ignore] if isinstance(ignore, str) else list(ignore)
    try:
        parsed = parse_ignore(paths)
    except ValueError as exc:
        raise ReplayError(f"invalid ignore path: {exc}") from None
    return _Options(
        limit=limit,
        trace_ids=trace_ids,
        max_concurrency=max_concurrency,
        mock=mock,
        mock_overrides=dict(mock_overrides or {}),
        compare=compare,
        ignore=parsed,
        ignore_paths=paths,
        adapt_inputs=adapt_inputs,
        name=name,
        on_progress=on_progress,
        dry_run=dry_run,
        min_score=min_score,
    )


# -- target -------------------------------------------------------------------------------------


def _looks_like_method(spec: FunctionSpec) -> bool:
    qualname = getattr(spec.target, "__qualname__", "")
    parts = qualname.split(".")
    return (
        len(parts) > 1
        and parts[-2] != "<locals>"
        and bool(spec.param_names)
        and spec.param_names[0] in ("self", "cls")
    )


def _signature(spec: FunctionSpec, drop_first: bool) -> inspect.Signature | None:
    try:
        signature = inspect.signature(spec.target)
    except (TypeError, ValueError):
        return None
    if drop_first:
        params = list(signature.parameters.values())[1:]
        signature = signature.replace(parameters=params)
    return signature


def _resolve(client: Bitfab, fn: Any, receiver: Any) -> _Target:
    if isinstance(fn, str):
        fn = client.registry.get(fn).traced
    if receiver is not None:
        if not isinstance(fn, TracedFunction):
            raise ReplayError(
                "receiver= goes with an unbound traced method (Class.method or its key)"
            )
        fn = fn.__get__(receiver, type(receiver))
    if isinstance(fn, TracedBoundFunction):
        spec = fn.bitfab_spec
        binding = fn._self_binding
        if binding in ("function", "callable", "instancemethod") and fn._self_instance is None:
            raise ReplayError(
                f"{spec.info.qualname} is an instance method: replay it on an instance, "
                f"obj.{spec.function_name}.replay(...), or pass receiver=obj",
                key=spec.key,
            )
        drop_first = binding in ("function", "callable", "instancemethod", "classmethod")
        return _Target(spec, fn, _signature(spec, drop_first))
    if isinstance(fn, TracedFunction):
        spec = fn.bitfab_spec
        if _looks_like_method(spec):
            raise ReplayError(
                f"{spec.info.qualname} is a method: replay it on an instance, "
                f"obj.{spec.function_name}.replay(...), or pass receiver=obj",
                key=spec.key,
            )
        return _Target(spec, fn, _signature(spec, False))
    raise ReplayError(
        f"{fn!r} is not traced: decorate it with @bitfab.trace(key=...) to record and replay it"
    )


# -- preparing items ----------------------------------------------------------------------------


def _span_data(record: Mapping[str, Any]) -> Mapping[str, Any]:
    raw = record.get("rawSpan")
    data = raw.get("span_data") if isinstance(raw, Mapping) else None
    if not isinstance(data, Mapping):
        raise ReplayDecodeError("the recorded span has no span_data", path="$.rawSpan")
    return data


def _binding_problem(
    signature: inspect.Signature, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str | None:
    try:
        signature.bind(*args, **kwargs)
        return None
    except TypeError as exc:
        detail = str(exc)
    params = signature.parameters
    accepts_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    accepts_args = any(p.kind is p.VAR_POSITIONAL for p in params.values())
    gone = [key for key in kwargs if key not in params and not accepts_kwargs]
    if gone:
        names = ", ".join(repr(key) for key in gone)
        return f"recorded argument {names} is not a parameter of {name}{signature} any more (removed or renamed?)"
    positional = [
        p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(args) > len(positional) and not accepts_args:
        return f"{len(args)} positional arguments were recorded but {name}{signature} takes {len(positional)}"
    bound = signature.bind_partial(
        *args[: len(positional)], **{k: v for k, v in kwargs.items() if k in params}
    )
    missing = [
        p.name
        for p in params.values()
        if p.name not in bound.arguments
        and p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if missing:
        names = ", ".join(repr(key) for key in missing)
        return f"required parameter {names} of {name}{signature} has no recorded value (added without a default?)"
    return f"the recorded arguments don't fit {name}{signature}: {detail}"


def _prepare(
    target: _Target, backend: Backend, index: int, ref: ItemRef, options: _Options
) -> _Prepared:
    item = _Prepared(index=index, ref=ref)
    spec = target.spec
    try:
        record = backend.fetch_span(ref.original_span_id)
        if record is None:
            item.failure = f"the recorded span {ref.original_span_id} was not found"
            return item
        data = _span_data(record)
        item.readable_input = data.get("input")
        item.original_error = data.get("error")
        if "output" in data and item.original_error is None:
            item.original_canonical = (data.get("output"), data.get("output_meta"))
            try:
                item.original_output = decode_value(
                    data.get("output"), data.get("output_meta"), types=spec.allowed_types()
                )
            except ReplayDecodeError:
                item.original_output = data.get("output")
        if data.get("replayable") is False:
            reasons = data.get("not_replayable") or ["the recording was flagged not replayable"]
            item.failure = "not replayable: " + "; ".join(str(reason) for reason in reasons)
            return item
        if "input" not in data:
            item.failure = "not replayable: the recording has no input"
            return item
        args, kwargs = decode_call(
            data.get("input"), data.get("input_meta"), types=spec.allowed_types()
        )
        if options.adapt_inputs is not None:
            info = {
                "index": index,
                "trace_id": ref.original_trace_id,
                "span_id": ref.original_span_id,
                "key": spec.key,
            }
            try:
                adapted = options.adapt_inputs(args, kwargs, info)
            except Exception as exc:
                item.failure = f"adapt_inputs raised {type(exc).__name__}: {exc}"
                return item
            try:
                new_args, new_kwargs = adapted
                args, kwargs = tuple(new_args), dict(new_kwargs)
            except (TypeError, ValueError):
                item.failure = f"adapt_inputs must return (args, kwargs), not {adapted!r:.200}"
                return item
        if target.signature is not None:
            problem = _binding_problem(target.signature, spec.function_name, args, kwargs)
            if problem is not None:
                item.failure = problem
                return item
        item.args, item.kwargs = args, kwargs
        if not options.dry_run:
            tree = backend.span_tree(ref.original_span_id)
            item.source = MockNode.from_tree(tree) if tree is not None else None
    except ReplayDecodeError as exc:
        text = str(exc)
        item.failure = text if text.startswith("not replayable") else f"not replayable: {text}"
    return item


# -- running items ------------------------------------------------------------------------------


def _tokens_of(spans: Sequence[Span]) -> tuple[dict[str, int], str | None]:
    """Tokens the replayed call spent, and its model. A mocked call spent nothing: its recorded
    usage (set on its span, or read off the recorded response) is not counted."""
    total_in = total_out = cached = 0
    model: str | None = None
    for span in spans:
        usage = span.usage
        if not usage:
            continue
        if model is None and usage.get("model"):
            model = str(usage["model"])
        if span.mock_source is not None:
            continue
        total_in += int(usage.get("inputTokens") or 0)
        total_out += int(usage.get("outputTokens") or 0)
        cached += int(usage.get("cachedInputTokens") or 0)
    return {
        "input": total_in,
        "output": total_out,
        "cached": cached,
        "total": total_in + total_out,
    }, model


def _error_text(exc: BaseException) -> str:
    try:
        message = str(exc)
    except Exception:
        message = "<unprintable>"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _context_for(plan: RunPlan, item: _Prepared) -> ReplayContext:
    return ReplayContext(
        plan,
        source_span_id=item.ref.original_span_id,
        source_trace_id=item.ref.original_trace_id,
        source=item.source,
    )


def _enter(ctx: ReplayContext) -> Token[Context]:
    # A replay starts a trace of its own even when called inside a traced function.
    return attach(set_value(SPAN_KEY, None, set_value(REPLAY_KEY, ctx, get_current())))


def _run_sync(
    target: _Target, plan: RunPlan, item: _Prepared
) -> tuple[ReplayContext, Any, BaseException | None, float]:
    ctx = _context_for(plan, item)
    token = _enter(ctx)
    error: BaseException | None = None
    result: Any = None
    started = time.perf_counter()
    try:
        result = target.call(*item.args, **(item.kwargs or {}))
        if target.spec.kind == "generator":
            result = list(result)
    except Exception as exc:
        error = exc
    finally:
        detach(token)
    return ctx, result, error, (time.perf_counter() - started) * 1000


async def _run_async(
    target: _Target, plan: RunPlan, item: _Prepared
) -> tuple[ReplayContext, Any, BaseException | None, float]:
    ctx = _context_for(plan, item)
    token = _enter(ctx)
    error: BaseException | None = None
    result: Any = None
    started = time.perf_counter()
    try:
        if target.spec.kind == "async_generator":
            result = [value async for value in target.call(*item.args, **(item.kwargs or {}))]
        else:
            result = await target.call(*item.args, **(item.kwargs or {}))
    except Exception as exc:
        error = exc
    finally:
        detach(token)
    return ctx, result, error, (time.perf_counter() - started) * 1000


def _judge(
    target: _Target,
    options: _Options,
    item: _Prepared,
    outcome: tuple[ReplayContext, Any, BaseException | None, float],
) -> ReplayItem:
    ctx, result, error, duration = outcome
    spec = target.spec
    tokens, model = _tokens_of(ctx.spans)
    new_error = _error_text(error) if error is not None else None
    if ctx.failures and new_error is None:
        new_error = f"MockMissingError: {ctx.failures[0]}"
    changes: list[Change] = []
    custom: bool | float | None = None
    if new_error is None and item.original_error is None:
        client = spec.client
        encoded = encode_value(result, limits=client._limits, redactor=spec._redactor())
        original = item.original_canonical or (None, None)
        if options.compare is not None:
            try:
                custom = options.compare(item.original_output, result)
            except Exception as exc:
                new_error = f"compare raised {_error_text(exc)}"
        changes = diff(original, (encoded.value, encoded.meta), ignore=options.ignore)
    item_verdict = verdict(
        original_error=item.original_error,
        new_error=new_error,
        changes=changes,
        custom=custom,
        min_score=options.min_score,
    )
    root = ctx.root
    return ReplayItem(
        index=item.index,
        input={"args": list(item.args), "kwargs": dict(item.kwargs or {})},
        result=None if error is not None else result,
        original_output=item.original_output,
        error=new_error,
        error_type=type(error).__name__
        if error is not None
        else ("MockMissingError" if ctx.failures else None),
        duration_ms=duration,
        tokens=tokens,
        model=model,
        original_duration_ms=item.ref.original_duration_ms,
        original_tokens=dict(item.ref.original_tokens),
        original_model=item.ref.original_model,
        original_error=item.original_error,
        verdict=item_verdict,
        diff=changes,
        score=float(custom) if isinstance(custom, float) else None,
        trace_id=format_id(root.trace_id) if root is not None else None,
        original_trace_id=item.ref.original_trace_id,
        original_span_id=item.ref.original_span_id,
        mocked=list(ctx.mocked),
    )


def _failed_item(item: _Prepared, verdict_name: str = "not_replayable") -> ReplayItem:
    return ReplayItem(
        index=item.index,
        input=item.readable_input,
        result=None,
        original_output=item.original_output,
        error=item.failure,
        error_type="NotReplayable" if verdict_name == "not_replayable" else None,
        duration_ms=None,
        tokens={"input": 0, "output": 0, "cached": 0, "total": 0},
        model=None,
        original_duration_ms=item.ref.original_duration_ms,
        original_tokens=dict(item.ref.original_tokens),
        original_model=item.ref.original_model,
        original_error=item.original_error,
        verdict=verdict_name,
        diff=[],
        score=None,
        trace_id=None,
        original_trace_id=item.ref.original_trace_id,
        original_span_id=item.ref.original_span_id,
        mocked=[],
    )


def _dry_item(item: _Prepared) -> ReplayItem:
    if item.failure is not None:
        return _failed_item(item)
    built = _failed_item(item, "valid")
    built.input = {"args": list(item.args), "kwargs": dict(item.kwargs or {})}
    built.error = None
    return built


# -- the run ------------------------------------------------------------------------------------


def _code_version() -> str | None:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = done.stdout.strip()
    return sha if done.returncode == 0 and sha else None


def _backend_for(client: Bitfab) -> Backend:
    config = client.config
    if config.url:
        from bitfab.playback.remote import RemoteBackend

        return RemoteBackend(
            config.url, config.api_key, allow_insecure_http=config.allow_insecure_http
        )
    return LocalBackend(config.db_path())


def _start(client: Bitfab, target: _Target, options: _Options, backend: Backend) -> StartedRun:
    spec = target.spec
    # Make sure the calls recorded so far are visible to the selection.
    client.flush(timeout=client.config.shutdown_timeout)
    record_options = {
        "limit": options.limit,
        "trace_ids": options.trace_ids,
        "max_concurrency": options.max_concurrency,
        "mock": options.mock,
        "mock_overrides": sorted(options.mock_overrides),
        "ignore": options.ignore_paths,
        "compare": getattr(options.compare, "__qualname__", None) if options.compare else None,
        "adapt_inputs": getattr(options.adapt_inputs, "__qualname__", None)
        if options.adapt_inputs
        else None,
    }
    return backend.start_run(
        spec.key,
        limit=None if options.trace_ids is not None else options.limit,
        trace_ids=options.trace_ids,
        name=options.name,
        options=record_options,
        code_version=_code_version(),
        dry_run=options.dry_run,
    )


def _finish(
    client: Bitfab,
    target: _Target,
    options: _Options,
    backend: Backend,
    started: StartedRun,
    items: list[ReplayItem],
) -> ReplayResult:
    spec = target.spec
    result = ReplayResult(
        key=spec.key,
        items=items,
        test_run_id=started.test_run_id,
        test_run_url=started.test_run_url,
        name=options.name,
        dry_run=options.dry_run,
        unknown_trace_ids=list(started.unknown_trace_ids),
    )
    if not items:
        result.message = f"no recorded calls of {spec.key!r} to replay" + (
            f" (unknown trace ids: {', '.join(started.unknown_trace_ids)})"
            if started.unknown_trace_ids
            else ""
        )
    if options.dry_run or started.test_run_id is None:
        return result
    client.flush(timeout=max(client.config.shutdown_timeout, 5.0))
    try:
        backend.complete_run(
            started.test_run_id,
            items=[item.to_dict() for item in items],
            summary=result.summary.to_dict()
            if hasattr(result.summary, "to_dict")
            else dict(vars(result.summary)),
            status="completed",
        )
    except Exception as exc:
        result.completed = False
        logger.warning(
            "bitfab: could not complete test run %s: %s; the results are still returned",
            started.test_run_id,
            exc,
        )
    return result


def run_replay(
    client: Bitfab,
    fn: Any,
    *args: Any,
    receiver: Any = None,
    backend: Backend | None = None,
    **kwargs: Any,
) -> ReplayResult:
    """``fn.replay(...)``: replay recorded calls of ``fn`` through its current code."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise ReplayError(
            "replay() was called inside a running event loop; use `await fn.areplay(...)` there"
        )
    options = _options(*args, **kwargs)
    target = _resolve(client, fn, receiver)
    client = target.spec.client  # the recorder the function belongs to knows its store
    owned = backend is None
    backend = backend or _backend_for(client)
    started: StartedRun | None = None
    try:
        started = _start(client, target, options, backend)
        prepared = [
            _prepare(target, backend, index, ref, options)
            for index, ref in enumerate(started.items)
        ]
        if options.dry_run:
            return _finish(
                client, target, options, backend, started, [_dry_item(item) for item in prepared]
            )
        plan = RunPlan(
            started.test_run_id or "", mock=options.mock, overrides=options.mock_overrides
        )
        if target.spec.kind in ("async", "async_generator"):
            items = asyncio.run(_run_all_async(target, plan, options, prepared))
        else:
            items = _run_all_threads(target, plan, options, prepared)
        return _finish(client, target, options, backend, started, items)
    except BaseException:
        _mark_interrupted(backend, started)
        raise
    finally:
        if owned:
            backend.close()


def _mark_interrupted(backend: Backend, started: StartedRun | None) -> None:
    """A run that stopped half-way (Ctrl-C, a bug) is stored as interrupted, not left running."""
    if started is None or started.test_run_id is None:
        return
    try:
        backend.interrupt_run(started.test_run_id)
    except Exception:
        logger.warning(
            "bitfab: could not mark test run %s interrupted", started.test_run_id, exc_info=True
        )


def _run_all_threads(
    target: _Target, plan: RunPlan, options: _Options, prepared: list[_Prepared]
) -> list[ReplayItem]:
    results: list[ReplayItem | None] = [None] * len(prepared)
    runnable = [item for item in prepared if item.failure is None]
    for item in prepared:
        if item.failure is not None:
            results[item.index] = _failed_item(item)
    done = len(prepared) - len(runnable)
    total = len(prepared)
    if runnable:
        workers = (
            len(runnable)
            if options.max_concurrency is None
            else min(options.max_concurrency, len(runnable))
        )
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bitfab-replay") as pool:
            futures = {pool.submit(_run_sync, target, plan, item): item for item in runnable}
            from concurrent.futures import as_completed

            for future in as_completed(futures):
                item = futures[future]
                judged = _judge(target, options, item, future.result())
                results[item.index] = judged
                done += 1
                _progress(options, done, total, judged)
    return [item for item in results if item is not None]


def _progress(options: _Options, done: int, total: int, item: ReplayItem) -> None:
    if options.on_progress is None:
        return
    try:
        options.on_progress(done, total, item)
    except Exception:
        logger.warning("bitfab: on_progress raised; ignored", exc_info=True)


async def _run_all_async(
    target: _Target, plan: RunPlan, options: _Options, prepared: list[_Prepared]
) -> list[ReplayItem]:
    results: list[ReplayItem | None] = [None] * len(prepared)
    for item in prepared:
        if item.failure is not None:
            results[item.index] = _failed_item(item)
    total = len(prepared)
    done = total - sum(1 for item in prepared if item.failure is None)
    limit = options.max_concurrency or max(1, total)
    semaphore = asyncio.Semaphore(limit)
    is_async = target.spec.kind in ("async", "async_generator")
    loop = asyncio.get_running_loop()
    # Sync functions get threads of their own, as many as max_concurrency allows (the loop's
    # default executor may be smaller).
    pool = (
        None
        if is_async
        else ThreadPoolExecutor(max_workers=limit, thread_name_prefix="bitfab-replay")
    )

    async def one(item: _Prepared) -> None:
        nonlocal done
        async with semaphore:
            if pool is None:
                outcome = await _run_async(target, plan, item)
            else:
                run = contextvars.copy_context().run
                outcome = await loop.run_in_executor(pool, run, _run_sync, target, plan, item)
        judged = _judge(target, options, item, outcome)
        results[item.index] = judged
        done += 1
        _progress(options, done, total, judged)

    try:
        await asyncio.gather(*(one(item) for item in prepared if item.failure is None))
    finally:
        if pool is not None:
            pool.shutdown(wait=False)
    return [item for item in results if item is not None]


async def run_areplay(
    client: Bitfab,
    fn: Any,
    *args: Any,
    receiver: Any = None,
    backend: Backend | None = None,
    **kwargs: Any,
) -> ReplayResult:
    """``await fn.areplay(...)``: the same as :func:`run_replay`, inside a running event loop."""
    options = _options(*args, **kwargs)
    target = _resolve(client, fn, receiver)
    client = target.spec.client
    owned = backend is None
    if backend is None:
        backend = await asyncio.to_thread(_backend_for, client)
    started: StartedRun | None = None
    try:
        started = await asyncio.to_thread(_start, client, target, options, backend)
        prepared = [
            await asyncio.to_thread(_prepare, target, backend, index, ref, options)
            for index, ref in enumerate(started.items)
        ]
        if options.dry_run:
            items = [_dry_item(item) for item in prepared]
        else:
            plan = RunPlan(
                started.test_run_id or "", mock=options.mock, overrides=options.mock_overrides
            )
            items = await _run_all_async(target, plan, options, prepared)
        return await asyncio.to_thread(_finish, client, target, options, backend, started, items)
    except BaseException:
        await asyncio.to_thread(_mark_interrupted, backend, started)
        raise
    finally:
        if owned:
            await asyncio.to_thread(backend.close)
