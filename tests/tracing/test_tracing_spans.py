"""Spans of ordinary calls: ids and nesting (sync, async, recursion), the input layout, trace
completion records, and calls that raise (C12, F3, F5)."""

from __future__ import annotations

import asyncio
import sys
import threading
import traceback
from typing import Any

import pytest
from opentelemetry import context as otel_context
from tracing_helpers import data, flushed, links, num, uid

import bitfab
from bitfab import Bitfab, NoopSpan
from bitfab.testing import MemorySink, span_tree


def test_nested_calls_link_parent_ids_within_one_trace(bf: Bitfab, sink: MemorySink) -> None:
    """Calls inside a traced call are its children, numbered by ``seq`` in start order, in one trace."""

    @bf.trace(key="leaf")
    def leaf(x: int) -> int:
        return x + 1

    @bf.trace(key="middle")
    def middle(x: int) -> int:
        return leaf(x) * 2

    @bf.trace(key="top")
    def top() -> list[int]:
        return [middle(1), leaf(10)]

    assert top() == [4, 11]
    assert top() == [4, 11]
    records = flushed(bf, sink)
    assert links(records) == [
        ("leaf", 3, 2, 1),
        ("middle", 2, 1, 1),
        ("leaf", 4, 1, 1),
        ("top", 1, None, 1),
        ("leaf", 7, 6, 5),
        ("middle", 6, 5, 5),
        ("leaf", 8, 5, 5),
        ("top", 5, None, 5),
    ]
    assert span_tree(records)[0] == {
        "key": "top",
        "name": "top",
        "input": [],
        "output": [4, 11],
        "children": [
            {
                "key": "middle",
                "name": "middle",
                "input": [1],
                "output": 4,
                "children": [
                    {"key": "leaf", "name": "leaf", "input": [1], "output": 2, "children": []}
                ],
            },
            {"key": "leaf", "name": "leaf", "input": [10], "output": 11, "children": []},
        ],
    }
    assert [(num(t["id"]), t["expectedSpanCount"]) for t in sink.traces] == [(1, 4), (5, 4)]
    seqs = [(num(record["id"]), record["rawSpan"]["span_data"]["seq"]) for record in records]
    assert seqs == [(3, 2), (2, 1), (4, 3), (1, 0), (7, 2), (6, 1), (8, 3), (5, 0)]


def test_span_and_trace_records_have_the_protocol_shape(bf: Bitfab, sink: MemorySink) -> None:
    """A root call gives one ``external_span`` and one ``external_trace`` shaped as PROTOCOL.md says."""

    @bf.trace(key="shape", name="Shape call", span_type="agent")
    def shape(x: int) -> int:
        return x

    shape(1)
    records = flushed(bf, sink)
    runtime = records[0]["rawSpan"]["span_data"]["runtime"]
    assert runtime == {"thread_id": threading.get_ident(), "thread_name": "MainThread"}
    origin = {"name": "bitfab", "version": bitfab.__version__, "instrumentation": "bitfab.trace"}
    assert records == [
        {
            "id": uid(1),
            "traceId": uid(1),
            "sourceTraceId": uid(1),
            "type": "sdk-function",
            "source": "bitfab-python",
            "traceFunctionKey": "shape",
            "sdkVersion": bitfab.__version__,
            "rawSpan": {
                "id": uid(1),
                "trace_id": uid(1),
                "started_at": "2026-01-01T00:00:00.000000Z",
                "ended_at": "2026-01-01T00:00:00.001000Z",
                "span_origin": origin,
                "span_data": {
                    "name": "Shape call",
                    "type": "agent",
                    "function_name": "shape",
                    "seq": 0,
                    "input": [1],
                    "output": 1,
                    "runtime": runtime,
                    "replayable": True,
                },
            },
        }
    ]
    assert sink.traces == [
        {
            "id": uid(1),
            "type": "sdk-function",
            "source": "bitfab-python",
            "traceFunctionKey": "shape",
            "completed": True,
            "expectedSpanCount": 1,
            "externalTrace": {
                "id": uid(1),
                "started_at": "2026-01-01T00:00:00.000000Z",
                "ended_at": "2026-01-01T00:00:00.001000Z",
                "name": "Shape call",
            },
        }
    ]


