"""The :class:`Bitfab` instance: configuration, the registry and the exporter of one recorder.

``bitfab.trace``, ``bitfab.configure``, ``bitfab.flush``... are bound methods of one default
instance. Tests and multi-tenant apps build their own; instances that write to the same place
share one exporter (one queue, one worker thread) per process.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any, ParamSpec, TypeVar, overload

from bitfab.codec import GLOBAL_TYPES, Limits, Redactor
from bitfab.config import Config, resolve_config
from bitfab.exceptions import ConfigError
from bitfab.export.exporter import BatchExporter, ExportStats
from bitfab.export.sinks import Sink, StoreSink
from bitfab.tracing import propagation
from bitfab.tracing.context import active_span, replay_context
from bitfab.tracing.decorator import FunctionSpec, TracedFunction, kind_of
from bitfab.tracing.registry import FunctionInfo, Registry
from bitfab.tracing.span import NOOP_SPAN, NoopSpan, Span

__all__ = ["Bitfab"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T", bound=type)

_random_bits = random.getrandbits
_time_ns = time.time_ns
_shared_lock = threading.Lock()
_shared: dict[tuple[str, ...], BatchExporter] = {}


class _Ids:
    """Span and trace ids: 48 bits of the process's start time in ms, 40 random bits, then a
    40-bit counter, written as UUIDv7 strings by ``format_id``.

    Ids that grow keep the store's B-tree inserts at the end of its indexes (several times
    faster than random UUID4s once the store is large), and the next id is one C call: each
    instance holds the counter's ``__next__`` itself. A forked child starts a counter of its
    own and hands it to every instance, so parent and child never mint the same id.
    """

    def __init__(self) -> None:
        self.users: weakref.WeakSet[Bitfab] = weakref.WeakSet()
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        prefix = (_time_ns() // 1_000_000) << 80 | _random_bits(40) << 40
        self.next = itertools.count(prefix).__next__
        for user in list(self.users):
            user._new_id = self.next

    def attach(self, user: Bitfab) -> Callable[[], int]:
        self.users.add(user)
        return self.next


_ids = _Ids()


class Runtime:
    """Settings the hot path reads, fixed until the next ``configure()``."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.limits = Limits(max_field_bytes=config.max_field_bytes)
        self.max_field_bytes = config.max_field_bytes
        self.max_span_bytes = config.max_span_bytes
        self._redactors: dict[tuple[str, ...], Redactor] = {}

    def redactor(self, extra: tuple[str, ...]) -> Redactor:
        redactor = self._redactors.get(extra)
        if redactor is None:
            redactor = Redactor((*self.config.redact, *extra))
            self._redactors[extra] = redactor
        return redactor


