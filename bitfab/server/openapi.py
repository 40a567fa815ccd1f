"""The OpenAPI 3.1 description of bitfab's own API, served at ``/api/v1/openapi.json``.

It covers the read API (``/api/v1``), bitfab's batch ingest endpoint and ``/healthz``. The
Bitfab SDK protocol endpoints (``/api/sdk``) are described in PROTOCOL.md instead: that
contract is shared with the other SDKs and is not bitfab's to redefine.
"""

from __future__ import annotations

from typing import Any

from bitfab._version import __version__
from bitfab.store.base import MAX_SEARCH_CHARS

__all__ = ["openapi_document"]

_INT64 = {"type": "integer", "format": "int64"}


def _nullable(kind: str) -> dict[str, Any]:
    return {"type": [kind, "null"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref("Error")}},
    }


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_COMMON_ERRORS = {
    "401": _error("No valid API key."),
    "403": _error("The key's scope does not allow this endpoint."),
    "503": _error("The store is busy; retry after the Retry-After delay."),
}


def _object(properties: dict[str, Any], *, required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
    }


def _schemas() -> dict[str, Any]:
    tokens = {
        "input_tokens": {"type": "integer"},
        "output_tokens": {"type": "integer"},
        "cached_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"},
    }
    record = {"type": "object", "additionalProperties": True}
    return {
        "Error": _object(
            {
                "error": {"type": "string"},
                "detail": {"type": "string"},
                "requestId": {"type": "string"},
                "fields": {
                    "type": "array",
                    "items": _object({"path": {"type": "string"}, "message": {"type": "string"}}),
                },
            },
            required=["error", "detail", "requestId"],
        ),
        "Function": _object(
            {
                "key": {"type": "string"},
                "name": _nullable("string"),
                "calls": {"type": "integer"},
                "root_calls": {"type": "integer"},
                "errors": {"type": "integer"},
                "first_seen_us": _nullable("integer"),
                "last_seen_us": _nullable("integer"),
                "p50_duration_ms": _nullable("number"),
                **tokens,
            }
        ),
        "TraceSummary": _object(
            {
                "trace_id": {"type": "string"},
                "span_id": {"type": "string"},
                "key": _nullable("string"),
                "name": _nullable("string"),
                "started_at": _nullable("string"),
                "start_us": _nullable("integer"),
                "duration_ms": _nullable("number"),
                "error": _nullable("string"),
                "test_run_id": _nullable("string"),
                "model": _nullable("string"),
                "completed": {"type": "boolean"},
                "span_count": {"type": "integer"},
                **tokens,
            }
        ),
        "SpanRecord": record,
        "RunItem": _object(
            {
                "idx": {"type": "integer"},
                "original_trace_id": _nullable("string"),
                "original_span_id": _nullable("string"),
                "replay_trace_id": _nullable("string"),
                "verdict": _nullable("string"),
                "item": record,
            }
        ),
        "Run": _object(
            {
                "id": {"type": "string"},
                "key": {"type": "string"},
                "name": _nullable("string"),
                "status": {
                    "type": "string",
                    "enum": ["running", "completed", "interrupted", "failed"],
                },
                "created_at": {"type": "string"},
                "completed_at": _nullable("string"),
                "options": record,
                "code_version": _nullable("string"),
                "summary": {"type": ["object", "null"]},
                "extra": record,
                "url": {"type": "string"},
                "items": {"type": "array", "items": _ref("RunItem")},
            },
            required=["id", "key", "status", "created_at", "url"],
        ),
        "Rejection": _object(
            {
                "kind": {"type": "string", "enum": ["span", "trace"]},
                "index": {"type": "integer"},
                "id": _nullable("string"),
                "reason": {"type": "string"},
            }
        ),
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


def openapi_document(*, max_page: int = 1000) -> dict[str, Any]:
    """The description, with ``limit``'s maximum set to the server's ``max_page``."""
    limit = _query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": max_page, "default": 50},
        f"At most this many (1 to {max_page}; above is a 422).",
    )
    key = _query("key", {"type": "string", "maxLength": 500}, "Only this traceFunctionKey (exact).")
    read: dict[str, Any] = {"security": [{"bearer": []}]}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "bitfab server",
            "version": __version__,
            "description": "Read recorded traces and test runs; ingest records in batches."
            " Errors are {error, detail, requestId}. Keys of scope read or all may read;"
            " ingest or all may ingest.",
        },
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/healthz": {
                "get": {
                    "summary": "Liveness (no key needed)",
                    "responses": {"200": _ok("Alive.", _object({"ok": {"type": "boolean"}}))},
                }
            },
            "/api/v1/functions": {
                "get": {
                    **read,
                    "summary": "Traced functions (keys) with call counts, errors, tokens",
                    "responses": {
                        "200": _ok(
                            "Ordered by key.",
                            _object({"functions": {"type": "array", "items": _ref("Function")}}),
                        ),
                        **_COMMON_ERRORS,
                    },
                }
            },
            "/api/v1/traces": {
                "get": {
                    **read,
                    "summary": "Traces newest first, one summary per root span",
                    "parameters": [
                        key,
                        limit,
                        _query(
                            "before_us",
                            _INT64,
                            "Only roots that started before this (microseconds since the"
                            " epoch); pass next_before_us for the next page.",
                        ),
                        _query("errors", {"type": "boolean"}, "Only traces whose root failed."),
                        _query("include_replays", {"type": "boolean"}, "Also replay traces."),
                        _query(
                            "search",
                            {"type": "string", "maxLength": MAX_SEARCH_CHARS},
                            "Literal, case-insensitive substring of the root's input.",
                        ),
                    ],
                    "responses": {
                        "200": _ok(
                            "A page of traces.",
                            _object(
                                {
                                    "traces": {"type": "array", "items": _ref("TraceSummary")},
                                    "next_before_us": _nullable("integer"),
                                }
                            ),
                        ),
                        "422": _error("A parameter is invalid (the field is named)."),
                        **_COMMON_ERRORS,
                    },
                }
            },
            "/api/v1/traces/{traceId}": {
                "get": {
                    **read,
                    "summary": "A trace: its spans (by start) and its completion record",
                    "parameters": [_path("traceId", "The trace id.")],
                    "responses": {
                        "200": _ok(
                            "The trace.",
                            _object(
                                {
                                    "trace_id": {"type": "string"},
                                    "spans": {"type": "array", "items": _ref("SpanRecord")},
                                    "completion": {"type": ["object", "null"]},
                                }
                            ),
                        ),
                        "404": _error("No such trace."),
                        **_COMMON_ERRORS,
                    },
                }
            },
            "/api/v1/spans/{spanId}": {
                "get": {
                    **read,
                    "summary": "One span record, as it was recorded",
                    "parameters": [_path("spanId", "The span id.")],
                    "responses": {
                        "200": _ok("The span.", _object({"span": _ref("SpanRecord")})),
                        "404": _error("No such span."),
                        **_COMMON_ERRORS,
                    },
                }
            },
            "/api/v1/runs": {
                "get": {
                    **read,
                    "summary": "Test runs newest first (without their items)",
                    "parameters": [key, limit],
                    "responses": {
                        "200": _ok(
                            "A page of runs.",
                            _object({"runs": {"type": "array", "items": _ref("Run")}}),
                        ),
                        "422": _error("A parameter is invalid (the field is named)."),
                        **_COMMON_ERRORS,
                    },
                }
            },
            "/api/v1/runs/{runId}": {
                "get": {
                    **read,
                    "summary": "A test run with its items",
                    "parameters": [_path("runId", "The test run id.")],
                    "responses": {
                        "200": _ok("The run.", _object({"run": _ref("Run")})),
                        "404": _error("No such run."),
                        **_COMMON_ERRORS,
                    },
                }
            },
            "/api/bitfab/v1/ingest": {
                "post": {
                    "security": [{"bearer": []}],
                    "summary": "Store span and trace records (PROTOCOL.md) in one batch",
                    "description": "Upsert by id keeping the first; committed before the answer."
                    " Invalid records are rejected one by one; the rest is stored. Any key of"
                    " scope ingest or all. The body may be gzip (Content-Encoding).",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": _object(
                                    {
                                        "spans": {"type": "array", "items": _ref("SpanRecord")},
                                        "traces": {"type": "array", "items": _ref("SpanRecord")},
                                    },
                                    required=[],
                                )
                            }
                        },
                    },
                    "responses": {
                        "200": _ok(
                            "What was stored; accepted counts duplicates too.",
                            _object(
                                {
                                    "accepted": {"type": "integer"},
                                    "duplicates": {"type": "integer"},
                                    "rejected": {"type": "array", "items": _ref("Rejection")},
                                }
                            ),
                        ),
                        "400": _error("The body is not JSON (or not valid gzip)."),
                        "413": _error("The body is too large."),
                        "415": _error("Not application/json, or an unsupported encoding."),
                        "422": _error("The body is not an object of arrays."),
                        "429": _error("Too many recording requests in flight; retry later."),
                        "507": _error("The store cannot write (disk full)."),
                        **_COMMON_ERRORS,
                    },
                }
            },
        },
    }