def test_input_is_positional_then_one_kwargs_dict_named_in_input_meta(
    bf: Bitfab, sink: MemorySink
) -> None:
    """``input`` is ``[*positional, {kwargs}]``; ``input_meta.kwarg_names`` tells the dicts apart."""

    @bf.trace(key="layout")
    def layout(a: Any, b: Any = 0, *rest: Any, c: Any = None, **extra: Any) -> None:
        return None

    layout(1)
    layout(1, 2, 3, 4)
    layout(1, c=5)
    layout(a=1, b=2)
    layout({"x": 1})
    layout({"x": 1}, z={"y": 2})
    assert [(d["input"], d.get("input_meta")) for d in map(data, flushed(bf, sink))] == [
        ([1], None),
        ([1, 2, 3, 4], None),
        ([1, {"c": 5}], {"v": 1, "kwarg_names": ["c"]}),
        ([{"a": 1, "b": 2}], {"v": 1, "kwarg_names": ["a", "b"]}),
        ([{"x": 1}], None),
        ([{"x": 1}, {"z": {"y": 2}}], {"v": 1, "kwarg_names": ["z"]}),
    ]


def test_capture_options_leave_out_input_or_output(bf: Bitfab, sink: MemorySink) -> None:
    """``capture_input=False`` records no input (not replayable); ``capture_output=False`` no output."""

    @bf.trace(key="no-input", capture_input=False)
    def no_input(secret: str) -> str:
        return "out"

    @bf.trace(key="no-output", capture_output=False)
    def no_output(x: int) -> str:
        return "private"

    assert (no_input("s"), no_output(1)) == ("out", "private")
    assert [data(record) for record in flushed(bf, sink)] == [
        {
            "name": "no_input",
            "type": "function",
            "function_name": "no_input",
            "input": None,
            "output": "out",
            "replayable": False,
            "not_replayable": ["input not captured (capture_input=False)"],
        },
        {
            "name": "no_output",
            "type": "function",
            "function_name": "no_output",
            "input": [1],
            "replayable": True,
        },
    ]


def test_async_calls_nest_through_await_and_gather(bf: Bitfab, sink: MemorySink) -> None:
    """Awaited calls and calls gathered in tasks are children of the coroutine that made them."""

    @bf.trace(key="fetch")
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        return x * 10

    @bf.trace(key="pipeline")
    async def pipeline() -> list[int]:
        first = await fetch(1)
        rest = await asyncio.gather(fetch(2), fetch(3))
        return [first, *rest]

    assert asyncio.run(pipeline()) == [10, 20, 30]
    assert span_tree(flushed(bf, sink)) == [
        {
            "key": "pipeline",
            "name": "pipeline",
            "input": [],
            "output": [10, 20, 30],
            "children": [
                {"key": "fetch", "name": "fetch", "input": [x], "output": x * 10, "children": []}
                for x in (1, 2, 3)
            ],
        }
    ]


