"""Replay against a bitfab server: PROTOCOL.md's replay endpoints behind the ``Backend`` interface.

The server's answers are treated as hostile data (RELIABILITY.md D8, D9):

- bodies are streamed with a byte counter (``max_response_bytes``, 64 MiB by default), gzip and
  deflate are decoded here with the same counter, and a body with more than
  ``max_json_values`` commas is refused before parsing; JSON nested deeper than 1024 levels,
  ``NaN`` literals and truncated JSON are parse errors;
- an answer must be ``application/json`` and a JSON object without a top-level ``error`` key;
- redirects are never followed (the API key never goes to another host);
- every failure is a :class:`~bitfab.exceptions.ReplayError` naming the server, the request
  and the HTTP status, never showing the API key.

GETs (reading spans and trees) are retried twice on connection errors and on 429/502/503/504;
POSTs are not (starting a run twice would make two runs).
"""

from __future__ import annotations

import gzip
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn
from urllib.parse import quote

import httpx
import orjson

from bitfab.config import insecure_url_problem
from bitfab.exceptions import ConfigError, ReplayError
from bitfab.export.http import (
    GZIP_MIN_BYTES,
    RETRYABLE_STATUSES,
    BodyError,
    client_headers,
    parse_retry_after,
    read_body,
    scrub,
)
from bitfab.playback.backend import StartedRun
from bitfab.playback.service import ItemRef

__all__ = ["RemoteBackend"]

DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=60.0, write=30.0, pool=5.0)
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
MAX_JSON_VALUES = 8_000_000
MAX_ERROR_BODY_BYTES = 64 * 1024
GET_RETRIES = 2
MAX_RETRY_WAIT = 10.0
_TOKEN_KEYS = ("input", "output", "cached", "total")