class Bitfab:
    """One recorder: where spans go, how they are captured, which functions are traced.

    Example::

        bf = bitfab.Bitfab(db="/tmp/app.db")

        @bf.trace(key="triage")
        def triage(ticket): ...

    Args:
        sink: write records to this object instead of the configured store (tests use
            :class:`bitfab.testing.MemorySink`).
        id_generator: returns 128-bit ints for span and trace ids (tests pass a counter).
        clock: returns wall-clock nanoseconds (tests pass a fake clock).
        **settings: any :class:`~bitfab.config.Config` field, e.g. ``db``, ``enabled``; with
            ``url`` and ``api_key`` spans go to a bitfab server and replay runs against it.
    """

    def __init__(
        self,
        *,
        sink: Sink | None = None,
        id_generator: Callable[[], int] | None = None,
        clock: Callable[[], int] | None = None,
        **settings: Any,
    ) -> None:
        self._settings: dict[str, Any] = {}
        resolve_config(settings, environ={})  # fail fast on bad values given in code
        self._settings.update(settings)
        self._sink = sink
        self._new_id: Callable[[], int] = id_generator or _ids.attach(self)
        self._clock: Callable[[], int] = clock or time.time_ns
        self.registry = Registry()
        self._config: Config | None = None
        self._runtime: Runtime | None = None
        self._exporter: BatchExporter | None = None
        self._active = True
        self._start_lock = threading.RLock()

    # -- configuration ----------------------------------------------------------------------------

    @property
    def config(self) -> Config:
        """The resolved settings (code, then environment, then defaults)."""
        config = self._config
        if config is None:
            with self._start_lock:
                if self._config is None:
                    self._config = resolve_config(self._settings)
                config = self._config
        return config

    def configure(self, *, sink: Sink | None = None, **settings: Any) -> None:
        """Change settings; they apply from the next traced call on.

        Example: ``bitfab.configure(db="/var/lib/app/bitfab.db", max_queue_size=100_000)``.
        A bad value raises :class:`~bitfab.exceptions.ConfigError`; bad environment variables
        only log a warning and keep the default.
        """
        resolve_config(settings, environ={})
        with self._start_lock:
            self._settings.update(settings)
            if sink is not None:
                self._sink = sink
            old = self._exporter
            self._config = None
            self._runtime = None
            self._exporter = None
            self._active = True
        if old is not None:
            old.flush(timeout=self.config.shutdown_timeout)

    def _use_sink(self, sink: Sink | None) -> Sink | None:
        """Send records to ``sink`` (``None``: back to the configured store); returns the old one."""
        with self._start_lock:
            old_sink, old_exporter = self._sink, self._exporter
            self._sink = sink
            self._config = None
            self._runtime = None
            self._exporter = None
            self._active = True
        if old_exporter is not None:
            old_exporter.flush(timeout=self.config.shutdown_timeout)
        return old_sink

    def _redactor_for(self, extra: tuple[str, ...]) -> Redactor:
        runtime = self._runtime or Runtime(self.config)
        return runtime.redactor(extra)

    @property
    def _limits(self) -> Limits:
        runtime = self._runtime
        return (
            runtime.limits
            if runtime is not None
            else Limits(max_field_bytes=self.config.max_field_bytes)
        )

    def _start(self) -> bool:
        """Resolve settings and attach an exporter on the first traced call; False when disabled."""
        with self._start_lock:
            if self._runtime is not None:
                return True
            config = self.config
            if not config.enabled:
                self._active = False
                return False
            if config.propagate_threads:
                propagation.install()
            self._exporter = self._shared_exporter(config)
            self._runtime = Runtime(config)
            return True

    def _shared_exporter(self, config: Config) -> BatchExporter:
        if self._sink is not None:
            share_key: tuple[str, ...] = ("sink", str(id(self._sink)))
        elif config.url:
            # One exporter (and one HTTP client) per server and key in this process.
            key_hash = hashlib.sha256((config.api_key or "").encode()).hexdigest()[:16]
            share_key = ("http", config.url, key_hash)
        else:
            db = config.db_path()
            # A path is made absolute (one exporter per file, whatever the cwd); a URL
            # (sqlite:///..., postgresql://...) is used as it is.
            share_key = ("store", db if "://" in db else os.path.abspath(db))
        with _shared_lock:
            exporter = _shared.get(share_key)
            if exporter is None or exporter._stopping:
                sink: Sink
                if self._sink is not None:
                    sink = self._sink
                elif share_key[0] == "http":
                    from bitfab.export.http import HttpSink

                    assert config.url is not None
                    sink = HttpSink(
                        config.url,
                        config.api_key,
                        timeout=config.export_timeout,
                        allow_insecure_http=config.allow_insecure_http,
                    )
                else:
                    sink = StoreSink(share_key[1], timeout=config.export_timeout)
                exporter = BatchExporter(
                    sink,
                    max_queue_size=config.max_queue_size,
                    max_batch_size=config.max_batch_size,
                    schedule_delay=config.schedule_delay,
                    shutdown_timeout=config.shutdown_timeout,
                )
                _shared[share_key] = exporter
            return exporter

    def _emit(self, span: Span) -> None:
        exporter = self._exporter
        if exporter is not None:
            exporter.emit(span)

    # -- recording --------------------------------------------------------------------------------

    def trace(
        self,
        key: str | None = None,
        *,
        name: str | None = None,
        span_type: str = "function",
        mock_on_replay: bool = False,
        capture_input: bool = True,
        capture_output: bool = True,
        redact: Iterable[str] | Callable[[str, Any], Any] | None = None,
    ) -> Callable[[Callable[P, R]], TracedFunction[P, R]]:
        """Record every call of the decorated function as a span.

        Example::

            @bitfab.trace(key="triage")
            def triage(ticket: Ticket) -> Verdict: ...

        Args:
            key: stable name of the function (survives renames); one function per key.
            name: span name, default the function's ``__name__``.
            span_type: ``function``, ``llm``, ``agent``, ``guardrail``, ``handoff`` or ``custom``.
            mock_on_replay: during a replay, serve this call's recorded output instead of running it.
            capture_input / capture_output: record the arguments / return value.
            redact: extra argument or key names to redact, or ``hook(field, value) -> value``
                applied to the readable input and output (if it raises, the content is dropped).
        """
        if key is None:
            raise ConfigError('bitfab.trace needs a key: use @bitfab.trace(key="...")')
        if callable(key) and not isinstance(key, str):
            raise ConfigError(
                'use @bitfab.trace(key="...") with a key: bitfab.trace needs a stable name'
            )

        def decorate(func: Callable[P, R]) -> TracedFunction[P, R]:
            if isinstance(func, property):
                raise ConfigError("put @bitfab.trace under @property, on the getter function")
            if inspect.isclass(func):
                raise ConfigError("@bitfab.trace decorates functions and methods, not classes")
            target: object = func
            if not callable(target) and not isinstance(target, (classmethod, staticmethod)):
                raise ConfigError(f"@bitfab.trace needs a callable, not {type(target).__name__}")
            if isinstance(func, TracedFunction):
                raise ConfigError(
                    f"{func.__name__} is already traced (key {func.bitfab_spec.key!r})"
                )
            spec = FunctionSpec(
                self,
                func,
                key=key,
                name=name,
                span_type=span_type,
                mock_on_replay=mock_on_replay,
                capture_input=capture_input,
                capture_output=capture_output,
                redact=redact,
                kind=kind_of(func),
            )
            traced: TracedFunction[P, R] = TracedFunction(func, spec)
            self.registry.add(_with_traced(spec.info, traced))
            return traced

        return decorate

    def functions(self) -> list[FunctionInfo]:
        """Every traced function of this instance: key, name, location, signature, options."""
        return self.registry.all()

    def current_span(self) -> Span | NoopSpan:
        """The span of the traced call running here, or a no-op span outside one."""
        span = active_span()
        return NOOP_SPAN if span is None else span

    def is_replaying(self) -> bool:
        """True while running under ``replay()``: lets app code skip side effects."""
        return replay_context() is not None

    @overload
    def register_type(self, cls: T) -> T: ...
    @overload
    def register_type(
        self, cls: None = None, *, aliases: Iterable[str] = ()
    ) -> Callable[[T], T]: ...

    def register_type(
        self, cls: T | None = None, *, aliases: Iterable[str] = ()
    ) -> T | Callable[[T], T]:
        """Allow replay to rebuild ``cls`` (dataclass, pydantic model, enum, namedtuple).

        Classes named in a traced function's annotations are allowed already. ``aliases`` are
        old ``"module:QualName"`` names of a renamed class. Usable as a class decorator.
        """

        def add(target: T) -> T:
            GLOBAL_TYPES.register(target, aliases=aliases)
            return target

        return add if cls is None else add(cls)

    # -- export control ---------------------------------------------------------------------------

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait until spans recorded so far are stored; False if ``timeout`` ran out."""
        exporter = self._exporter
        return True if exporter is None else exporter.flush(timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Store what is queued (within ``timeout``) and stop exporting; idempotent."""
        exporter = self._exporter
        return True if exporter is None else exporter.shutdown(timeout)

    def stats(self) -> ExportStats:
        """Counters of the exporter: emitted, exported, queued, in flight, dropped by reason."""
        exporter = self._exporter
        if exporter is None:
            return ExportStats(emitted=0, exported=0, queued=0, in_flight=0)
        return exporter.stats()

    # -- replay (bitfab.replay) -------------------------------------------------------------------

    def replay(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Replay recorded calls of ``fn`` through its current code; see :mod:`bitfab.playback`."""
        from bitfab.playback import run_replay

        return run_replay(self, fn, *args, **kwargs)

    async def areplay(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """The async form of :meth:`replay`, for use inside a running event loop."""
        from bitfab.playback import run_areplay

        return await run_areplay(self, fn, *args, **kwargs)


def _with_traced(info: FunctionInfo, traced: Any) -> FunctionInfo:
    from dataclasses import replace

    return replace(info, traced=traced)
