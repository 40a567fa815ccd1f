"""The decorator itself: every way a function can be bound, what it keeps of the function (C11),
and the mistakes it refuses at decoration time."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from tracing_helpers import data, flushed

from bitfab import Bitfab, ConfigError, TracedFunction
from bitfab.testing import MemorySink

# -- binding cases: each defines a traced callable under key "k", calls it, returns the result ----


def plain_function(bf: Bitfab) -> Any:
    @bf.trace(key="k")
    def add(a: int, b: int) -> int:
        return a + b

    return add(1, 2)


def nested_function(bf: Bitfab) -> Any:
    def make(factor: int) -> Callable[[int], int]:
        @bf.trace(key="k")
        def scale(x: int) -> int:
            return x * factor

        return scale

    return make(3)(2)


def coroutine_function(bf: Bitfab) -> Any:
    @bf.trace(key="k")
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    return asyncio.run(fetch(1))


def generator_function(bf: Bitfab) -> Any:
    @bf.trace(key="k")
    def count(n: int) -> Iterator[int]:
        yield from range(n)

    return list(count(3))


def async_generator_function(bf: Bitfab) -> Any:
    @bf.trace(key="k")
    async def count(n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    async def collect() -> list[int]:
        return [item async for item in count(3)]

    return asyncio.run(collect())


class Holder:
    """A class with every kind of traced method, each under its own key."""

    def __init__(self, base: int) -> None:
        self.base = base

    def method(self, x: int) -> int:
        return self.base + x

    @classmethod
    def class_method(cls, x: int) -> str:
        return f"{cls.__name__}:{x}"

    @staticmethod
    def static_method(x: int) -> int:
        return x * 2


def _holder(bf: Bitfab, kind: str, above: bool) -> type:
    """A fresh subclass of Holder whose ``kind`` method is traced (decorator above or below)."""
    body = Holder.__dict__[kind]
    if kind == "method":
        traced: Any = bf.trace(key="k")(body)
    elif above:
        traced = bf.trace(key="k")(body)  # @bitfab.trace above @classmethod / @staticmethod
    else:
        traced = type(body)(bf.trace(key="k")(body.__func__))
    return type("Sub", (Holder,), {kind: traced})


def instance_method(bf: Bitfab) -> Any:
    return _holder(bf, "method", True)(10).method(1)


def method_called_on_class(bf: Bitfab) -> Any:
    cls = _holder(bf, "method", True)
    return cls.method(cls(10), 1)


def classmethod_decorator_above(bf: Bitfab) -> Any:
    return _holder(bf, "class_method", True).class_method(1)


def classmethod_decorator_below(bf: Bitfab) -> Any:
    return _holder(bf, "class_method", False).class_method(1)


def classmethod_called_on_instance(bf: Bitfab) -> Any:
    return _holder(bf, "class_method", True)(10).class_method(1)


def staticmethod_decorator_above(bf: Bitfab) -> Any:
    return _holder(bf, "static_method", True).static_method(1)


def staticmethod_decorator_below(bf: Bitfab) -> Any:
    return _holder(bf, "static_method", False)(10).static_method(1)


def partial_object(bf: Bitfab) -> Any:
    def power(base: int, exp: int) -> int:
        return base**exp

    return bf.trace(key="k")(functools.partial(power, 2))(5)


def c_builtin(bf: Bitfab) -> Any:
    return bf.trace(key="k")(len)([1, 2, 3])


class Multiplier:
    """A callable object."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    def __call__(self, x: int) -> int:
        return self.factor * x


def callable_object(bf: Bitfab) -> Any:
    return bf.trace(key="k")(Multiplier(4))(2)


BINDINGS = [
    (plain_function, 3, [1, 2], 3, "add"),
    (nested_function, 6, [2], 6, "scale"),
    (coroutine_function, 2, [1], 2, "fetch"),
    (generator_function, [0, 1, 2], [3], [0, 1, 2], "count"),
    (async_generator_function, [0, 1, 2], [3], [0, 1, 2], "count"),
    (instance_method, 11, [1], 11, "method"),
    (method_called_on_class, 11, [1], 11, "method"),
    (classmethod_decorator_above, "Sub:1", [1], "Sub:1", "class_method"),
    (classmethod_decorator_below, "Sub:1", [1], "Sub:1", "class_method"),
    (classmethod_called_on_instance, "Sub:1", [1], "Sub:1", "class_method"),
    (staticmethod_decorator_above, 2, [1], 2, "static_method"),
    (staticmethod_decorator_below, 2, [1], 2, "static_method"),
    (partial_object, 32, [5], 32, "partial"),
    (c_builtin, 3, [[1, 2, 3]], 3, "len"),
    (callable_object, 8, [2], 8, "Multiplier"),
]


