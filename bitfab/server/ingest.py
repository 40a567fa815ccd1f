"""Recording: every envelope (OTLP/JSON, one span, one trace, bitfab's batch) feeds one ingest.

:func:`ingest` checks each record (the fields replay depends on, ids, timestamps), hands the
valid ones to ``store.write`` (one transaction, upsert by id keeping the first, committed before
it returns) and reports the rest per record. A 2xx therefore means the data is on disk, and a
retried batch never adds a row twice.

For the kill -9 tests (RELIABILITY.md B12) the module has a test hook, ``BITFAB_TEST_CRASH_AT``:
see :class:`CrashPoint`. It is read once, at import, and is inert when unset.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bitfab.server.auth import ServerContext, guarded
from bitfab.server.body import parse_json, read_json, require_object, type_name
from bitfab.server.errors import ApiError, FieldError, json_response
from bitfab.store.base import Rejection, Store, WriteResult
from bitfab.store.records import iso_to_us

__all__ = ["CrashPoint", "IngestResult", "check_span", "check_trace", "ingest", "routes"]

MAX_ID_CHARS = 200
MAX_KEY_CHARS = 500
OPERATION = "bitfab.operation"
PAYLOAD = "bitfab.payload"


@dataclass(frozen=True)
class IngestResult:
    """What one ingest did: the store's counts, plus every rejection with its input index."""

    write: WriteResult
    rejected: tuple[Rejection, ...]
    trace_ids: tuple[str, ...] = ()
    """The trace ids of the records that were not rejected, first seen first."""

    @property
    def accepted(self) -> int:
        return self.write.accepted

    @property
    def duplicates(self) -> int:
        return self.write.spans_duplicate + self.write.traces_duplicate


# -- checks ------------------------------------------------------------------------------------


def _id(record: Mapping[str, Any], name: str, path: str, *, required: bool) -> str | None:
    value = record.get(name)
    if value is None or (value == "" and not required):  # "" for "none", as the store reads it
        if required:
            raise FieldError(f"{path}{name}", "is required")
        return None
    if not isinstance(value, str) or not value:
        raise FieldError(f"{path}{name}", f"must be a non-empty string, got {type_name(value)}")
    if len(value) > MAX_ID_CHARS:
        raise FieldError(f"{path}{name}", f"is longer than {MAX_ID_CHARS} characters")
    return value


def _timestamp(record: Mapping[str, Any], name: str, path: str, *, required: bool) -> int | None:
    value = record.get(name)
    if value is None:
        if required:
            raise FieldError(f"{path}{name}", "is required")
        return None
    moment = iso_to_us(value)
    if moment is None:
        raise FieldError(f"{path}{name}", "must be an ISO-8601 timestamp")
    return moment


def _interval(record: Mapping[str, Any], path: str, *, start_required: bool) -> None:
    start = _timestamp(record, "started_at", path, required=start_required)
    end = _timestamp(record, "ended_at", path, required=False)
    if start is not None and end is not None and end < start:
        raise FieldError(f"{path}ended_at", "is before started_at")


def _key(record: Mapping[str, Any]) -> None:
    key = record.get("traceFunctionKey")
    if key is not None and (not isinstance(key, str) or len(key) > MAX_KEY_CHARS):
        raise FieldError("traceFunctionKey", f"must be a string of at most {MAX_KEY_CHARS} chars")


def check_span(record: Any) -> None:
    """Raise :class:`FieldError` (with the field's path) if a span record can't be stored."""
    if not isinstance(record, dict):
        raise FieldError("$", f"a span record must be a JSON object, got {type_name(record)}")
    span_id = _id(record, "id", "", required=True)
    trace_id = _id(record, "traceId", "", required=True)
    for name in ("sourceTraceId", "experimentId", "testRunId"):
        _id(record, name, "", required=False)
    _key(record)
    raw = record.get("rawSpan")
    if not isinstance(raw, dict):
        raise FieldError("rawSpan", f"must be an object, got {type_name(raw)}")
    if _id(raw, "id", "rawSpan.", required=True) != span_id:
        raise FieldError("rawSpan.id", "differs from id")
    if _id(raw, "trace_id", "rawSpan.", required=True) != trace_id:
        raise FieldError("rawSpan.trace_id", "differs from traceId")
    for name in ("parent_id", "input_source_span_id"):
        _id(raw, name, "rawSpan.", required=False)
    _interval(raw, "rawSpan.", start_required=True)
    data = raw.get("span_data")
    if data is not None and not isinstance(data, dict):
        raise FieldError("rawSpan.span_data", f"must be an object, got {type_name(data)}")


