"""Traced generators and async generators: one span over the whole iteration, however it ends
(C10), with the context restored at every yield and handed across threads and tasks (F6)."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from opentelemetry import context as otel_context
from tracing_helpers import data, flushed, links, uid

from bitfab import Bitfab, NoopSpan
from bitfab.testing import FakeClock, MemorySink, SequentialIds, span_tree


class AppError(Exception):
    """An exception of the application."""


def _gen_data(
    name: str, input_: list[Any], output: list[Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """The expected ``span_data`` of a generator span (no runtime)."""
    recorded: dict[str, Any] = {
        "name": name,
        "type": "function",
        "function_name": name,
        "input": input_,
    }
    if output is not None:
        recorded["output"] = output
    recorded.update(extra)
    recorded.setdefault("replayable", True)
    return recorded


def _leaf(key: str, value: Any, children: list[Any] | None = None) -> dict[str, Any]:
    return {"key": key, "name": key, "input": [value], "output": value, "children": children or []}


@pytest.fixture
def traced(bf: Bitfab) -> dict[str, Any]:
    """A generator ``numbers(n)`` that calls a traced ``step`` per item and one in ``finally``."""

    @bf.trace(key="step")
    def step(i: int) -> int:
        return i

    @bf.trace(key="numbers")
    def numbers(n: int) -> Iterator[int]:
        try:
            for i in range(n):
                yield step(i)
        finally:
            step(-1)
        return "done"

    return {"step": step, "numbers": numbers}


def test_generator_span_covers_the_whole_iteration(
    bf: Bitfab, sink: MemorySink, traced: dict[str, Any]
) -> None:
    """Exhausting a generator ends its span after every item; calls made while it runs are children."""

    def drain(gen: Iterator[int]) -> Iterator[int]:
        result = yield from gen
        assert result == "done"

    assert list(drain(traced["numbers"](3))) == [0, 1, 2]
    records = flushed(bf, sink)
    assert span_tree(records) == [
        {
            "key": "numbers",
            "name": "numbers",
            "input": [3],
            "output": [0, 1, 2],
            "children": [_leaf("step", i) for i in (0, 1, 2, -1)],
        }
    ]
    assert data(records[-1]) == _gen_data(
        "numbers", [3], [0, 1, 2], metadata={"generator_return": "done"}
    )
    spans = [record["rawSpan"] for record in records]
    gen_span = spans[-1]
    assert gen_span["started_at"] < min(s["started_at"] for s in spans[:-1])
    assert gen_span["ended_at"] > max(s["ended_at"] for s in spans[:-1])
    assert [(t["id"], t["expectedSpanCount"]) for t in sink.traces] == [(uid(1), 5)]


def test_break_then_del_closes_the_span_with_the_items_so_far(
    bf: Bitfab, sink: MemorySink, traced: dict[str, Any]
) -> None:
    """Leaving a loop early and dropping the generator ends its span, marked ``closed_early``."""
    gen = traced["numbers"](5)
    for item in gen:
        if item == 1:
            break
    assert [record["traceFunctionKey"] for record in flushed(bf, sink)] == ["step", "step"]
    del gen
    gc.collect()
    records = flushed(bf, sink)
    assert [data(record) for record in records][-1] == _gen_data(
        "numbers", [5], [0, 1], metadata={"closed_early": True}
    )
    assert span_tree(records)[0]["children"] == [_leaf("step", i) for i in (0, 1, -1)]
    assert [t["expectedSpanCount"] for t in sink.traces] == [4]


def test_close_ends_the_span(bf: Bitfab, sink: MemorySink, traced: dict[str, Any]) -> None:
    """``close()`` after one item ends the span; its ``finally`` still runs inside it."""
    gen = traced["numbers"](5)
    assert next(gen) == 0
    gen.close()
    records = flushed(bf, sink)
    assert [data(record) for record in records] == [
        _gen_data("step", [0], 0),
        _gen_data("step", [-1], -1),
        _gen_data("numbers", [5], [0], metadata={"closed_early": True}),
    ]
    assert links(records) == [("step", 2, 1, 1), ("step", 3, 1, 1), ("numbers", 1, None, 1)]


def test_exception_thrown_in_is_recorded_and_reraised(
    bf: Bitfab, sink: MemorySink, traced: dict[str, Any]
) -> None:
    """An exception thrown into the generator ends its span as an error; it is the same object."""
    gen = traced["numbers"](5)
    next(gen)
    error = AppError("thrown in")
    with pytest.raises(AppError) as caught:
        gen.throw(error)
    assert caught.value is error
    recorded = data(flushed(bf, sink)[-1])
    recorded.pop("traceback")
    assert recorded == _gen_data(
        "numbers",
        [5],
        error="thrown in",
        error_source="code",
        error_type="test_tracing_generators.AppError",
    )


def test_exception_handled_inside_and_send_values_pass_through(
    bf: Bitfab, sink: MemorySink
) -> None:
    """A generator that catches a thrown exception goes on; ``send()`` values reach it."""

    @bf.trace(key="echo")
    def echo() -> Iterator[Any]:
        received = yield "ready"
        while received is not None:
            try:
                received = yield received * 2
            except AppError:
                received = yield "recovered"

    gen = echo()
    assert [next(gen), gen.send(2), gen.throw(AppError()), gen.send(5)] == [
        "ready",
        4,
        "recovered",
        10,
    ]
    with pytest.raises(StopIteration):
        gen.send(None)
    assert [data(record) for record in flushed(bf, sink)] == [
        _gen_data("echo", [], ["ready", 4, "recovered", 10])
    ]


@pytest.mark.parametrize("kind", ["generator", "async_generator"])
def test_output_is_capped_at_max_generator_items(
    make_bitfab: Callable[..., Bitfab], kind: str
) -> None:
    """Only the first ``max_generator_items`` items are recorded, with a problem that says so."""
    sink = MemorySink()
    bf = make_bitfab(
        sink=sink, id_generator=SequentialIds(), clock=FakeClock(), max_generator_items=3
    )
    if kind == "generator":

        @bf.trace(key="many")
        def many(n: int) -> Iterator[int]:
            yield from range(n)

        assert list(many(5)) == [0, 1, 2, 3, 4]
    else:

        @bf.trace(key="many")
        async def amany(n: int) -> AsyncIterator[int]:
            for i in range(n):
                yield i

        async def collect() -> list[int]:
            return [i async for i in amany(5)]

        assert asyncio.run(collect()) == [0, 1, 2, 3, 4]
    name = "many" if kind == "generator" else "amany"
    assert [data(record) for record in flushed(bf, sink)] == [
        _gen_data(
            name,
            [5],
            [0, 1, 2],
            output_problems=["generator output truncated: 2 more items not recorded"],
        )
    ]


def test_no_span_is_current_between_steps(bf: Bitfab, sink: MemorySink) -> None:
    """Inside a step the generator's span is current; between ``next()`` calls it is not."""

    @bf.trace(key="ids")
    def ids() -> Iterator[str | None]:
        for _ in range(3):
            yield bf.current_span().id

    before = otel_context.get_current()
    between = []
    yielded = []
    for span_id in ids():
        yielded.append(span_id)
        between.append((bf.current_span(), otel_context.get_current() is before))
    assert yielded == [uid(1)] * 3
    assert [(type(span), same) for span, same in between] == [(NoopSpan, True)] * 3


