"""The replay context: what spans recorded during a replay carry, where the context reaches, what
an item measures (duration, tokens, model) and how a user exception is kept to its item."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from replay_helpers import replay_spans

import bitfab
from bitfab import Bitfab
from bitfab.store import Store


def test_every_span_recorded_during_a_replay_carries_the_test_run_and_its_source(
    bf: Bitfab, store: Store
) -> None:
    """Root and nested spans of each replayed item store ``testRunId``/``experimentId`` and the
    ``input_source_span_id`` of the recorded call they replay; trace records point at the source."""

    @bf.trace(key="step")
    def step(n: int) -> int:
        return n + 1

    @bf.trace(key="pipeline")
    def pipeline(n: int) -> int:
        return step(step(n))

    pipeline(1)
    pipeline(10)

    result = pipeline.replay()
    spans = replay_spans(store, result)

    run_id = result.test_run_id
    source_of = {item.trace_id: item.original_span_id for item in result}
    assert len(spans) == 6
    assert [
        (
            record["traceFunctionKey"],
            record["testRunId"],
            record["experimentId"],
            record["rawSpan"]["input_source_span_id"],
        )
        for record in spans
    ] == [
        (key, run_id, run_id, source_of[record["traceId"]])
        for record, key in zip(spans, ["pipeline", "step", "step"] * 2, strict=True)
    ]
    for item in result:
        trace = store.get_trace(item.trace_id or "")
        assert trace is not None
        assert (trace["testRunId"], trace["externalTrace"]["input_source_trace_id"]) == (
            run_id,
            item.original_trace_id,
        )


def test_the_context_follows_await_and_gather_tasks(bf: Bitfab, store: Store) -> None:
    """Nested async calls, awaited or run as ``gather`` tasks, see the replay and join its trace."""

    @bf.trace(key="lookup")
    async def lookup(n: int) -> tuple[int, bool]:
        await asyncio.sleep(0)
        return n, bitfab.is_replaying()

    @bf.trace(key="blocking_lookup")
    def blocking_lookup(n: int) -> tuple[int, bool]:
        return n, bitfab.is_replaying()

    @bf.trace(key="fan_out")
    async def fan_out(n: int) -> list[tuple[int, bool]]:
        first = await lookup(0)
        rest = await asyncio.gather(*(lookup(i) for i in range(1, n)))
        tasks = [asyncio.create_task(lookup(i)) for i in range(n, n + 2)]
        in_thread = await asyncio.to_thread(blocking_lookup, n + 2)
        executor = await asyncio.get_running_loop().run_in_executor(None, blocking_lookup, n + 3)
        return [first, *rest, *[await task for task in tasks], in_thread, executor]

    asyncio.run(fan_out(3))

    result = fan_out.replay()
    spans = replay_spans(store, result)

    assert result[0].result == [(i, True) for i in range(7)]
    assert result[0].original_output == [(i, False) for i in range(7)]
    assert sorted(r["traceFunctionKey"] for r in spans) == (
        ["blocking_lookup"] * 2 + ["fan_out"] + ["lookup"] * 5
    )
    assert {r["traceId"] for r in spans} == {result[0].trace_id}
    assert {r["testRunId"] for r in spans} == {result.test_run_id}
    assert {r["rawSpan"]["input_source_span_id"] for r in spans} == {result[0].original_span_id}


def test_the_context_follows_threads_and_thread_pools(bf: Bitfab, store: Store) -> None:
    """A ``threading.Thread`` and a ``ThreadPoolExecutor`` started inside the replayed call carry
    the replay: nested calls there see it and are recorded in the replay's trace."""

    @bf.trace(key="work")
    def work(tag: str) -> tuple[str, bool, bool]:
        return tag, bitfab.is_replaying(), bf.is_replaying()

    @bf.trace(key="spawn")
    def spawn() -> dict[str, Any]:
        out: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: out.update(thread=work("thread")))
        thread.start()
        thread.join()
        with ThreadPoolExecutor(max_workers=2) as pool:
            out["pool"] = [f.result() for f in [pool.submit(work, "p1"), pool.submit(work, "p2")]]
        return out

    spawn()

    result = spawn.replay()
    spans = replay_spans(store, result)

    assert result[0].result == {
        "thread": ("thread", True, True),
        "pool": [("p1", True, True), ("p2", True, True)],
    }
    root = next(r for r in spans if r["traceFunctionKey"] == "spawn")
    children = [r for r in spans if r["traceFunctionKey"] == "work"]
    assert len(children) == 3
    assert {r["rawSpan"]["parent_id"] for r in children} == {root["id"]}
    assert {(r["traceId"], r["testRunId"]) for r in children} == {
        (result[0].trace_id, result.test_run_id)
    }
    assert {r["rawSpan"]["input_source_span_id"] for r in children} == {result[0].original_span_id}


