"""Helpers of the server tests: an in-process client that checks every answer, and raw records
shaped like the Bitfab SDKs' (PROTOCOL.md), written out as plain JSON on purpose."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Iterable
from contextlib import AbstractContextManager
from typing import Any

import anyio.from_thread
import httpx

BASE = "2026-11-27T10:00:0"


def at(second: float) -> str:
    """A protocol timestamp ``second`` seconds (0-9.99) after 2026-11-27T10:00:00Z."""
    return f"{BASE}{second:08.6f}Z"


def span_record(
    span_id: str,
    trace_id: str,
    *,
    parent: str | None = None,
    key: str = "triage",
    name: str | None = None,
    start: float = 0.0,
    end: float = 0.5,
    input: Any = None,
    output: Any = "ok",
    run: str | None = None,
    source_span: str | None = None,
    contexts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """An ``external_span`` record as the Python Bitfab SDK writes it."""
    raw: dict[str, Any] = {
        "id": span_id,
        "trace_id": trace_id,
        "started_at": at(start),
        "ended_at": at(end),
        "span_origin": {"name": "bitfab-python", "version": "1.0.0", "instrumentation": "sdk"},
        "span_data": {
            "name": name or key,
            "type": "function",
            "input": [] if input is None else input,
            "input_meta": {"v": 1, "kwarg_names": []},
            "output": output,
            "output_meta": {"v": 1, "values": {}},
            "function_name": name or key,
            "contexts": contexts or [],
        },
    }
    if parent is not None:
        raw["parent_id"] = parent
    record: dict[str, Any] = {
        "id": span_id,
        "traceId": trace_id,
        "sourceTraceId": trace_id,
        "type": "sdk-function",
        "source": "python-sdk-function",
        "traceFunctionKey": key,
        "sdkVersion": "1.0.0",
        "rawSpan": raw,
    }
    if run is not None:
        record["experimentId"] = record["testRunId"] = run
        raw["input_source_span_id"] = source_span
    return record


def trace_record(
    trace_id: str, *, key: str = "triage", expected: int = 1, run: str | None = None
) -> dict[str, Any]:
    """An ``external_trace`` completion record."""
    record: dict[str, Any] = {
        "id": trace_id,
        "type": "sdk-function",
        "source": "python-sdk-function",
        "traceFunctionKey": key,
        "completed": True,
        "expectedSpanCount": expected,
        "externalTrace": {"id": trace_id, "started_at": at(0), "ended_at": at(1), "name": key},
    }
    if run is not None:
        record["experimentId"] = record["testRunId"] = run
    return record


def otlp(*carried: tuple[str, dict[str, Any] | str]) -> dict[str, Any]:
    """An OTLP/JSON ExportTraceServiceRequest carrying Bitfab records, as the other SDKs send.

    Each item is ``(operation, record)``; a record given as a string is sent as it is.
    """
    spans = []
    for n, (operation, record) in enumerate(carried):
        payload = record if isinstance(record, str) else json.dumps(record)
        spans.append(
            {
                "traceId": f"{n:032x}",
                "spanId": f"{n:016x}",
                "name": operation,
                "kind": 1,
                "startTimeUnixNano": "1795773600000000000",
                "endTimeUnixNano": "1795773600500000000",
                "attributes": [
                    {"key": "bitfab.operation", "value": {"stringValue": operation}},
                    {"key": "bitfab.payload", "value": {"stringValue": payload}},
                ],
            }
        )
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "app"}}]
                },
                "scopeSpans": [{"scope": {"name": "bitfab"}, "spans": spans}],
            }
        ]
    }


class Api:
    """A synchronous client of an ASGI app served in-process (no socket).

    Every answer is checked against the contract: an error is ``{error, detail, requestId}``
    with nothing in it from ``secrets`` (key secrets, the store's path) and no trace of a
    stack or SQL; a success is a non-empty JSON object without a top-level ``error``.
    """

    def __init__(
        self,
        app: Any,
        *,
        key: str | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        self._portal_cm: AbstractContextManager[anyio.from_thread.BlockingPortal] = (
            anyio.from_thread.start_blocking_portal()
        )
        self.portal = self._portal_cm.__enter__()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {key}"} if key else {},
            timeout=60,
        )
        self.secrets = [s for s in secrets if s]
        self.responses: list[httpx.Response] = []

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = self.portal.call(lambda: self.client.request(method, url, **kwargs))
        self.check(response)
        return response

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def run(self, fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """Run an async function (e.g. many requests with ``asyncio.gather``) on the portal."""
        return self.portal.call(fn)

    def check(self, response: httpx.Response) -> None:
        self.responses.append(response)
        check_answer(response, self.secrets)

    def close(self) -> None:
        self.portal.call(self.client.aclose)
        self._portal_cm.__exit__(None, None, None)


def check_answer(response: httpx.Response, secrets: Iterable[str] = ()) -> None:
    """The contract every answer keeps (E11)."""
    assert response.headers.get("content-type", "").startswith("application/json"), response.text
    body = response.json()
    assert isinstance(body, dict), body
    if response.status_code >= 400:
        assert set(body) >= {"error", "detail", "requestId"}, body
        assert body["requestId"] == response.headers["x-request-id"]
        assert isinstance(body["error"], str) and isinstance(body["detail"], str)
        text = response.text
        for leak in ("Traceback", 'File "', "sqlite", "SELECT ", "INSERT ", ".db", "bfk_"):
            assert leak not in text, (leak, text)
        for secret in secrets:
            assert secret not in text, text
        if response.status_code in (429, 503):
            assert int(response.headers["retry-after"]) >= 1
        assert response.status_code != 500 or body["error"] in ("internal", "store_error")
    else:
        assert body != {} or response.request.url.path.endswith(("heartbeat", "interrupt"))
        assert "error" not in body, body