def test_calls_between_steps_belong_to_the_consumer(bf: Bitfab, sink: MemorySink) -> None:
    """A traced call made by the consumer between items is the consumer's child, not the generator's."""

    @bf.trace(key="item")
    def item(i: int) -> int:
        return i

    @bf.trace(key="items")
    def items() -> Iterator[int]:
        yield item(1)
        yield item(2)

    @bf.trace(key="between")
    def between(i: int) -> int:
        return i

    @bf.trace(key="consumer")
    def consumer() -> list[int]:
        return [between(i * 10) for i in items()]

    assert consumer() == [10, 20]
    assert span_tree(flushed(bf, sink)) == [
        {
            "key": "consumer",
            "name": "consumer",
            "input": [],
            "output": [10, 20],
            "children": [
                {
                    "key": "items",
                    "name": "items",
                    "input": [],
                    "output": [1, 2],
                    "children": [_leaf("item", 1), _leaf("item", 2)],
                },
                _leaf("between", 10),
                _leaf("between", 20),
            ],
        }
    ]


@pytest.mark.parametrize("kind", ["generator", "async_generator"])
def test_generator_never_iterated_still_ends_its_span_and_trace(
    bf: Bitfab, sink: MemorySink, kind: str
) -> None:
    """A traced generator created and dropped without one ``next()`` still ends, so its trace completes."""
    if kind == "generator":

        @bf.trace(key="lazy")
        def lazy() -> Iterator[int]:
            yield 1

    else:

        @bf.trace(key="lazy")
        async def lazy() -> AsyncIterator[int]:  # type: ignore[misc]
            yield 1

    @bf.trace(key="makes")
    def makes() -> str:
        lazy()  # created and dropped at once
        return "made"

    assert makes() == "made"
    gc.collect()
    records = flushed(bf, sink)
    assert sorted(links(records), key=lambda link: link[1] or 0) == [
        ("makes", 1, None, 1),
        ("lazy", 2, 1, 1),
    ]
    assert [(t["id"], t["expectedSpanCount"]) for t in sink.traces] == [(uid(1), 2)]


def test_yielded_items_are_recorded_as_they_were_yielded(bf: Bitfab, sink: MemorySink) -> None:
    """Items the consumer changes after they were yielded are recorded as yielded (C7 for outputs)."""

    @bf.trace(key="rows")
    def rows() -> Iterator[dict[str, Any]]:
        for n in range(2):
            yield {"n": n}

    for row in rows():
        row["seen"] = True
    assert data(flushed(bf, sink)[0])["output"] == [{"n": 0}, {"n": 1}]