@pytest.mark.parametrize(
    ("case", "result", "recorded_input", "recorded_output", "function_name"),
    BINDINGS,
    ids=[case[0].__name__ for case in BINDINGS],
)
def test_every_binding_records_one_span_without_self_or_cls(
    bf: Bitfab,
    sink: MemorySink,
    case: Callable[[Bitfab], Any],
    result: Any,
    recorded_input: list[Any],
    recorded_output: Any,
    function_name: str,
) -> None:
    """Each way of binding a callable returns its usual result and records its arguments only."""
    assert case(bf) == result
    assert [data(record) for record in flushed(bf, sink)] == [
        {
            "name": function_name,
            "type": "function",
            "function_name": function_name,
            "input": recorded_input,
            "output": recorded_output,
            "replayable": True,
        }
    ]


# -- introspection (C11) -------------------------------------------------------------------------


def sync_fn(a: int, *, b: str = "x") -> str:
    """Sync doc."""
    return f"{a}{b}"


async def async_fn(a: int) -> int:
    """Async doc."""
    return a


def gen_fn(n: int) -> Iterator[int]:
    """Generator doc."""
    yield n


async def agen_fn(n: int) -> AsyncIterator[int]:
    """Async generator doc."""
    yield n


def _introspect(obj: Any) -> dict[str, Any]:
    return {
        "signature": str(inspect.signature(obj)),
        "name": obj.__name__,
        "qualname": obj.__qualname__,
        "doc": obj.__doc__,
        "module": obj.__module__,
        "iscoroutinefunction": inspect.iscoroutinefunction(obj),
        "isgeneratorfunction": inspect.isgeneratorfunction(obj),
        "isasyncgenfunction": inspect.isasyncgenfunction(obj),
    }


@pytest.mark.parametrize("func", [sync_fn, async_fn, gen_fn, agen_fn])
def test_functions_keep_signature_names_doc_and_kind(bf: Bitfab, func: Any) -> None:
    """A traced function introspects like the function it wraps, and ``__wrapped__`` is it."""
    traced = bf.trace(key=f"introspect-{func.__name__}")(func)
    assert isinstance(traced, TracedFunction)
    assert traced.__wrapped__ is func
    assert inspect.unwrap(traced) is func
    assert _introspect(traced) == _introspect(func)


class Introspected:
    """Methods of every kind, each an async function, to check the kind survives binding."""

    async def method(self, x: int) -> int:
        """Method doc."""
        return x

    @classmethod
    async def cmethod(cls, x: int) -> int:
        """Classmethod doc."""
        return x

    @staticmethod
    def smethod(x: int) -> Iterator[int]:
        """Staticmethod doc."""
        yield x


def test_methods_keep_signature_names_doc_and_kind_in_both_decorator_orders(bf: Bitfab) -> None:
    """Bound methods, classmethods and staticmethods introspect like the untraced ones."""
    raw = Introspected.__dict__
    traced_cls = type(
        "Introspected",
        (),
        {
            "__module__": __name__,
            "__qualname__": "Introspected",
            "method": bf.trace(key="intro-m")(raw["method"]),
            "cmethod": bf.trace(key="intro-cm")(raw["cmethod"]),
            "smethod": bf.trace(key="intro-sm")(raw["smethod"]),
        },
    )
    below_cls = type(
        "Introspected",
        (),
        {
            "__module__": __name__,
            "__qualname__": "Introspected",
            "cmethod": classmethod(bf.trace(key="intro-cm2")(raw["cmethod"].__func__)),
            "smethod": staticmethod(bf.trace(key="intro-sm2")(raw["smethod"].__func__)),
        },
    )
    plain, above, below = Introspected(), traced_cls(), below_cls()
    expected = [
        _introspect(plain.method),
        _introspect(Introspected.method),
        _introspect(Introspected.cmethod),
        _introspect(plain.cmethod),
        _introspect(Introspected.smethod),
        _introspect(plain.smethod),
    ]
    assert [
        _introspect(above.method),
        _introspect(traced_cls.method),
        _introspect(traced_cls.cmethod),
        _introspect(above.cmethod),
        _introspect(traced_cls.smethod),
        _introspect(above.smethod),
    ] == expected
    assert [
        _introspect(below_cls.cmethod),
        _introspect(below.cmethod),
        _introspect(below_cls.smethod),
        _introspect(below.smethod),
    ] == [expected[2], expected[3], expected[4], expected[5]]


