"""``bitfab.current_span()`` and what lands on the span record: usage, contexts, metadata, LLM
usage read off OpenAI- and Anthropic-shaped responses, and the ids of an OpenTelemetry span."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import TracerProvider
from pydantic import BaseModel
from tracing_helpers import data, flushed, uid

import bitfab
from bitfab import Bitfab, NoopSpan, Span
from bitfab.testing import MemorySink


def test_current_span_outside_a_traced_call_is_a_no_op(bf: Bitfab) -> None:
    """Outside a span ``current_span()`` is a NoopSpan whose methods accept anything and do nothing."""
    for span in (bitfab.current_span(), bf.current_span()):
        assert isinstance(span, NoopSpan)
        assert (span.is_recording, span.id, span.trace_id_str) == (False, None, None)
        assert [
            span.set_usage(model="m", input_tokens=1),
            span.add_context({"a": 1}),
            span.set_metadata({"a": 1}, b=2),
        ] == [None, None, None]


def test_current_span_inside_is_the_recorded_span(bf: Bitfab, sink: MemorySink) -> None:
    """Inside a traced call ``current_span()`` is its span: same id and trace id as the record."""
    seen: list[tuple[Any, ...]] = []

    @bf.trace(key="inner-span")
    def inner() -> None:
        span = bf.current_span()
        seen.append((type(span), span.is_recording, span.id, span.trace_id_str, span.key))

    @bf.trace(key="outer-span")
    def outer() -> None:
        inner()

    outer()
    flushed(bf, sink)
    assert seen == [(Span, True, uid(2), uid(1), "inner-span")]


def test_usage_contexts_and_metadata_land_on_the_record(bf: Bitfab, sink: MemorySink) -> None:
    """``set_usage``, ``add_context`` and ``set_metadata`` fill ``contexts`` and ``metadata``."""

    @bf.trace(key="chat", span_type="llm")
    def chat(prompt: str) -> str:
        span = bf.current_span()
        span.set_usage(model="gpt-4o", input_tokens=10, output_tokens=5)
        span.set_usage(
            cached_tokens=2, reasoning_tokens=1, cost_usd=0.0125, provider="openai", input_tokens=12
        )
        span.add_context({"retrieved": ["doc-1", "doc-2"]})
        span.add_context({"flag": True})
        span.set_metadata({"user": "u1"}, version=2)
        span.set_metadata(user="u2")
        return "answer"

    assert chat("q") == "answer"
    assert [data(record) for record in flushed(bf, sink)] == [
        {
            "name": "chat",
            "type": "llm",
            "function_name": "chat",
            "input": ["q"],
            "output": "answer",
            "contexts": [
                {
                    "type": "usage",
                    "model": "gpt-4o",
                    "inputTokens": 12,
                    "outputTokens": 5,
                    "cachedInputTokens": 2,
                    "reasoningTokens": 1,
                    "costUsd": 0.0125,
                    "provider": "openai",
                    "durationMs": 1.0,
                },
                {"retrieved": ["doc-1", "doc-2"]},
                {"flag": True},
            ],
            "metadata": {"user": "u2", "version": 2},
            "replayable": True,
        }
    ]


def test_bad_usage_value_is_logged_and_the_call_goes_on(
    bf: Bitfab, sink: MemorySink, lenient: None, caplog: pytest.LogCaptureFixture
) -> None:
    """In production a non-numeric token count is dropped with one warning; the rest is kept."""

    @bf.trace(key="sloppy")
    def sloppy() -> str:
        bf.current_span().set_usage(model="m", input_tokens="many", output_tokens=3)  # type: ignore[arg-type]
        return "ok"

    with caplog.at_level(logging.WARNING, logger="bitfab"):
        assert sloppy() == "ok"
    usage = data(flushed(bf, sink)[0])["contexts"]
    assert usage == [{"type": "usage", "model": "m", "outputTokens": 3, "durationMs": 1.0}]
    assert [record.levelname for record in caplog.records] == ["WARNING"]


# -- usage read off return values ----------------------------------------------------------------


class Details(BaseModel):
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None


class ChatUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: Details | None = None
    completion_tokens_details: Details | None = None


class ChatCompletion(BaseModel):
    """Shaped like ``openai.types.chat.ChatCompletion``."""

    id: str
    object: str
    model: str
    choices: list[dict[str, Any]]
    usage: ChatUsage


class ResponseUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    input_tokens_details: Details
    output_tokens_details: Details


class Response(BaseModel):
    """Shaped like ``openai.types.responses.Response``."""

    id: str
    object: str
    model: str
    output: list[Any]
    usage: ResponseUsage


class AnthropicUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int | None = None


class Message(BaseModel):
    """Shaped like ``anthropic.types.Message``."""

    id: str
    type: str
    model: str
    stop_reason: str
    content: list[Any]
    usage: AnthropicUsage


OPENAI_CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
    "usage": {
        "prompt_tokens": 11,
        "completion_tokens": 7,
        "total_tokens": 18,
        "prompt_tokens_details": {"cached_tokens": 3},
        "completion_tokens_details": {"reasoning_tokens": 2},
    },
}
OPENAI_RESPONSE = {
    "id": "resp-1",
    "object": "response",
    "model": "o3",
    "output": [],
    "usage": {
        "input_tokens": 20,
        "output_tokens": 9,
        "input_tokens_details": {"cached_tokens": 4},
        "output_tokens_details": {"reasoning_tokens": 5},
    },
}
ANTHROPIC_MESSAGE = {
    "id": "msg-1",
    "type": "message",
    "model": "claude-sonnet-4",
    "stop_reason": "end_turn",
    "content": [{"type": "text", "text": "hi"}],
    "usage": {"input_tokens": 30, "output_tokens": 12, "cache_read_input_tokens": 6},
}
USAGES = {
    "openai_chat": {
        "model": "gpt-4o-mini",
        "inputTokens": 11,
        "outputTokens": 7,
        "cachedInputTokens": 3,
        "reasoningTokens": 2,
        "provider": "openai",
    },
    "openai_response": {
        "model": "o3",
        "inputTokens": 20,
        "outputTokens": 9,
        "cachedInputTokens": 4,
        "reasoningTokens": 5,
        "provider": "openai",
    },
    "anthropic": {
        "model": "claude-sonnet-4",
        "inputTokens": 30,
        "outputTokens": 12,
        "cachedInputTokens": 6,
        "provider": "anthropic",
    },
}
RESPONSES = [
    ("openai_chat", OPENAI_CHAT, ChatCompletion),
    ("openai_response", OPENAI_RESPONSE, Response),
    ("anthropic", ANTHROPIC_MESSAGE, Message),
]


@pytest.mark.parametrize("as_object", [False, True], ids=["dict", "object"])
@pytest.mark.parametrize(
    ("shape", "payload", "model_class"), RESPONSES, ids=[r[0] for r in RESPONSES]
)
def test_llm_usage_is_read_off_the_return_value(
    bf: Bitfab,
    sink: MemorySink,
    shape: str,
    payload: dict[str, Any],
    model_class: type[BaseModel],
    as_object: bool,
) -> None:
    """A returned OpenAI chat / responses or Anthropic message (dict or SDK-like object) fills usage."""
    response = model_class.model_validate(payload) if as_object else payload

    @bf.trace(key=f"llm-{shape}", span_type="llm")
    def call_model() -> Any:
        return response

    assert call_model() is response
    assert data(flushed(bf, sink)[0])["contexts"] == [
        {"type": "usage", **USAGES[shape], "durationMs": 1.0}
    ]


def test_usage_set_by_hand_wins_over_the_return_value(bf: Bitfab, sink: MemorySink) -> None:
    """When the function set usage itself, the response's usage is not read over it."""

    @bf.trace(key="manual-usage")
    def manual() -> dict[str, Any]:
        bf.current_span().set_usage(model="mine", input_tokens=1)
        return OPENAI_CHAT

    manual()
    assert data(flushed(bf, sink)[0])["contexts"] == [
        {"type": "usage", "model": "mine", "inputTokens": 1, "durationMs": 1.0}
    ]


