"""Wire records shaped like PROTOCOL.md's, for store tests."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

BASE_TIME = datetime(2026, 11, 27, 10, 0, 0, tzinfo=timezone.utc)
BASE_US = (BASE_TIME - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)


def iso(offset_ms: float) -> str:
    """The protocol's timestamp ``offset_ms`` milliseconds after ``BASE_TIME``."""
    moment = BASE_TIME + timedelta(milliseconds=offset_ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def usage(
    model: str = "gpt-test",
    input_tokens: int = 0,
    output_tokens: int = 0,
    cached: int = 0,
    cost: float = 0.0,
) -> dict[str, Any]:
    """An LLM usage context entry."""
    return {
        "provider": "test",
        "model": model,
        "inputTokens": input_tokens,
        "outputTokens": output_tokens,
        "cachedInputTokens": cached,
        "costUsd": cost,
    }


def span(
    span_id: str,
    *,
    trace: str | None = None,
    parent: str | None = None,
    key: str = "triage",
    name: str | None = None,
    start_ms: float = 0.0,
    duration_ms: float = 10.0,
    input: Any = None,
    output: Any = "ok",
    error: str | None = None,
    test_run: str | None = None,
    source_span: str | None = None,
    contexts: list[dict[str, Any]] | None = None,
    mocked: bool = False,
    **span_data: Any,
) -> dict[str, Any]:
    """A span record (``external_span``); the trace id defaults to ``t-<span_id>``."""
    trace_id = trace or f"t-{span_id}"
    raw: dict[str, Any] = {
        "id": span_id,
        "trace_id": trace_id,
        "started_at": iso(start_ms),
        "ended_at": iso(start_ms + duration_ms),
        "span_origin": {"name": "bitfab", "version": "0.1.0", "instrumentation": "decorator"},
        "span_data": {
            "name": name or key,
            "type": "function",
            "input": [] if input is None else input,
            "input_meta": {"v": 1, "kwarg_names": []},
            "output": output,
            "output_meta": None,
            "error": error,
            "error_source": "code" if error is not None else None,
            "function_name": name or key,
            "contexts": contexts or [],
            "metadata": {},
            **span_data,
        },
    }
    if parent is not None:
        raw["parent_id"] = parent
    record: dict[str, Any] = {
        "id": span_id,
        "traceId": trace_id,
        "sourceTraceId": trace_id,
        "type": "sdk-function",
        "source": "bitfab-python",
        "traceFunctionKey": key,
        "sdkVersion": "0.1.0",
        "rawSpan": raw,
    }
    if test_run is not None:
        record["experimentId"] = record["testRunId"] = test_run
        raw["input_source_span_id"] = source_span
    if mocked:
        record.update(mocked=True, mockTarget="output", mockSource="recorded")
    return record


def trace(
    trace_id: str,
    *,
    key: str = "triage",
    expected: int = 1,
    dropped: bool = False,
    test_run: str | None = None,
    source_trace: str | None = None,
    start_ms: float = 0.0,
) -> dict[str, Any]:
    """A trace completion record (``external_trace``)."""
    external: dict[str, Any] = {
        "id": trace_id,
        "started_at": iso(start_ms),
        "ended_at": iso(start_ms + 10),
        "name": key,
        "metadata": {},
    }
    record: dict[str, Any] = {
        "id": trace_id,
        "type": "sdk-function",
        "source": "bitfab-python",
        "traceFunctionKey": key,
        "completed": True,
        "expectedSpanCount": expected,
        "externalTrace": external,
    }
    if dropped:
        record["dropped"] = True
    if test_run is not None:
        record["experimentId"] = record["testRunId"] = test_run
        external["input_source_trace_id"] = source_trace
    return record