def _edges(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """``(key, input, parent key, parent input)`` per record, sorted."""
    by_id = {record["id"]: record for record in records}
    edges = []
    for record in records:
        parent = by_id.get(record["rawSpan"].get("parent_id"))
        edges.append(
            (
                record["traceFunctionKey"],
                data(record)["input"],
                parent["traceFunctionKey"] if parent else None,
                data(parent)["input"] if parent else None,
            )
        )
    return sorted(edges, key=repr)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("under_a_root", [True, False])
def test_a_thousand_gathered_tasks_keep_their_own_children(
    bf: Bitfab, sink: MemorySink, under_a_root: bool
) -> None:
    """Under ``asyncio.gather`` of 1000 tasks each child's parent is its own task's span (F3)."""

    @bf.trace(key="child")
    async def child(i: int) -> int:
        await asyncio.sleep(0)
        return i

    @bf.trace(key="task")
    async def task(i: int) -> int:
        await asyncio.sleep(0)
        first = await child(i)
        await asyncio.sleep(0)
        return first + await child(i)

    async def gather() -> list[int]:
        return await asyncio.gather(*(task(i) for i in range(1000)))

    root = bf.trace(key="root")(gather)
    results = asyncio.run(root() if under_a_root else gather())
    assert results == [2 * i for i in range(1000)]
    task_parent = ("root", []) if under_a_root else (None, None)
    expected = [("child", [i], "task", [i]) for i in range(1000) for _ in range(2)]
    expected += [("task", [i], *task_parent) for i in range(1000)]
    if under_a_root:
        expected.append(("root", [], None, None))
    assert _edges(flushed(bf, sink)) == sorted(expected, key=repr)
    counts = sorted(trace["expectedSpanCount"] for trace in sink.traces)
    assert counts == ([3001] if under_a_root else [3] * 1000)


@pytest.mark.timeout(30)
def test_child_ending_in_another_thread_after_the_root_completes_the_trace(
    bf: Bitfab, sink: MemorySink
) -> None:
    """A child still running in a thread when its root returns sends the only completion record."""
    release = threading.Event()
    threads: list[threading.Thread] = []

    @bf.trace(key="late-child")
    def late_child() -> str:
        assert release.wait(10)
        return "late"

    @bf.trace(key="early-root")
    def early_root() -> str:
        thread = threading.Thread(target=late_child)
        thread.start()
        threads.append(thread)
        return "early"

    assert early_root() == "early"
    bf.flush()
    assert sink.traces == []
    release.set()
    threads[0].join(10)
    records = flushed(bf, sink)
    assert links(records) == [("early-root", 1, None, 1), ("late-child", 2, 1, 1)]
    root, child = (record["rawSpan"] for record in records)
    assert child["ended_at"] > root["ended_at"]
    assert sink.traces == [
        {
            "id": uid(1),
            "type": "sdk-function",
            "source": "bitfab-python",
            "traceFunctionKey": "early-root",
            "completed": True,
            "expectedSpanCount": 2,
            "externalTrace": {
                "id": uid(1),
                "started_at": root["started_at"],
                "ended_at": child["ended_at"],
                "name": "early_root",
            },
        }
    ]


@pytest.mark.timeout(30)
def test_recursion_500_deep_with_an_exception_halfway_unwinds_cleanly(
    bf: Bitfab, sink: MemorySink
) -> None:
    """500 nested spans, one raising in the middle: each ends once, the context is restored (F5)."""

    @bf.trace(key="rec")
    def rec(depth: int) -> int:
        if depth == 500:
            return depth
        if depth == 249:
            try:
                return rec(depth + 1)
            except ValueError:
                return -1
        result = rec(depth + 1)
        if depth == 250:
            raise ValueError("middle")
        return result

    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, 20_000))
    try:
        before = otel_context.get_current()
        assert rec(0) == -1
        after = otel_context.get_current()
    finally:
        sys.setrecursionlimit(old_limit)
    assert after is before
    assert isinstance(bf.current_span(), NoopSpan)
    records = sorted(flushed(bf, sink), key=lambda record: num(record["id"]) or 0)
    observed = [
        (*links([record])[0], data(record)["input"], data(record).get("output", "<raised>"))
        for record in records
    ]
    assert observed == [
        (
            "rec",
            depth + 1,
            depth or None,
            1,
            [depth],
            -1 if depth < 250 else ("<raised>" if depth == 250 else 500),
        )
        for depth in range(501)
    ]
    assert data(records[250])["error"] == "middle"
    assert [(num(t["id"]), t["expectedSpanCount"]) for t in sink.traces] == [(1, 501)]
    stats = bf.stats()
    assert (stats.emitted, stats.exported, stats.dropped) == (501, 501, {})


# -- return values and exceptions pass through untouched (C12) -------------------------------------


class AppError(Exception):
    """An exception of the application."""


def _raise_inner(error: BaseException) -> None:
    raise error


def _catch(func: Any, *args: Any) -> BaseException:
    """Call ``func`` and return what it raised (always from this same line)."""
    try:
        func(*args)
    except BaseException as exc:
        return exc
    raise AssertionError("did not raise")


def _user_frames(exc: BaseException) -> list[tuple[str, int]]:
    """``(function, line)`` of the traceback frames that belong to this test module."""
    return [
        (frame.f_code.co_name, line)
        for frame, line in traceback.walk_tb(exc.__traceback__)
        if frame.f_code.co_filename == __file__
    ]


def test_return_value_is_the_same_object(bf: Bitfab) -> None:
    """The caller gets the very object the function returned."""
    result = {"items": [1, 2]}

    @bf.trace(key="same-object")
    def give() -> dict[str, list[int]]:
        return result

    assert give() is result