@pytest.mark.timeout(30)
def test_generator_consumed_in_another_thread_keeps_its_creators_parent(
    bf: Bitfab, sink: MemorySink, traced: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Created inside a span in one thread, iterated in another: no context error, parent kept (F6)."""

    @bf.trace(key="producer")
    def producer() -> Iterator[int]:
        return traced["numbers"](2)

    gen = producer()
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(list(gen)))
    with caplog.at_level(logging.WARNING):
        thread.start()
        thread.join(10)
    assert results == [[0, 1]]
    assert caplog.records == []
    assert sorted(links(flushed(bf, sink)), key=lambda link: link[1] or 0) == [
        ("producer", 1, None, 1),
        ("numbers", 2, 1, 1),
        ("step", 3, 2, 1),
        ("step", 4, 2, 1),
        ("step", 5, 2, 1),
    ]
    assert [t["expectedSpanCount"] for t in sink.traces] == [5]


# -- async generators ----------------------------------------------------------------------------


@pytest.fixture
def atraced(bf: Bitfab) -> dict[str, Any]:
    """An async generator ``anumbers(n)`` calling a traced ``step`` per item and in ``finally``."""

    @bf.trace(key="step")
    def step(i: int) -> int:
        return i

    @bf.trace(key="anumbers")
    async def anumbers(n: int) -> AsyncIterator[int]:
        try:
            for i in range(n):
                await asyncio.sleep(0)
                yield step(i)
        finally:
            step(-1)

    return {"step": step, "anumbers": anumbers}


def test_async_generator_span_covers_the_iteration(
    bf: Bitfab, sink: MemorySink, atraced: dict[str, Any]
) -> None:
    """Exhausting an async generator ends its span; no span is current between items."""

    async def main() -> list[Any]:
        seen = []
        async for item in atraced["anumbers"](2):
            seen.append((item, type(bf.current_span())))
        return seen

    assert asyncio.run(main()) == [(0, NoopSpan), (1, NoopSpan)]
    records = flushed(bf, sink)
    assert span_tree(records) == [
        {
            "key": "anumbers",
            "name": "anumbers",
            "input": [2],
            "output": [0, 1],
            "children": [_leaf("step", i) for i in (0, 1, -1)],
        }
    ]
    assert [t["expectedSpanCount"] for t in sink.traces] == [4]


@pytest.mark.parametrize("how", ["aclose", "del_and_gc"])
def test_async_generator_left_early_is_closed(
    bf: Bitfab, sink: MemorySink, atraced: dict[str, Any], how: str
) -> None:
    """Breaking out and then ``aclose()`` or dropping the async generator ends its span."""

    async def main() -> None:
        agen = atraced["anumbers"](5)
        async for item in agen:
            if item == 1:
                break
        if how == "aclose":
            await agen.aclose()
        else:
            del agen
            gc.collect()
            for _ in range(3):
                await asyncio.sleep(0)

    asyncio.run(main())
    records = flushed(bf, sink)
    assert data(records[-1]) == _gen_data("anumbers", [5], [0, 1], metadata={"closed_early": True})
    assert span_tree(records)[0]["children"] == [_leaf("step", i) for i in (0, 1, -1)]


def test_exception_thrown_into_async_generator_is_recorded(
    bf: Bitfab, sink: MemorySink, atraced: dict[str, Any]
) -> None:
    """``athrow()`` ends the span with the error and raises the same object."""
    error = AppError("athrown")

    async def main() -> BaseException:
        agen = atraced["anumbers"](5)
        await agen.__anext__()
        try:
            await agen.athrow(error)
        except AppError as exc:
            return exc
        raise AssertionError("did not raise")

    assert asyncio.run(main()) is error
    recorded = data(flushed(bf, sink)[-1])
    recorded.pop("traceback")
    assert recorded == _gen_data(
        "anumbers",
        [5],
        error="athrown",
        error_source="code",
        error_type="test_tracing_generators.AppError",
    )


def test_async_generator_consumed_in_another_task_keeps_its_creators_parent(
    bf: Bitfab, sink: MemorySink, atraced: dict[str, Any]
) -> None:
    """Created inside a span in one task and iterated in another task, its parent is the creator."""

    @bf.trace(key="aproducer")
    async def aproducer() -> AsyncIterator[int]:
        return atraced["anumbers"](2)

    async def consume(agen: AsyncIterator[int]) -> list[int]:
        return [item async for item in agen]

    async def main() -> list[int]:
        agen = await aproducer()
        return await asyncio.create_task(consume(agen))

    assert asyncio.run(main()) == [0, 1]
    assert sorted(links(flushed(bf, sink)), key=lambda link: link[1] or 0) == [
        ("aproducer", 1, None, 1),
        ("anumbers", 2, 1, 1),
        ("step", 3, 2, 1),
        ("step", 4, 2, 1),
        ("step", 5, 2, 1),
    ]
