"""Span -> wire records (PROTOCOL.md's ``external_span`` and ``external_trace``).

Runs on the exporter's thread: everything here is formatting of values that were already
snapshotted on the caller's thread.
"""

from __future__ import annotations

import threading
import time
import traceback as tb_module
from typing import Any

from bitfab._version import __version__
from bitfab.tracing.span import NO_VALUE, Span, format_id

__all__ = ["SOURCE", "iso_from_ns", "span_records"]

SOURCE = "bitfab-python"
_ORIGIN = {"name": "bitfab", "version": __version__, "instrumentation": "bitfab.trace"}
_MAX_TRACEBACK_CHARS = 16_384


_last_second: tuple[int, str] = (-1, "")


def iso_from_ns(ns: int) -> str:
    """ISO-8601 UTC with microseconds and a ``Z``: ``2026-11-27T10:38:45.642593Z``."""
    global _last_second
    seconds, rest = divmod(ns, 1_000_000_000)
    cached_second, text = _last_second  # one tuple: safe to share between exporter threads
    if cached_second != seconds:
        # Spans of a batch mostly share their second: format it once.
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _last_second = (seconds, text)
    return f"{text}.{rest // 1000:06d}Z"


def thread_names() -> dict[int | None, str]:
    """Names of the live threads by ident (looked up once per exported batch)."""
    return {thread.ident: thread.name for thread in threading.enumerate()}


def _traceback_text(summary: Any) -> str | None:
    if summary is None:
        return None
    text = "".join(tb_module.format_list(summary))
    if len(text) > _MAX_TRACEBACK_CHARS:
        text = text[-_MAX_TRACEBACK_CHARS:]
    return text


def span_records(
    span: Span, names: dict[int | None, str] | None = None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The span's wire record, and the trace completion record if this span completed its trace."""
    span_id = format_id(span.span_id)
    trace_id = span_id if span.trace_id == span.span_id else format_id(span.trace_id)
    data: dict[str, Any] = {
        "name": span.name,
        "type": span.span_type,
        "function_name": span.function_name,
        "seq": span.seq,
    }
    problems: list[str] = []
    output_problems: list[str] = list(span.problems or ())
    if span.plain_input is not None:
        data["input"] = list(span.plain_input)
    elif span.input is not None:
        data["input"] = span.input.value
        if span.input.meta is not None:
            data["input_meta"] = span.input.meta
        problems.extend(span.input.problems)
    if span.plain_output is not NO_VALUE:
        data["output"] = span.plain_output
    elif span.output is not None:
        data["output"] = span.output.value
        if span.output.meta is not None:
            data["output_meta"] = span.output.meta
        output_problems.extend(span.output.problems)
    if output_problems:
        data["output_problems"] = output_problems
    if span.error is not None:
        data["error"] = span.error
        data["error_source"] = "code"
        data["error_type"] = span.error_type
        text = _traceback_text(span.traceback)
        if text:
            data["traceback"] = text
    contexts: list[dict[str, Any]] = []
    if span.usage:
        usage = dict(span.usage)
        usage["durationMs"] = round(span.duration_ms, 3)
        contexts.append({"type": "usage", **usage})
    if span.contexts:
        contexts.extend(span.contexts)
    if contexts:
        data["contexts"] = contexts
    if span.metadata:
        data["metadata"] = span.metadata
    runtime: dict[str, Any] = {"thread_id": span.thread_id}
    thread_name = (names if names is not None else thread_names()).get(span.thread_id)
    if thread_name is not None:
        runtime["thread_name"] = thread_name
    data["runtime"] = runtime
    if span.otel is not None:
        data["otel"] = {"trace_id": span.otel[0], "span_id": span.otel[1]}
    data["replayable"] = not problems
    if problems:
        data["not_replayable"] = problems

    raw: dict[str, Any] = {
        "id": span_id,
        "trace_id": trace_id,
        "started_at": iso_from_ns(span.start_ns),
        "ended_at": iso_from_ns(span.end_ns),
        "span_origin": _ORIGIN,
        "span_data": data,
    }
    if span.parent_id is not None:
        raw["parent_id"] = format_id(span.parent_id)
    record: dict[str, Any] = {
        "id": span_id,
        "traceId": trace_id,
        "sourceTraceId": trace_id,
        "type": "sdk-function",
        "source": SOURCE,
        "traceFunctionKey": span.key,
        "sdkVersion": __version__,
        "rawSpan": raw,
    }
    replay = span.replay
    if replay is not None:
        raw["input_source_span_id"] = replay.source_span_id
        record["experimentId"] = replay.test_run_id
        record["testRunId"] = replay.test_run_id
    if span.mock_source is not None:
        record["mocked"] = True
        record["mockTarget"] = "output"
        record["mockSource"] = span.mock_source

    trace: dict[str, Any] | None = None
    if span.completes_trace:
        root = span.root
        external: dict[str, Any] = {
            "id": trace_id,
            "started_at": iso_from_ns(root.start_ns),
            "ended_at": iso_from_ns(max(root.end_ns, span.end_ns)),
            "name": root.name,
        }
        trace = {
            "id": trace_id,
            "type": "sdk-function",
            "source": SOURCE,
            "traceFunctionKey": root.key,
            "completed": True,
            "expectedSpanCount": span.completes_trace,
            "externalTrace": external,
        }
        if replay is not None:
            external["input_source_trace_id"] = replay.source_trace_id
            trace["experimentId"] = replay.test_run_id
            trace["testRunId"] = replay.test_run_id
    return record, trace