def test_concurrent_items_keep_their_own_context(bf: Bitfab, store: Store) -> None:
    """With items on parallel threads, each nested span points at its own item's source span."""

    @bf.trace(key="inner")
    def inner(n: int) -> int:
        return n

    @bf.trace(key="outer")
    def outer(n: int) -> int:
        return sum(inner(n) for _ in range(3))

    for n in range(8):
        outer(n)

    result = outer.replay(limit=8, max_concurrency=8)
    spans = replay_spans(store, result)

    source_of = {item.trace_id: item.original_span_id for item in result}
    assert len(source_of) == 8
    assert len(spans) == 32
    assert all(r["rawSpan"]["input_source_span_id"] == source_of[r["traceId"]] for r in spans)


def test_a_user_exception_fails_its_item_only(bf: Bitfab) -> None:
    """An exception raised by the replayed code is the item's error (type and message); the other
    items run and the run completes."""
    broken = {"n": None}

    @bf.trace(key="divide")
    def divide(n: int) -> float:
        if n == broken["n"]:
            raise ZeroDivisionError(f"cannot handle {n}")
        return 10 / n

    for n in (1, 2, 5):
        divide(n)
    broken["n"] = 2

    result = divide.replay()

    assert [(i.verdict, i.error_type, i.error, i.result) for i in result] == [
        ("same", None, None, 2.0),
        ("error", "ZeroDivisionError", "ZeroDivisionError: cannot handle 2", None),
        ("same", None, None, 10.0),
    ]
    assert result.completed is True


def test_tokens_and_model_come_from_usage_recorded_during_the_replayed_call(bf: Bitfab) -> None:
    """Usage set with ``current_span().set_usage`` and read off an OpenAI-shaped return value add
    up per item; the original side comes from the recording."""
    model = {"name": "small-1"}

    @bf.trace(key="chat", span_type="llm")
    def chat(prompt: str) -> dict[str, Any]:
        return {
            "object": "chat.completion",
            "model": model["name"],
            "choices": [{"message": {"content": prompt.upper()}}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3},
        }

    @bf.trace(key="rank", span_type="llm")
    def rank(text: str) -> int:
        bitfab.current_span().set_usage(model="ranker-1", input_tokens=100, output_tokens=1)
        return len(text)

    @bf.trace(key="answer")
    def answer(q: str) -> str:
        text = chat(q)["choices"][0]["message"]["content"]
        return f"{text}/{rank(text)}"

    answer("hi")
    model["name"] = "small-2"

    item = answer.replay()[0]

    assert item.verdict == "same"
    assert item.original_tokens == {"input": 107, "output": 4, "cached": 0, "total": 111}
    assert item.tokens == {"input": 107, "output": 4, "cached": 0, "total": 111}
    assert (item.original_model, item.model) == ("small-1", "small-2")
    assert item.duration_ms is not None and item.duration_ms > 0
    assert item.original_duration_ms is not None and item.original_duration_ms >= 0


def test_mocked_calls_spend_no_tokens(bf: Bitfab) -> None:
    """A call served from the recording ran nothing: the item counts only the calls that ran."""

    @bf.trace(key="llm", span_type="llm", mock_on_replay=True)
    def llm(prompt: str) -> str:
        bitfab.current_span().set_usage(model="big-1", input_tokens=1000, output_tokens=50)
        return prompt[::-1]

    @bf.trace(key="cheap", span_type="llm")
    def cheap(text: str) -> str:
        bitfab.current_span().set_usage(model="tiny-1", input_tokens=10, output_tokens=2)
        return text

    @bf.trace(key="flow")
    def flow(q: str) -> str:
        return cheap(llm(q))

    flow("abc")

    item = flow.replay()[0]

    assert item.original_tokens == {"input": 1010, "output": 52, "cached": 0, "total": 1062}
    assert item.tokens == {"input": 10, "output": 2, "cached": 0, "total": 12}
    assert item.model == "tiny-1"
    assert item.mocked == ["llm"]