def test_partial_builtin_and_callable_object_keep_their_introspection(bf: Bitfab) -> None:
    """``functools.partial``, ``len`` and a callable object keep signature, doc and names."""
    part = functools.partial(sync_fn, 1)
    mult = Multiplier(2)
    traced_part = bf.trace(key="intro-partial")(part)
    traced_len = bf.trace(key="intro-len")(len)
    traced_mult = bf.trace(key="intro-mult")(mult)
    assert [
        (str(inspect.signature(traced_part)), traced_part.__doc__, traced_part.__wrapped__),
        (str(inspect.signature(traced_len)), traced_len.__doc__, traced_len.__wrapped__),
        (str(inspect.signature(traced_mult)), traced_mult.__doc__, traced_mult.__wrapped__),
        (traced_len.__name__, traced_len.__qualname__, traced_len.__module__),
    ] == [
        (str(inspect.signature(part)), part.__doc__, part),
        (str(inspect.signature(len)), len.__doc__, len),
        (str(inspect.signature(mult)), mult.__doc__, mult),
        ("len", "len", "builtins"),
    ]


# -- refused at decoration time ------------------------------------------------------------------


def test_trace_without_a_key_is_a_config_error_that_says_how_to_fix_it(bf: Bitfab) -> None:
    """``@bitfab.trace`` used bare raises ConfigError naming the ``key=`` it needs."""
    with pytest.raises(ConfigError, match=r'@bitfab\.trace\(key="\.\.\."\)'):

        @bf.trace  # type: ignore[arg-type]
        def f() -> None: ...


@pytest.mark.parametrize("how", ["no arguments", "key=None"])
def test_trace_called_without_a_key_is_a_config_error(bf: Bitfab, how: str) -> None:
    """``@bitfab.trace()`` or ``key=None`` raises ConfigError (not a bare TypeError) naming ``key``."""
    with pytest.raises(ConfigError, match="key"):
        if how == "no arguments":
            bf.trace()(sync_fn)  # type: ignore[call-arg]
        else:
            bf.trace(key=None)(sync_fn)  # type: ignore[arg-type]


@pytest.mark.parametrize("key", ["", "   ", 3])
def test_empty_or_non_string_key_is_a_config_error(bf: Bitfab, key: Any) -> None:
    """A key must be a non-empty string."""
    with pytest.raises(ConfigError, match="non-empty string key"):
        bf.trace(key=key)(sync_fn)


def test_unknown_span_type_is_a_config_error_listing_the_valid_ones(bf: Bitfab) -> None:
    """``span_type`` outside the protocol's list is refused with the list."""
    with pytest.raises(ConfigError) as caught:
        bf.trace(key="bad-type", span_type="tool")(sync_fn)
    assert str(caught.value) == (
        "span_type must be one of ['agent', 'custom', 'function', 'guardrail', 'handoff', "
        "'llm'], not 'tool'"
    )


def test_property_object_is_refused_with_the_right_order(bf: Bitfab) -> None:
    """``@bitfab.trace`` above ``@property`` raises ConfigError telling to put it under."""
    with pytest.raises(ConfigError, match="under @property"):
        bf.trace(key="prop")(property(lambda self: 1))


def test_property_getter_can_be_traced(bf: Bitfab, sink: MemorySink) -> None:
    """``@bitfab.trace`` under ``@property`` (the order its error asks for) leaves ``self`` out."""

    class Box:
        @property
        @bf.trace(key="getter")
        def size(self) -> int:
            return 7

    assert Box().size == 7
    assert [data(record) for record in flushed(bf, sink)] == [
        {
            "name": "size",
            "type": "function",
            "function_name": "size",
            "input": [],
            "output": 7,
            "replayable": True,
        }
    ]


def test_class_is_refused(bf: Bitfab) -> None:
    """Decorating a class raises ConfigError."""
    with pytest.raises(ConfigError, match="not classes"):
        bf.trace(key="cls")(Holder)


def test_non_callable_is_refused(bf: Bitfab) -> None:
    """Decorating something that cannot be called raises ConfigError naming its type."""
    with pytest.raises(ConfigError, match="needs a callable, not int"):
        bf.trace(key="num")(3)  # type: ignore[arg-type]


def test_tracing_twice_is_refused(bf: Bitfab) -> None:
    """A traced function cannot be traced again (it would record every call twice)."""
    traced = bf.trace(key="once")(sync_fn)
    with pytest.raises(ConfigError, match="already traced"):
        bf.trace(key="twice")(traced)


@pytest.mark.parametrize(
    ("redact", "message"),
    [("ssn", "not a string"), (["ssn", 3], "must be strings")],
)
def test_bad_redact_option_is_a_config_error(bf: Bitfab, redact: Any, message: str) -> None:
    """``redact=`` takes names or a callable; a bare string or non-string names are refused."""
    with pytest.raises(ConfigError, match=message):
        bf.trace(key="redact-opt", redact=redact)(sync_fn)