@pytest.mark.parametrize(
    "value",
    [
        {"model": "m"},
        {"model": "m", "usage": {}},
        {"model": 3, "usage": {"prompt_tokens": 1}},
        {"model": "m", "usage": {"prompt_tokens": True}},
        ["model", "usage"],
        "model usage",
    ],
)
def test_values_that_are_not_llm_responses_give_no_usage(
    bf: Bitfab, sink: MemorySink, value: Any
) -> None:
    """No usage entry unless the value has a string ``model`` and a usage with token counts."""

    @bf.trace(key="not-llm")
    def not_llm() -> Any:
        return value

    not_llm()
    assert "contexts" not in data(flushed(bf, sink)[0])


# -- OpenTelemetry ---------------------------------------------------------------------------------


def test_active_opentelemetry_span_ids_are_recorded(bf: Bitfab, sink: MemorySink) -> None:
    """Inside an OpenTelemetry SDK span, the bitfab span records its hex trace and span ids."""
    tracer = TracerProvider().get_tracer("bitfab-tests")

    @bf.trace(key="joined")
    def joined() -> str:
        return "ok"

    with tracer.start_as_current_span("outer") as otel_span:
        joined()
        context = otel_span.get_span_context()
    joined()
    assert [data(record).get("otel") for record in flushed(bf, sink)] == [
        {
            "trace_id": otel_trace.format_trace_id(context.trace_id),
            "span_id": otel_trace.format_span_id(context.span_id),
        },
        None,
    ]