def check_trace(record: Any) -> None:
    """Raise :class:`FieldError` if a trace completion record can't be stored."""
    if not isinstance(record, dict):
        raise FieldError("$", f"a trace record must be a JSON object, got {type_name(record)}")
    _id(record, "id", "", required=True)
    for name in ("experimentId", "testRunId", "sessionId"):
        _id(record, name, "", required=False)
    _key(record)
    count = record.get("expectedSpanCount")
    if count is not None and (
        isinstance(count, bool) or not isinstance(count, int) or not 0 <= count < 2**53
    ):
        raise FieldError("expectedSpanCount", "must be a non-negative integer")
    for name in ("completed", "dropped"):
        if record.get(name) is not None and not isinstance(record.get(name), bool):
            raise FieldError(name, "must be a boolean")
    external = record.get("externalTrace")
    if external is not None:
        if not isinstance(external, dict):
            raise FieldError("externalTrace", f"must be an object, got {type_name(external)}")
        _interval(external, "externalTrace.", start_required=False)
        _id(external, "input_source_trace_id", "externalTrace.", required=False)


# -- test hook: crash points (RELIABILITY.md B12) ----------------------------------------------


class CrashPoint:
    """A TEST HOOK: the server kills itself with SIGKILL at one point of the ingest path.

    Only for the kill -9 tests (``tests/e2e/test_e2e_crash.py``); never set it in production.
    Armed by environment variables read once, when this module is imported:

    - ``BITFAB_TEST_CRASH_AT``: where to die, one of

      - ``before_commit``: the batch is checked, nothing of it is written yet;
      - ``mid_batch``: "after writing some but not all records of the batch". ``SQLiteStore``
        writes a whole batch in one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT`` inside
        ``store.write``) and nothing of this module runs between its rows, so for that store
        this is the same point, with the same outcome, as ``before_commit``: none of the batch
        survives. (A store that commits a batch in pieces would need its own hook there.)
      - ``after_commit_before_response``: ``store.write`` returned, so the batch is committed,
        and the client never gets its answer (it retries; the server must dedupe).

    - ``BITFAB_TEST_CRASH_AFTER``: die on the Nth ingest request (default 1: the first). Every
      call of :func:`ingest` is one request, whatever the envelope.

    Unset (or unknown values: a warning, then inert), the cost is one check of a module global
    per ingest request. ``os.kill(os.getpid(), SIGKILL)`` ends the process at once: no
    response, no shutdown, no store close, as with a power cut of the process.
    """

    POINTS = ("before_commit", "mid_batch", "after_commit_before_response")

    def __init__(self, point: str, after: int = 1) -> None:
        if point not in self.POINTS:
            raise ValueError(f"crash point must be one of {', '.join(self.POINTS)}: {point!r}")
        if after < 1:
            raise ValueError("the request number of a crash point must be >= 1")
        self.point = point
        self.after = after
        self._requests = 0
        self._lock = threading.Lock()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> CrashPoint | None:
        """The hook the environment asks for, or None (the normal case)."""
        point = environ.get("BITFAB_TEST_CRASH_AT", "").strip()
        if not point:
            return None
        log = logging.getLogger("bitfab.server")
        try:
            hook = cls(point, int(environ.get("BITFAB_TEST_CRASH_AFTER", "1").strip() or "1"))
        except ValueError as exc:
            log.warning("BITFAB_TEST_CRASH_AT ignored (a test hook): %s", exc)
            return None
        log.warning(
            "TEST HOOK armed: this server kills itself (SIGKILL) at %s of ingest request %d",
            hook.point,
            hook.after,
        )
        return hook

    def point_of_this_request(self) -> str | None:
        """Count one ingest request; the crash point if it is the one to die in, else None."""
        with self._lock:
            self._requests += 1
            return self.point if self._requests == self.after else None

    @staticmethod
    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)