class _Retryable(Exception):
    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class RemoteBackend:
    """Replay through a bitfab server's replay endpoints (PROTOCOL.md).

    Args:
        url: the server's root URL; ``test_run_url`` is this plus the path the server gives.
        api_key: sent as ``Authorization: Bearer ...``; never shown.
        transport: an ``httpx`` transport (tests pass ``httpx.MockTransport``).
        sleep: how to wait between GET retries (tests pass a recorder).
    """

    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        max_json_values: int = MAX_JSON_VALUES,
        get_retries: int = GET_RETRIES,
        sleep: Callable[[float], None] = time.sleep,
        allow_insecure_http: bool = False,
    ) -> None:
        problem = insecure_url_problem(url, allow_insecure_http=allow_insecure_http)
        if problem is not None:
            raise ConfigError(problem)
        self.url = url.rstrip("/")
        self._api_key = api_key
        self.max_response_bytes = max_response_bytes
        self.max_json_values = max_json_values
        self.get_retries = get_retries
        self._sleep = sleep
        headers = client_headers(api_key)
        headers["Accept-Encoding"] = "gzip, deflate"
        self._client = httpx.Client(
            transport=transport, headers=headers, timeout=timeout, follow_redirects=False
        )
        self._experiments: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"RemoteBackend(url={self.url!r})"

    # -- the Backend protocol ---------------------------------------------------------------------

    def start_run(
        self,
        key: str,
        *,
        limit: int | None,
        trace_ids: Sequence[str] | None,
        name: str | None,
        options: Mapping[str, Any],
        code_version: str | None,
        dry_run: bool,
    ) -> StartedRun:
        body: dict[str, Any] = {
            "traceFunctionKey": key,
            "name": name,
            "metadata": {"options": dict(options), "codeVersion": code_version},
            "dryRun": dry_run,
        }
        if trace_ids is not None:
            body["traceIds"] = list(trace_ids)
        elif limit is not None:
            body["limit"] = limit
        path = "/api/sdk/replay/start"
        answer = self._call("POST", path, body=body)
        assert answer is not None
        items = answer.get("items")
        if not isinstance(items, list):
            self._invalid(path, "`items` is not a list")
        refs = [self._item_ref(path, index, entry) for index, entry in enumerate(items)]
        run_id = answer.get("testRunId")
        if run_id is not None and not (isinstance(run_id, str) and run_id):
            self._invalid(path, "`testRunId` is not a string")
        experiment_id = answer.get("experimentId")
        run_url: str | None = None
        if run_id is not None:
            self._experiments[run_id] = (
                experiment_id if isinstance(experiment_id, str) and experiment_id else run_id
            )
            run_url = self._absolute(answer.get("testRunUrl"))
        unknown = answer.get("unknownTraceIds")
        unknown_ids = [str(item) for item in unknown] if isinstance(unknown, list) else []
        return StartedRun(run_id, run_url, refs, unknown_ids)

    def fetch_span(self, span_id: str) -> dict[str, Any] | None:
        answer = self._call(
            "GET",
            f"/api/sdk/externalSpans/{quote(span_id, safe='')}",
            params={"view": "replay"},
            missing_ok=True,
        )
        if answer is None:
            return None
        record = answer.get("record")
        if isinstance(record, dict):
            return record
        raw = answer.get("rawData")
        data = raw.get("span_data") if isinstance(raw, Mapping) else None
        record_id = answer.get("id")
        record_id = record_id if isinstance(record_id, str) else span_id
        return {
            "id": record_id,
            "traceId": answer.get("externalTraceId"),
            "rawSpan": {"id": record_id, "span_data": data},
        }

    def span_tree(self, span_id: str) -> dict[str, Any] | None:
        answer = self._call(
            "GET", f"/api/sdk/replay/spanTree/{quote(span_id, safe='')}", missing_ok=True
        )
        if answer is None:
            return None
        root = answer.get("root")
        return root if isinstance(root, dict) else None

    def complete_run(
        self,
        run_id: str,
        *,
        items: Sequence[Mapping[str, Any]],
        summary: Mapping[str, Any],
        status: str,
    ) -> None:
        self._call(
            "POST",
            "/api/sdk/replay/complete",
            body={
                "experimentId": self._experiments.get(run_id, run_id),
                "testRunId": run_id,
                "items": [dict(item) for item in items],
                "summary": dict(summary),
                "status": status,
            },
        )

    def interrupt_run(self, run_id: str) -> None:
        self._call(
            "POST",
            "/api/sdk/replay/interrupt",
            body={"experimentId": self._experiments.get(run_id, run_id), "testRunId": run_id},
        )

    def close(self) -> None:
        self._client.close()

    # -- any other GET of the server's API (the CLI reads /api/v1 with it) -----------------------

    def get_json(
        self, path: str, params: Mapping[str, str] | None = None, *, missing_ok: bool = False
    ) -> dict[str, Any] | None:
        """GET ``path`` with the same checks and retries as the replay calls.

        Returns the answer's JSON object, or None for a 404 when ``missing_ok``. Raises
        :class:`~bitfab.exceptions.ReplayError` for anything else that isn't a JSON object.
        """
        return self._call("GET", path, params=params, missing_ok=missing_ok)

    # -- answers ----------------------------------------------------------------------------------

    def _absolute(self, path: object) -> str | None:
        if not isinstance(path, str) or not path:
            return None
        if path.startswith(("https://", "http://")):
            return path
        return self.url + (path if path.startswith("/") else "/" + path)

    def _item_ref(self, path: str, index: int, entry: object) -> ItemRef:
        if not isinstance(entry, Mapping):
            self._invalid(path, f"item {index} is not an object")
        trace_id = _first(entry, ("originalTraceId", "sourceTraceId"), str)
        span_id = _first(entry, ("originalSpanId", "sourceSpanId", "externalSpanId"), str)
        if not trace_id or not span_id:
            self._invalid(path, f"item {index} has no originalTraceId / originalSpanId")
        duration = _first(entry, ("originalDurationMs", "durationMs"), float)
        tokens = _first(entry, ("originalTokens", "tokens"), dict) or {}
        return ItemRef(
            original_trace_id=trace_id,
            original_span_id=span_id,
            original_duration_ms=duration,
            original_tokens={
                name: value
                for name in _TOKEN_KEYS
                if isinstance(value := tokens.get(name), int) and not isinstance(value, bool)
            },
            original_model=_first(entry, ("originalModel", "model"), str),
        )

    def _invalid(self, path: str, what: str) -> NoReturn:
        raise ReplayError(f"the server at {self.url} answered POST {path} with {what}")

    # -- one call ---------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        missing_ok: bool = False,
    ) -> dict[str, Any] | None:
        """The answer's JSON object; None for a 404 when ``missing_ok``."""
        attempts = 1 + (self.get_retries if method == "GET" else 0)
        for attempt in range(attempts):
            try:
                return self._once(method, path, body, params, missing_ok)
            except _Retryable as exc:
                if attempt + 1 >= attempts or (
                    exc.delay is not None and exc.delay > MAX_RETRY_WAIT
                ):
                    raise ReplayError(str(exc)) from None
                self._sleep(exc.delay if exc.delay is not None else 0.5 * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        params: Mapping[str, str] | None,
        missing_ok: bool,
    ) -> dict[str, Any] | None:
        where = f"the server at {self.url} ({method} {path})"
        headers: dict[str, str] = {}
        content: bytes | None = None
        if body is not None:
            try:
                content = orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS, default=str)
            except (TypeError, orjson.JSONEncodeError) as exc:
                raise ReplayError(f"cannot encode the request to {where}: {exc}") from None
            headers["Content-Type"] = "application/json"
            if len(content) > GZIP_MIN_BYTES:
                content = gzip.compress(content, compresslevel=5, mtime=0)
                headers["Content-Encoding"] = "gzip"
        try:
            request = self._client.build_request(
                method, self.url + path, content=content, headers=headers, params=params
            )
            response = self._client.send(request, stream=True)
        except Exception as exc:
            # httpx's errors, and whatever the layers under it raise (ssl, h11).
            raise _Retryable(f"cannot reach {where}: {self._describe(exc)}") from None
        try:
            return self._answer(response, where, missing_ok)
        finally:
            response.close()

    def _answer(
        self, response: httpx.Response, where: str, missing_ok: bool
    ) -> dict[str, Any] | None:
        status = response.status_code
        if status == 404 and missing_ok:
            return None
        if 300 <= status < 400:
            location = scrub(response.headers.get("location", "?"), self._api_key, 200)
            raise ReplayError(
                f"{where} answered HTTP {status}, a redirect to {location}; bitfab does not "
                "follow redirects: set the URL to the server's final address"
            )
        if not 200 <= status < 300:
            detail = self._error_detail(response)
            message = f"{where} answered HTTP {status}: {detail}"
            if status in (401, 403):
                message += " (check the API key: BITFAB_API_KEY)"
            if status in RETRYABLE_STATUSES:
                delay = parse_retry_after(response.headers.get("retry-after"), time.time())
                raise _Retryable(message, delay)
            raise ReplayError(message)
        media = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            snippet = self._snippet(response)
            raise ReplayError(
                f"{where} answered HTTP {status} with Content-Type {media or 'none'!r} "
                f"instead of JSON: {snippet}"
            )
        try:
            raw = read_body(response, self.max_response_bytes)
        except BodyError as exc:
            raise ReplayError(f"{where} answered HTTP {status} but {exc}") from None
        except Exception as exc:
            raise _Retryable(f"{where}: the answer broke off: {self._describe(exc)}") from None
        if raw.count(b",") > self.max_json_values:
            raise ReplayError(
                f"{where} answered HTTP {status} with more than {self.max_json_values} JSON "
                "values; refused"
            )
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ReplayError(
                f"{where} answered HTTP {status} with invalid JSON ({exc}): "
                f"{scrub(raw[:120].decode('utf-8', 'replace'), self._api_key, 120)}"
            ) from None
        if not isinstance(parsed, dict):
            raise ReplayError(f"{where} answered HTTP {status} with JSON that is not an object")
        if "error" in parsed:
            raise ReplayError(
                f"{where} answered HTTP {status} with an error: {self._error_text(parsed)}"
            )
        return parsed

    def _error_detail(self, response: httpx.Response) -> str:
        try:
            raw = read_body(response, MAX_ERROR_BODY_BYTES)
        except Exception:
            return "(no readable body)"
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict) and "error" in parsed:
            return self._error_text(parsed)
        media = response.headers.get("content-type", "").split(";")[0].strip() or "no type"
        text = scrub(raw.decode("utf-8", "replace"), self._api_key, 200)
        return f"a {media} body: {text}" if text else "an empty body"

    def _snippet(self, response: httpx.Response) -> str:
        try:
            raw = read_body(response, MAX_ERROR_BODY_BYTES)
        except Exception:
            return "(unreadable)"
        return scrub(raw.decode("utf-8", "replace"), self._api_key, 200)

    def _error_text(self, body: Mapping[str, Any]) -> str:
        code, detail = body.get("error"), body.get("detail")
        text = f"{code}: {detail}" if detail is not None else str(code)
        return scrub(text, self._api_key)

    def _describe(self, exc: BaseException) -> str:
        message = scrub(str(exc), self._api_key, 200)
        return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _first(entry: Mapping[str, Any], names: tuple[str, ...], kind: type) -> Any:
    """The first of ``names`` whose value has type ``kind`` (numbers: finite, not bool)."""
    for name in names:
        value = entry.get(name)
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                return float(value)
        elif isinstance(value, kind) and value:
            return value
    return None