def test_exception_is_the_same_object_with_the_users_frames(bf: Bitfab, sink: MemorySink) -> None:
    """The same exception object is raised, with the traceback frames it has untraced (C12)."""
    cause = KeyError("cause")

    def failing(error: BaseException) -> None:
        try:
            raise cause
        except KeyError:
            _raise_inner(error)

    traced = bf.trace(key="failing")(failing)
    plain_error, traced_error = AppError("boom"), AppError("boom")
    untraced = _catch(failing, plain_error)
    caught = _catch(traced, traced_error)
    assert caught is traced_error
    assert (caught.__context__, caught.__cause__) == (cause, None)
    assert _user_frames(caught) == _user_frames(untraced)
    [record] = flushed(bf, sink)
    recorded = data(record)
    recorded_traceback = recorded.pop("traceback")
    assert recorded == {
        "name": "failing",
        "type": "function",
        "function_name": "failing",
        "input": ["<unserializable: test_tracing_spans.AppError>"],
        "input_meta": {
            "v": 1,
            "values": {
                "0": [["custom", "bitfab:unserializable", {"type": "test_tracing_spans.AppError"}]]
            },
        },
        "error": "boom",
        "error_source": "code",
        "error_type": "test_tracing_spans.AppError",
        "replayable": False,
        "not_replayable": ["unserializable test_tracing_spans.AppError at $[0]"],
    }
    user_part = traceback.extract_tb(caught.__traceback__)[-2:]
    assert [frame.name for frame in user_part] == ["failing", "_raise_inner"]
    assert recorded_traceback.endswith("".join(traceback.format_list(user_part)))


def test_async_exception_is_the_same_object(bf: Bitfab, sink: MemorySink) -> None:
    """A coroutine's exception reaches the awaiting code unchanged and is recorded."""
    error = AppError("async boom")

    @bf.trace(key="async-failing")
    async def failing() -> None:
        await asyncio.sleep(0)
        raise error

    async def run() -> BaseException:
        try:
            await failing()
        except AppError as exc:
            return exc
        raise AssertionError("did not raise")

    assert asyncio.run(run()) is error
    recorded = data(flushed(bf, sink)[0])
    assert (recorded["error"], recorded["error_type"], recorded["error_source"]) == (
        "async boom",
        "test_tracing_spans.AppError",
        "code",
    )


@pytest.mark.parametrize("error", [KeyboardInterrupt(), SystemExit(3)])
def test_base_exceptions_from_the_function_propagate_and_are_recorded(
    bf: Bitfab, sink: MemorySink, error: BaseException
) -> None:
    """KeyboardInterrupt and SystemExit raised by the user's code pass through and end the span."""

    @bf.trace(key="interrupted")
    def interrupted() -> None:
        raise error

    assert _catch(interrupted) is error
    recorded = data(flushed(bf, sink)[0])
    assert (recorded["error_type"], "output" in recorded) == (type(error).__name__, False)
    assert isinstance(bf.current_span(), NoopSpan)


def test_exception_whose_str_raises_is_still_recorded(bf: Bitfab, sink: MemorySink) -> None:
    """An exception with a broken ``__str__`` is re-raised and recorded with a placeholder message."""

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    error = Unprintable()

    @bf.trace(key="unprintable")
    def unprintable() -> None:
        raise error

    assert _catch(unprintable) is error
    recorded = data(flushed(bf, sink)[0])
    name = (
        "test_tracing_spans.test_exception_whose_str_raises_is_still_recorded.<locals>.Unprintable"
    )
    assert (recorded["error"], recorded["error_type"]) == (f"<str() of {name} failed>", name)


def _bottom() -> None:
    raise ValueError("bottom")


def _descend(levels: int) -> None:
    if levels == 0:
        _bottom()
    _descend(levels - 1)


def test_recorded_traceback_keeps_the_frames_where_the_error_was_raised(
    bf: Bitfab, sink: MemorySink
) -> None:
    """A deep traceback is capped by dropping outer frames: the raising frame is always kept."""

    @bf.trace(key="deep-error")
    def deep_error() -> None:
        _descend(60)

    _catch(deep_error)
    recorded_traceback = data(flushed(bf, sink)[0])["traceback"]
    last_frame = recorded_traceback.splitlines()[-2:]
    assert last_frame[0].endswith("in _bottom")
    assert last_frame[1].strip() == 'raise ValueError("bottom")'