_CRASH: CrashPoint | None = CrashPoint.from_environ(os.environ)


# -- the one ingest path -----------------------------------------------------------------------


def ingest(store: Store, spans: Sequence[Any], traces: Sequence[Any] = ()) -> IngestResult:
    """Check and store records (blocking: call it from a worker thread).

    Rejections carry the record's index in ``spans`` or ``traces`` and the field that failed.
    Raises the store's errors (busy, full) for the whole batch: nothing was committed then.
    """
    crash_at = None if _CRASH is None else _CRASH.point_of_this_request()  # test hook
    rejected: list[Rejection] = []
    good_spans: list[dict[str, Any]] = []
    span_index: list[int] = []
    for index, record in enumerate(spans):
        try:
            check_span(record)
        except FieldError as exc:
            rejected.append(Rejection("span", index, _record_id(record), str(exc)))
        else:
            good_spans.append(record)
            span_index.append(index)
    good_traces: list[dict[str, Any]] = []
    trace_index: list[int] = []
    for index, record in enumerate(traces):
        try:
            check_trace(record)
        except FieldError as exc:
            rejected.append(Rejection("trace", index, _record_id(record), str(exc)))
        else:
            good_traces.append(record)
            trace_index.append(index)
    if crash_at is not None and crash_at != "after_commit_before_response":
        CrashPoint.die()  # before_commit; mid_batch (the same point for a one-transaction store)
    result = store.write(good_spans, good_traces) if good_spans or good_traces else WriteResult()
    if crash_at is not None:
        CrashPoint.die()  # after_commit_before_response: committed, never answered
    refused: dict[tuple[str, int], Rejection] = {}
    for rejection in result.rejected:  # indexes into what was written -> indexes of the input
        original = (span_index if rejection.kind == "span" else trace_index)[rejection.index]
        refused[(rejection.kind, original)] = Rejection(
            rejection.kind, original, rejection.id, rejection.reason
        )
    rejected.extend(refused.values())
    rejected.sort(key=lambda r: (r.kind != "span", r.index))
    trace_ids = [
        str(record["traceId"])
        for index, record in zip(span_index, good_spans, strict=True)
        if ("span", index) not in refused
    ] + [
        str(record["id"])
        for index, record in zip(trace_index, good_traces, strict=True)
        if ("trace", index) not in refused
    ]
    return IngestResult(
        write=result, rejected=tuple(rejected), trace_ids=tuple(dict.fromkeys(trace_ids))
    )


def _record_id(record: Any) -> str | None:
    if isinstance(record, dict):
        value = record.get("id")
        if isinstance(value, str):
            return value[:MAX_ID_CHARS]
    return None


def _rejection_json(rejection: Rejection) -> dict[str, Any]:
    return {
        "kind": rejection.kind,
        "index": rejection.index,
        "id": rejection.id,
        "reason": rejection.reason,
    }


# -- envelopes ---------------------------------------------------------------------------------


def _list(body: Mapping[str, Any], name: str) -> list[Any]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ApiError.invalid(FieldError(f"body.{name}", "must be an array"))
    return value


def otlp_records(body: Mapping[str, Any]) -> tuple[list[Any], list[Any], list[str]]:
    """Span and trace records carried in an OTLP/JSON ``ExportTraceServiceRequest``.

    Returns the span records, the trace records and one message per OTLP span that could not
    be read (``internal_trace`` carriers are skipped silently).
    """
    spans: list[Any] = []
    traces: list[Any] = []
    problems: list[str] = []
    for r, resource in enumerate(_list(body, "resourceSpans")):
        if not isinstance(resource, dict):
            problems.append(f"resourceSpans[{r}]: not an object")
            continue
        for s, scope in enumerate(_list(resource, "scopeSpans")):
            if not isinstance(scope, dict):
                problems.append(f"resourceSpans[{r}].scopeSpans[{s}]: not an object")
                continue
            for i, carrier in enumerate(_list(scope, "spans")):
                where = f"resourceSpans[{r}].scopeSpans[{s}].spans[{i}]"
                try:
                    operation, record = _carried(carrier, where)
                except FieldError as exc:
                    problems.append(str(exc))
                    continue
                if operation == "external_span":
                    spans.append(record)
                elif operation == "external_trace":
                    traces.append(record)
    return spans, traces, problems


