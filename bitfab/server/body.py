"""Reading request bodies within limits: size on the wire, size after gunzip, time, strict JSON.

The body is streamed with counters: a ``Content-Length`` over the wire limit is refused before
a byte is read, a chunked body is refused as soon as it passes the limit, and a gzip body is
inflated piece by piece with ``max_length`` so that a small bomb never grows past the
decompressed limit in memory. JSON is parsed strictly (no ``NaN``/``Infinity`` literals).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
from starlette.requests import ClientDisconnect, Request

from bitfab.server.errors import ApiError, FieldError

__all__ = ["Limits", "read_json", "require_object"]

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one server accepts. Defaults suit one team server on a small machine.

    Args:
        max_body_bytes: largest request body after decompression (413 above).
        max_wire_bytes: largest request body as sent, compressed or not (413 above).
        max_ingest_in_flight: recording requests handled at once; more get 429 + Retry-After.
            Writes are serialized by the store anyway, so this mostly bounds the memory that
            bodies waiting for their turn hold (at most this many times ``max_body_bytes``).
        body_timeout: seconds a client may take to send a whole body (408 after).
        retry_after: seconds a 429 asks the client to wait.
        max_page: largest ``limit`` of a read-API listing (422 above).
    """

    max_body_bytes: int = 8 * MIB
    max_wire_bytes: int = 4 * MIB
    max_ingest_in_flight: int = 16
    body_timeout: float = 30.0
    retry_after: int = 1
    max_page: int = 1000

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_wire_bytes", "max_ingest_in_flight", "max_page"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive integer, got {value!r}")
        if not self.body_timeout > 0 or not self.retry_after >= 1:
            raise ValueError("Limits.body_timeout must be > 0 and retry_after >= 1")


_JSON_TYPES = ("application/json",)
_GZIP = ("gzip", "x-gzip")
_IDENTITY = ("", "identity")


async def read_json(request: Request, limits: Limits) -> Any:
    """The request's JSON body, parsed; ``{}`` for an empty body without a Content-Type.

    Raises:
        ApiError: 413 too large (on the wire or inflated), 415 wrong Content-Type or
            Content-Encoding, 400 invalid JSON or gzip, 408 too slow.
    """
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in _GZIP and encoding not in _IDENTITY:
        raise ApiError(
            415,
            "unsupported_encoding",
            f"Content-Encoding {encoding[:40]!r} is not supported; send gzip or identity",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit():
        if int(declared) > limits.max_wire_bytes:
            raise _too_large("on the wire", limits.max_wire_bytes)
        if int(declared) == 0 and "content-type" not in request.headers:
            return {}
    _check_content_type(request)

    try:
        with anyio.fail_after(limits.body_timeout):
            body = await _read(request, limits, gzip=encoding in _GZIP)
    except TimeoutError:
        raise ApiError(
            408,
            "request_timeout",
            f"the request body took longer than {limits.body_timeout:g}s to arrive",
            headers={"Connection": "close"},
        ) from None
    if not body and "content-type" not in request.headers:
        return {}
    return parse_json(body)


def _check_content_type(request: Request) -> None:
    raw = request.headers.get("content-type")
    if raw is None:
        raise ApiError(415, "unsupported_media_type", "send Content-Type: application/json")
    media, _, params = raw.partition(";")
    if media.strip().lower() not in _JSON_TYPES:
        detail = f"Content-Type {media.strip()[:60]!r} is not supported; send application/json"
        if "protobuf" in media:
            detail += " (this server speaks OTLP/JSON, not OTLP/protobuf)"
        raise ApiError(415, "unsupported_media_type", detail)
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise ApiError(
                415, "unsupported_media_type", "send application/json in UTF-8 (charset=utf-8)"
            )


def _too_large(where: str, limit: int) -> ApiError:
    return ApiError(
        413,
        "too_large",
        f"the request body is larger than {limit} bytes {where}; send smaller batches",
        headers={"Connection": "close"},
    )


async def _chunks(request: Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            if chunk:
                yield chunk
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the client went away mid-body") from None


async def _read(request: Request, limits: Limits, *, gzip: bool) -> bytearray:
    wire = 0
    out = bytearray()
    inflater = _Inflater(limits.max_body_bytes) if gzip else None
    async for chunk in _chunks(request):
        wire += len(chunk)
        if wire > limits.max_wire_bytes:
            raise _too_large("on the wire", limits.max_wire_bytes)
        if inflater is None:
            if wire > limits.max_body_bytes:
                raise _too_large("", limits.max_body_bytes)
            out += chunk
        else:
            inflater.feed(chunk, out)
    if inflater is not None:
        inflater.finish(out)
    return out  # not copied to bytes: a body can be megabytes


class _Inflater:
    """Gunzip in bounded steps; several gzip members in a row are one body, as in gzip(1)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.seen_input = False

    def feed(self, data: bytes, out: bytearray) -> None:
        while data:
            self.seen_input = True
            if self.inflater.eof:  # the next gzip member
                data = self.inflater.unused_data + data
                self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            room = self.limit - len(out) + 1  # one byte more than allowed tells "too large"
            try:
                piece = self.inflater.decompress(data, room)
            except zlib.error:
                raise ApiError(400, "invalid_gzip", "the gzip body is corrupt") from None
            out += piece
            if len(out) > self.limit:
                raise _too_large("after gunzip", self.limit)
            data = self.inflater.unconsumed_tail
            if self.inflater.eof and self.inflater.unused_data:
                data = self.inflater.unused_data + data
                self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def finish(self, out: bytearray) -> None:
        if self.seen_input and not self.inflater.eof:
            raise ApiError(400, "invalid_gzip", "the gzip body ends early")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(body: bytes | bytearray) -> Any:
    """Strict JSON: orjson first (fast); what it refuses is tried by the json module, which
    takes lone-surrogate escapes that other SDKs write, and still refuses NaN and Infinity."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        text = body.decode("utf-8")
        return json.loads(text, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_json", "the body is not UTF-8 text") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "the JSON body is nested too deeply") from None
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {_short(exc)}") from None


def _short(exc: ValueError) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."


def require_object(value: Any, path: str = "body") -> dict[str, Any]:
    """``value`` if it is a JSON object; 422 naming ``path`` otherwise."""
    if not isinstance(value, dict):
        raise ApiError.invalid(FieldError(path, f"expected a JSON object, got {type_name(value)}"))
    return value


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
