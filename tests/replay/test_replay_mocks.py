"""Mocks during replay: nested calls served from the recording, matched by (key, name, occurrence),
failing closed when the recording is missing, and overridden by ``mock_overrides``."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from replay_helpers import replay_spans

from bitfab import Bitfab
from bitfab.store import Store


@dataclasses.dataclass
class Completion:
    text: str
    finish: str


class FakeLLM:
    """A traced "LLM" that counts its real calls and answers from a script."""

    def __init__(self, bf: Bitfab, answers: list[str], *, key: str = "llm") -> None:
        self.calls: list[str] = []
        self.answers = answers

        @bf.trace(key=key, span_type="llm", mock_on_replay=True)
        def complete(prompt: str) -> Completion:
            self.calls.append(prompt)
            return Completion(self.answers[len(self.calls) - 1], "stop")

        self.complete = complete


# ---- mock="marked" ---------------------------------------------------------------------------


def test_a_marked_call_is_served_from_the_recording_with_its_exact_type(bf: Bitfab) -> None:
    """The LLM is not called again; the app gets the recorded ``Completion`` dataclass back."""
    llm = FakeLLM(bf, ["sunny", "rainy"])
    seen: list[Any] = []

    @bf.trace(key="forecast")
    def forecast(city: str) -> str:
        completion = llm.complete(f"weather in {city}?")
        seen.append(completion)
        return completion.text

    forecast("Oslo")
    llm.calls.clear()
    seen.clear()

    result = forecast.replay()

    assert llm.calls == []
    assert seen == [Completion("sunny", "stop")]
    assert type(seen[0]) is Completion
    assert [(i.verdict, i.result, i.mocked) for i in result] == [("same", "sunny", ["llm"])]


def test_repeated_calls_get_the_recorded_outputs_in_order(bf: Bitfab) -> None:
    """Two LLM calls under one parent are matched by occurrence: first to first, second to second."""
    llm = FakeLLM(bf, ["draft", "final"])

    @bf.trace(key="refine")
    def refine(topic: str) -> list[str]:
        return [llm.complete(topic).text, llm.complete("improve it").text]

    refine("cats")
    llm.calls.clear()
    llm.answers[:] = ["WRONG", "WRONG"]

    result = refine.replay()

    assert llm.calls == []
    assert [(i.verdict, i.result, i.mocked) for i in result] == [
        ("same", ["draft", "final"], ["llm", "llm"])
    ]


def test_repeated_calls_keep_their_order_when_the_clock_is_coarse(db: Path) -> None:
    """Sibling calls that start within one clock tick (Windows' clock ticks every 15.6 ms) are
    still matched first to first: the order of the calls, not the order of random span ids."""
    frozen = 1_767_225_600_000_000_000
    bf = Bitfab(db=str(db), clock=lambda: frozen)
    llm = FakeLLM(bf, [f"answer {i}" for i in range(8)])

    @bf.trace(key="batch")
    def batch() -> list[str]:
        return [llm.complete(f"q{i}").text for i in range(8)]

    try:
        batch()
        result = batch.replay()
    finally:
        bf.shutdown(timeout=5)

    assert [(i.verdict, i.result) for i in result] == [("same", [f"answer {i}" for i in range(8)])]


def test_a_mock_without_a_recording_fails_closed_even_if_the_app_catches_it(bf: Bitfab) -> None:
    """The new code calls the LLM a third time: that call is not made for real, and the item fails
    although the app swallowed the exception."""
    llm = FakeLLM(bf, ["one", "two", "three"])
    calls = {"n": 2}

    @bf.trace(key="loop")
    def loop() -> list[str]:
        out = []
        for i in range(calls["n"]):
            try:
                out.append(llm.complete(f"turn {i}").text)
            except Exception as exc:
                out.append(f"fallback after {type(exc).__name__}")
        return out

    loop()
    llm.calls.clear()
    calls["n"] = 3

    item = loop.replay()[0]

    assert llm.calls == []
    assert item.verdict == "error"
    assert item.error_type == "MockMissingError"
    assert item.error == (
        "MockMissingError: no recording of the mocked call llm (complete, call #3 under its parent)"
        " in the source trace"
    )


def test_a_recorded_exception_is_raised_in_place_of_the_mocked_call(bf: Bitfab) -> None:
    """A marked call that raised when recorded raises again (with the recorded message) on replay."""
    state = {"fail": True}

    @bf.trace(key="flaky", mock_on_replay=True)
    def flaky() -> str:
        if state["fail"]:
            raise TimeoutError("upstream timed out")
        return "fine"

    @bf.trace(key="caller")
    def caller() -> str:
        try:
            return flaky()
        except Exception as exc:
            return f"handled: {exc}"

    caller()
    state["fail"] = False

    item = caller.replay()[0]

    assert (item.verdict, item.result) == (
        "changed",
        "handled: TimeoutError: upstream timed out (recorded)",
    )


def test_a_marked_call_made_from_a_thread_pool_is_mocked_too(bf: Bitfab) -> None:
    """Calls fanned out to a ``ThreadPoolExecutor`` inside the replayed function are still served."""
    llm = FakeLLM(bf, ["a", "b"])

    @bf.trace(key="parallel")
    def parallel() -> list[str]:
        with ThreadPoolExecutor(max_workers=1) as pool:
            return [pool.submit(llm.complete, p).result().text for p in ("x", "y")]

    parallel()
    llm.calls.clear()

    result = parallel.replay()

    assert llm.calls == []
    assert [(i.verdict, i.result) for i in result] == [("same", ["a", "b"])]


def test_the_replayed_root_is_never_mocked(bf: Bitfab) -> None:
    """Replaying a function marked ``mock_on_replay`` runs it, under every mock mode."""
    llm = FakeLLM(bf, ["x"] * 10)
    llm.complete("hello")

    for mode in ("marked", "all"):
        result = llm.complete.replay(mock=mode)
        assert [i.verdict for i in result] == ["same"]
    assert llm.calls == ["hello"] * 3


# ---- mock modes -----------------------------------------------------------------------------


def _app_with_tool(bf: Bitfab) -> tuple[FakeLLM, list[str], Any]:
    llm = FakeLLM(bf, ["recorded"])
    tool_calls: list[str] = []

    @bf.trace(key="search")
    def search(q: str) -> str:
        tool_calls.append(q)
        return f"results for {q}"

    @bf.trace(key="agent")
    def agent(q: str) -> list[str]:
        return [llm.complete(q).text, search(q)]

    agent("news")
    llm.calls.clear()
    llm.answers[:] = ["live"]
    tool_calls.clear()
    return llm, tool_calls, agent


def test_mock_all_serves_every_nested_traced_call(bf: Bitfab) -> None:
    """``mock="all"``: the unmarked tool is served from the recording as well."""
    llm, tool_calls, agent = _app_with_tool(bf)

    item = agent.replay(mock="all")[0]

    assert (llm.calls, tool_calls) == ([], [])
    assert (item.verdict, item.result, sorted(item.mocked)) == (
        "same",
        ["recorded", "results for news"],
        ["llm", "search"],
    )


def test_mock_none_runs_every_nested_call(bf: Bitfab) -> None:
    """``mock="none"``: the marked LLM runs for real too, and its new answer shows as a change."""
    llm, tool_calls, agent = _app_with_tool(bf)

    item = agent.replay(mock="none")[0]

    assert (llm.calls, tool_calls) == (["news"], ["news"])
    assert (item.verdict, item.result, item.mocked) == (
        "changed",
        ["live", "results for news"],
        [],
    )


def test_mocked_spans_are_stored_with_mocked_and_their_source(bf: Bitfab, store: Store) -> None:
    """Served spans carry ``mocked: true`` and ``mockSource``; spans that ran carry neither."""
    _llm, _tool_calls, agent = _app_with_tool(bf)

    result = agent.replay()
    spans = {r["traceFunctionKey"]: r for r in replay_spans(store, result)}

    assert (spans["llm"]["mocked"], spans["llm"]["mockSource"]) == (True, "recorded")
    assert spans["llm"]["rawSpan"]["span_data"]["output"] == {"text": "recorded", "finish": "stop"}
    assert "mocked" not in spans["search"]
    assert "mocked" not in spans["agent"]


# ---- mock_overrides ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["marked", "none"])
def test_an_override_value_replaces_the_call(bf: Bitfab, store: Store, mode: str) -> None:
    """``mock_overrides={"llm": value}`` answers the call with ``value``, whatever the mock mode."""
    llm, _tool_calls, agent = _app_with_tool(bf)

    result = agent.replay(mock=mode, mock_overrides={"llm": Completion("overridden", "stop")})
    spans = {r["traceFunctionKey"]: r for r in replay_spans(store, result)}

    assert llm.calls == []
    assert [(i.verdict, i.result, i.mocked) for i in result] == [
        ("changed", ["overridden", "results for news"], ["llm"])
    ]
    assert (spans["llm"]["mocked"], spans["llm"]["mockSource"]) == (True, "override")


def test_an_override_function_gets_the_inputs_by_parameter_name(bf: Bitfab) -> None:
    """``mock_overrides={"llm": fn}`` calls ``fn({"prompt": ...})`` instead of the LLM."""
    llm, _tool_calls, agent = _app_with_tool(bf)
    received: list[dict[str, Any]] = []

    def fake(inputs: dict[str, Any]) -> Completion:
        received.append(inputs)
        return Completion(inputs["prompt"].upper(), "stop")

    item = agent.replay(mock_overrides={"llm": fake})[0]

    assert llm.calls == []
    assert received == [{"prompt": "news"}]
    assert item.result == ["NEWS", "results for news"]


def test_an_override_function_that_raises_fails_the_item(bf: Bitfab) -> None:
    """The override's exception reaches the app as the call's; uncaught, the item is an error."""
    _llm, _tool_calls, agent = _app_with_tool(bf)

    def fake(inputs: dict[str, Any]) -> Completion:
        raise ConnectionError("no network in tests")

    item = agent.replay(mock_overrides={"llm": fake})[0]

    assert (item.verdict, item.error) == ("error", "ConnectionError: no network in tests")


def test_a_mocked_llm_response_spends_no_tokens_on_replay(bf: Bitfab) -> None:
    """A mocked call served an OpenAI-shaped response keeps its model but spends no tokens."""
    calls: list[str] = []

    @bf.trace(key="chat", span_type="llm", mock_on_replay=True)
    def chat(prompt: str) -> dict[str, Any]:
        calls.append(prompt)
        return {
            "model": "gpt-test",
            "choices": [{"message": {"content": prompt.upper()}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 4},
        }

    @bf.trace(key="answer")
    def answer(question: str) -> str:
        content: str = chat(question)["choices"][0]["message"]["content"]
        return content

    answer("hi")
    result = answer.replay()
    item = result.items[0]
    assert (item.verdict, calls) == ("same", ["hi"])
    assert item.original_tokens == {"input": 11, "output": 4, "cached": 0, "total": 15}
    assert (item.tokens, item.model) == (
        {"input": 0, "output": 0, "cached": 0, "total": 0},
        "gpt-test",
    )