def _carried(carrier: Any, where: str) -> tuple[str, Any]:
    if not isinstance(carrier, dict):
        raise FieldError(where, "not an object")
    attributes = carrier.get("attributes")
    if not isinstance(attributes, list):
        raise FieldError(f"{where}.attributes", "must be an array")
    values: dict[str, Any] = {}
    for attribute in attributes:
        if isinstance(attribute, dict) and attribute.get("key") in (OPERATION, PAYLOAD):
            value = attribute.get("value")
            values[attribute["key"]] = value.get("stringValue") if isinstance(value, dict) else None
    operation = values.get(OPERATION)
    if operation == "internal_trace":
        return operation, None
    if operation not in ("external_span", "external_trace"):
        raise FieldError(f"{where}.attributes", f"{OPERATION} is missing or unknown")
    payload = values.get(PAYLOAD)
    if not isinstance(payload, str):
        raise FieldError(f"{where}.attributes", f"{PAYLOAD} must be a string value")
    try:
        record = parse_json(payload.encode("utf-8", "surrogatepass"))
    except ApiError as exc:
        raise FieldError(f"{where}.attributes.{PAYLOAD}", exc.detail) from None
    return operation, record


def routes(ctx: ServerContext) -> list[Route]:
    """The recording endpoints (scope ``ingest``; ``sim-plan`` for any key)."""

    async def write(spans: Sequence[Any], traces: Sequence[Any]) -> IngestResult:
        return await ctx.call(ingest, ctx.store, spans, traces)

    async def otlp_traces(request: Request) -> Response:
        body = require_object(await read_json(request, ctx.limits))
        spans, traces, problems = otlp_records(body)
        result = await write(spans, traces)
        partial: dict[str, Any] = {}
        messages = problems + [f"{r.kind} {r.id or r.index}: {r.reason}" for r in result.rejected]
        if messages:
            partial = {
                "rejectedSpans": len(messages),
                "errorMessage": "; ".join(messages[:20])
                + (f"; and {len(messages) - 20} more" if len(messages) > 20 else ""),
            }
        ids = {trace_id: trace_id for trace_id in result.trace_ids}
        return json_response({"partialSuccess": partial, "traceIds": ids})

    async def one(request: Request, kind: str) -> Response:
        record = require_object(await read_json(request, ctx.limits))
        try:
            (check_span if kind == "span" else check_trace)(record)
        except FieldError as exc:
            raise ApiError.invalid(FieldError(f"body.{exc.path}", exc.message)) from None
        spans, traces = ([record], []) if kind == "span" else ([], [record])
        result = await write(spans, traces)
        if result.rejected:  # the store's own refusal (a value it cannot keep)
            raise ApiError.invalid(FieldError("body", result.rejected[0].reason))
        return json_response({"id": record["id"]})

    async def external_spans(request: Request) -> Response:
        return await one(request, "span")

    async def external_traces(request: Request) -> Response:
        return await one(request, "trace")

    async def batch(request: Request) -> Response:
        body = require_object(await read_json(request, ctx.limits))
        result = await write(_list(body, "spans"), _list(body, "traces"))
        return json_response(
            {
                "accepted": result.accepted,
                "duplicates": result.duplicates,
                "rejected": [_rejection_json(r) for r in result.rejected],
            }
        )

    async def sim_plan(request: Request) -> Response:
        return json_response({"nodes": []})

    return [
        Route(
            "/api/sdk/otel/v1/traces",
            guarded(ctx, "ingest", otlp_traces, ingest=True),
            methods=["POST"],
        ),
        Route(
            "/api/sdk/externalSpans",
            guarded(ctx, "ingest", external_spans, ingest=True),
            methods=["POST"],
        ),
        Route(
            "/api/sdk/externalTraces",
            guarded(ctx, "ingest", external_traces, ingest=True),
            methods=["POST"],
        ),
        Route(
            "/api/bitfab/v1/ingest", guarded(ctx, "ingest", batch, ingest=True), methods=["POST"]
        ),
        # Recording SDKs ask for it; any valid key may.
        Route("/api/sdk/sim-plan", guarded(ctx, None, sim_plan), methods=["GET"]),
    ]
