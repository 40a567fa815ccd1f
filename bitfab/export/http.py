"""Send records to a bitfab server: ``POST {url}/api/bitfab/v1/ingest`` (remote mode).

Runs on the exporter's worker thread only; the traced app never waits on the network.

- A batch is split by count and by bytes (at most ``max_request_bytes`` of JSON a request); a
  single span over the limit is dropped as ``too_large`` and never sent. Bodies over a few KiB
  are gzipped.
- Retried: 429, 502, 503, 504 and connection errors (any exception from the transport, including
  ``ssl.SSLError`` and h11 protocol errors), with exponential backoff and jitter (1, 2, 4, 8 ...
  seconds x U(0.8, 1.2), each wait at most 30 s, at most 6 attempts), all under one deadline per
  batch (``export_timeout``). ``Retry-After`` (seconds or an HTTP-date) replaces the backoff; a
  wait past the deadline gives up at once. After a 429 or 503 with ``Retry-After`` every batch
  waits until the pause is over (Sentry's ``_disabled_until``; at most 5 minutes per answer), or
  is dropped as ``rate_limited`` if the pause outlasts its deadline. A dropped keep-alive
  connection gets one immediate retry (the server may have closed a stale connection).
- Not retried, counted by reason: 400/401/403/415/422 and other 4xx as ``http_<status>``; a 3xx
  as ``http_<status>`` (redirects are never followed, so the key never goes to another host);
  507 (the server's store is full) as ``http_507``; any other 5xx as ``non_retryable:<status>``:
  OTLP's rule, since the same payload would most likely fail the same way. A 413 of several
  records is split in halves and resent; of one span, ``too_large``. A 2xx that isn't a JSON
  object, or that carries an ``error`` key, is ``bad_response``. Spans in the answer's
  ``rejected`` list are counted as ``rejected:<reason>``; the accepted ones are not resent.
- Gave up retrying: ``retries_exhausted`` (``rate_limited`` when a pause outlasted the deadline
  before the batch was tried). While the server is down, one warning per ``warn_interval``.
- Shutdown: the exporter tells the sink its budget (``begin_shutdown``) before joining the worker; the
  backoff wait (an Event) wakes at once, the batch gets one last try, and the batches left
  are tried once each until the budget is spent (the rest: ``shutdown_timeout``). A request
  already waiting on a silent server is not cut short: the exporter's join timeout bounds exit.
- Fork: the child gets a new ``httpx.Client`` (the parent's pool is never touched there).
"""

from __future__ import annotations

import gzip
import math
import os
import random
import re
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol

import httpx
import orjson

from bitfab._internal import logger, warn_once
from bitfab._version import __version__
from bitfab.config import insecure_url_problem
from bitfab.exceptions import ConfigError
from bitfab.export.sinks import ExportResult

__all__ = [
    "INGEST_PATH",
    "USER_AGENT",
    "BodyError",
    "Clock",
    "HttpSink",
    "SystemClock",
    "client_headers",
    "parse_retry_after",
    "read_body",
    "scrub",
]

INGEST_PATH = "/api/bitfab/v1/ingest"
USER_AGENT = f"bitfab-python/{__version__}"
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
PAUSING_STATUSES = frozenset({429, 503})
MAX_REQUEST_BYTES = 4 * 1024 * 1024
MAX_REQUEST_RECORDS = 1000
GZIP_MIN_BYTES = 4 * 1024
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
MAX_ERROR_BODY_BYTES = 64 * 1024
BACKOFF_BASE = 1.0
BACKOFF_MAX = 30.0
MAX_ATTEMPTS = 6
WARN_INTERVAL = 60.0
MAX_PAUSE = 300.0
"""A server can pause every batch for at most this long per answer (a bogus huge Retry-After
must not switch export off for good)."""
DEFAULT_TIMEOUT = httpx.Timeout(connect=2.0, read=10.0, write=10.0, pool=2.0)
MAX_REASON_KEYS = 16

_ENVELOPE_BYTES = len(b'{"spans":[],"traces":[]}')
_STALE_ERRORS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
# Clients abandoned in a forked child: never closed there (their pool lock may be held by a
# thread that only exists in the parent), and kept referenced so their sockets aren't finalised.
_ORPHANS: list[httpx.Client] = []


# -- pieces shared with the replay client (bitfab.playback.remote) ------------------------------


def client_headers(api_key: str | None) -> dict[str, str]:
    """Headers of every request to a bitfab server."""
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def scrub(text: str, api_key: str | None, limit: int = 300) -> str:
    """``text`` cut to ``limit`` characters, with the API key (should a server echo it) masked."""
    if api_key:
        text = text.replace(api_key, "***")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or HTTP-date); None if unusable.

    ``now`` is the wall-clock time (seconds since the epoch) an HTTP-date is measured from; a
    date in the past means "retry now" (0).
    """
    if value is None:
        return None
    text = value.strip()
    if re.fullmatch(r"\d{1,12}(\.\d{1,6})?", text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    try:
        stamp = when.timestamp()
    except (OverflowError, ValueError, OSError):
        return None
    return max(0.0, stamp - now)


class BodyError(Exception):
    """A response body that is too large, or encoded in a way bitfab does not read."""


def read_body(
    response: httpx.Response, limit: int, *, expired: Callable[[], bool] | None = None
) -> bytes:
    """Read a streamed response, decoding gzip/deflate ourselves, never past ``limit`` bytes.

    Both the announced ``Content-Length`` and the decoded bytes are checked, so neither a huge
    body nor a compression bomb is held in memory. ``expired`` is checked between chunks.
    """
    try:
        content = response.content  # already read: a transport that buffers (MockTransport)
    except httpx.ResponseNotRead:
        pass
    else:
        if len(content) > limit:
            raise BodyError(f"the response is over the {limit}-byte limit")
        return content
    length = response.headers.get("content-length", "").strip()
    if length.isdigit() and int(length) > limit:
        raise BodyError(f"the response announces {int(length)} bytes, over the {limit}-byte limit")
    encoding = response.headers.get("content-encoding", "").strip().lower()
    decoder: Any = None
    if encoding in ("gzip", "x-gzip"):
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        decoder = zlib.decompressobj()
    elif encoding not in ("", "identity"):
        raise BodyError(f"the response uses Content-Encoding {encoding!r}, which bitfab can't read")
    body = bytearray()
    try:
        for raw in response.iter_raw():
            if decoder is None:
                body += raw
            else:
                data = raw
                while data:
                    body += decoder.decompress(data, limit + 1 - len(body))
                    if len(body) > limit:
                        break
                    data = decoder.unconsumed_tail
            if len(body) > limit:
                raise BodyError(f"the response is over the {limit}-byte limit")
            if expired is not None and expired():
                raise httpx.ReadTimeout("the export deadline passed while reading the answer")
        if decoder is not None:
            body += decoder.flush()
            if not decoder.eof:
                raise BodyError(f"the {encoding} response body is truncated")
    except zlib.error as exc:
        raise BodyError(f"the {encoding} response body is corrupt: {exc}") from None
    if len(body) > limit:
        raise BodyError(f"the response is over the {limit}-byte limit")
    return bytes(body)


# -- clock --------------------------------------------------------------------------------------


class Clock(Protocol):
    """Time as the sink sees it; tests pass a virtual clock."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    def sleep(self, seconds: float, interrupt: threading.Event) -> bool:
        """Wait ``seconds`` unless ``interrupt`` is set; True when interrupted."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float, interrupt: threading.Event) -> bool:
        return interrupt.wait(seconds)


# -- the sink -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Part:
    kind: Literal["span", "trace"]
    data: bytes
    id: str | None


@dataclass(frozen=True)
class _Reply:
    """One attempt's outcome: a parsed answer, a status with no usable answer, or an error."""

    status: int | None = None
    body: Mapping[str, Any] | None = None
    retry_after: float | None = None
    error: BaseException | None = None
    problem: str | None = None
    """Why a 2xx answer was not usable, or the error answer's code and detail."""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300 and self.body is not None

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status in RETRYABLE_STATUSES

    def describe(self) -> str:
        if self.error is not None:
            message = str(self.error)
            return (
                f"{type(self.error).__name__}: {message}" if message else type(self.error).__name__
            )
        return f"HTTP {self.status}"


def _drop_reason(status: int) -> str:
    if 300 <= status < 500 or status == 507:
        return f"http_{status}"
    return f"non_retryable:{status}"


def _capped(timeout: httpx.Timeout, remaining: float) -> httpx.Timeout:
    def cap(value: float | None) -> float:
        return remaining if value is None else min(value, remaining)

    return httpx.Timeout(
        connect=cap(timeout.connect),
        read=cap(timeout.read),
        write=cap(timeout.write),
        pool=cap(timeout.pool),
    )


class HttpSink:
    """Sends wire records to a bitfab server's ingest endpoint (the :class:`Sink` protocol).

    Args:
        url: the server's root URL.
        api_key: sent as ``Authorization: Bearer ...``; never logged.
        timeout: the deadline of one batch, retries included (``export_timeout``).
        request_timeout: httpx timeouts of one attempt (connect 2 s, read 10 s by default);
            each is also capped to what is left of the deadline.
        transport: an ``httpx`` transport (tests pass ``httpx.MockTransport``).
        clock: monotonic time, wall time and an interruptible sleep (tests pass a virtual one).
        jitter: returns the factor a backoff wait is multiplied by (default U(0.8, 1.2)).
        allow_insecure_http: allow plain ``http://`` to a host other than this machine.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        timeout: float = 30.0,
        request_timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        clock: Clock | None = None,
        jitter: Callable[[], float] | None = None,
        allow_insecure_http: bool = False,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        max_request_records: int = MAX_REQUEST_RECORDS,
        gzip_min_bytes: int = GZIP_MIN_BYTES,
        max_attempts: int = MAX_ATTEMPTS,
        warn_interval: float = WARN_INTERVAL,
    ) -> None:
        problem = insecure_url_problem(url, allow_insecure_http=allow_insecure_http)
        if problem is not None:
            raise ConfigError(problem)
        self.url = url.rstrip("/")
        self._api_key = api_key
        self.timeout = timeout
        self.request_timeout = request_timeout
        self.max_request_bytes = max_request_bytes
        self.max_request_records = max_request_records
        self.gzip_min_bytes = gzip_min_bytes
        self.max_attempts = max_attempts
        self.warn_interval = warn_interval
        self._transport = transport
        self._clock: Clock = clock or SystemClock()
        self._jitter = jitter or (lambda: random.uniform(0.8, 1.2))
        if not api_key:
            warn_once(
                f"http-no-key:{self.url}",
                "bitfab: no API key for %s (set BITFAB_API_KEY); the server will likely refuse "
                "the spans",
                self.url,
            )
        self._init_state()

    def __repr__(self) -> str:
        return f"HttpSink(url={self.url!r})"

    def _init_state(self) -> None:
        self._pid = os.getpid()
        self._client: httpx.Client | None = None
        self._interrupt = threading.Event()
        self._stop_deadline: float | None = None
        self._paused_until = -math.inf
        self._last_warning = -math.inf
        self._unreachable_dropped = 0
        self._totals: dict[str, int] = {}
        self._reason_keys: set[str] = set()

    # -- the Sink protocol ------------------------------------------------------------------------

    def export(
        self, spans: Sequence[Mapping[str, Any]], traces: Sequence[Mapping[str, Any]]
    ) -> ExportResult:
        if self._pid != os.getpid():
            self.after_fork()
        result = ExportResult()
        deadline = self._clock.monotonic() + self.timeout
        pending = deque(self._chunks(self._encode(spans, traces, result)))
        while pending:
            halves = self._deliver(pending.popleft(), deadline, result)
            pending.extendleft(reversed(halves))
        for reason, count in result.dropped.items():
            self._totals[reason] = self._totals.get(reason, 0) + count
        return result

    def begin_shutdown(self, budget: float) -> None:
        """The exporter is shutting down within ``budget`` seconds: stop waiting, wrap up."""
        margin = min(0.25, budget / 4)
        deadline = self._clock.monotonic() + max(0.0, budget - margin)
        if self._stop_deadline is None or deadline < self._stop_deadline:
            self._stop_deadline = deadline
        self._interrupt.set()

    def shutdown(self) -> None:
        self._interrupt.set()
        client, self._client = self._client, None
        if client is not None and self._pid == os.getpid():
            try:
                client.close()
            except Exception:
                logger.debug("bitfab: closing the HTTP client failed", exc_info=True)
        dropped = sum(self._totals.values())
        if dropped:
            reasons = ", ".join(f"{name}: {count}" for name, count in sorted(self._totals.items()))
            logger.warning(
                "bitfab: dropped %d spans that could not be sent to %s (%s)",
                dropped,
                self.url,
                reasons,
            )

    def after_fork(self) -> None:
        if self._client is not None:
            _ORPHANS.append(self._client)
        self._init_state()

    # -- batches ----------------------------------------------------------------------------------

    def _encode(
        self,
        spans: Sequence[Mapping[str, Any]],
        traces: Sequence[Mapping[str, Any]],
        result: ExportResult,
    ) -> list[_Part]:
        limit = self.max_request_bytes - _ENVELOPE_BYTES - 1
        parts: list[_Part] = []
        records: Iterable[tuple[Literal["span", "trace"], Mapping[str, Any]]] = [
            *(("span", record) for record in spans),
            *(("trace", record) for record in traces),
        ]
        for kind, record in records:
            try:
                data = orjson.dumps(record)
            except (TypeError, orjson.JSONEncodeError):
                if kind == "span":
                    result.drop("encode_error")
                warn_once("http-encode", "bitfab: a %s record could not be encoded; dropped", kind)
                continue
            if len(data) > limit:
                if kind == "span":
                    result.drop("too_large")
                warn_once(
                    "http-too-large",
                    "bitfab: a %s record of %d bytes is over the %d-byte request limit; dropped",
                    kind,
                    len(data),
                    self.max_request_bytes,
                )
                continue
            record_id = record.get("id")
            parts.append(_Part(kind, data, None if record_id is None else str(record_id)))
        return parts

    def _chunks(self, parts: list[_Part]) -> list[list[_Part]]:
        chunks: list[list[_Part]] = []
        chunk: list[_Part] = []
        size = _ENVELOPE_BYTES
        for part in parts:
            cost = len(part.data) + 1
            if chunk and (
                len(chunk) >= self.max_request_records or size + cost > self.max_request_bytes
            ):
                chunks.append(chunk)
                chunk, size = [], _ENVELOPE_BYTES
            chunk.append(part)
            size += cost
        if chunk:
            chunks.append(chunk)
        return chunks

    def _deliver(
        self, chunk: list[_Part], deadline: float, result: ExportResult
    ) -> list[list[_Part]]:
        """Send one chunk until it is answered or given up; returns halves to send instead."""
        spans = sum(1 for part in chunk if part.kind == "span")
        clock = self._clock
        attempts = 0
        stale_retry_left = True
        while True:
            stopping = self._stop_deadline is not None
            end = deadline if self._stop_deadline is None else min(deadline, self._stop_deadline)
            now = clock.monotonic()
            if now >= end:
                result.drop("shutdown_timeout" if stopping else "retries_exhausted", spans)
                return []
            if self._paused_until > now:
                if stopping or self._paused_until > end:
                    result.drop("rate_limited", spans)
                    self._note_unreachable(spans, "rate limited by the server")
                    return []
                clock.sleep(self._paused_until - now, self._interrupt)
                continue
            reply = self._post(chunk, end)
            attempts += 1
            if reply.ok:
                assert reply.body is not None
                self._count_accepted(chunk, spans, reply.body, result)
                return []
            status = reply.status
            if status == 413:
                if len(chunk) > 1:
                    middle = len(chunk) // 2
                    return [chunk[:middle], chunk[middle:]]
                result.drop("too_large", spans)
                return []
            if not reply.retryable:
                assert status is not None
                result.drop("bad_response" if 200 <= status < 300 else _drop_reason(status), spans)
                self._warn_refused(reply)
                return []
            now = clock.monotonic()
            if reply.retry_after is not None and status in PAUSING_STATUSES:
                pause = min(reply.retry_after, MAX_PAUSE)
                self._paused_until = max(self._paused_until, now + pause)
            if isinstance(reply.error, _STALE_ERRORS) and stale_retry_left:
                stale_retry_left = False
                delay = 0.0
            elif reply.retry_after is not None:
                delay = reply.retry_after
            else:
                delay = min(BACKOFF_BASE * 2 ** (attempts - 1), BACKOFF_MAX) * self._jitter()
            if (
                self._stop_deadline is not None
                or attempts >= self.max_attempts
                or now + delay > end
            ):
                result.drop("retries_exhausted", spans)
                self._note_unreachable(spans, reply.describe())
                return []
            if delay > 0:
                clock.sleep(delay, self._interrupt)

    def _count_accepted(
        self, chunk: list[_Part], spans: int, body: Mapping[str, Any], result: ExportResult
    ) -> None:
        span_parts = [part for part in chunk if part.kind == "span"]
        by_id = {part.id: index for index, part in enumerate(span_parts) if part.id is not None}
        rejected: set[int] = set()
        entries = body.get("rejected")
        for entry in entries if isinstance(entries, list) else ():
            if not isinstance(entry, Mapping) or entry.get("kind", "span") != "span":
                continue
            index = entry.get("index")
            if isinstance(index, bool) or not isinstance(index, int):
                index = by_id.get(str(entry.get("id")))
            if index is None or not 0 <= index < spans or index in rejected:
                continue
            rejected.add(index)
            result.drop(self._reason_key(entry.get("reason")))
        result.exported += spans - len(rejected)
        if rejected:
            warn_once(
                f"http-rejected:{self.url}",
                "bitfab: the server at %s rejected %d of %d spans (see bitfab.stats())",
                self.url,
                len(rejected),
                spans,
            )

    def _reason_key(self, reason: object) -> str:
        text = re.sub(r"[^a-z0-9_.-]+", "_", str(reason or "").lower()).strip("_")[:48]
        key = f"rejected:{text}" if text else "rejected"
        if key not in self._reason_keys:
            if len(self._reason_keys) >= MAX_REASON_KEYS:
                return "rejected:other"
            self._reason_keys.add(key)
        return key

    # -- one request ------------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        client = self._client
        if client is None:
            headers = client_headers(self._api_key)
            headers["Accept-Encoding"] = "identity"
            client = httpx.Client(
                transport=self._transport,
                headers=headers,
                timeout=self.request_timeout,
                follow_redirects=False,
                limits=httpx.Limits(max_connections=4, max_keepalive_connections=2),
            )
            self._client = client
        return client

    def _body(self, chunk: list[_Part]) -> bytes:
        spans = b",".join(part.data for part in chunk if part.kind == "span")
        traces = b",".join(part.data for part in chunk if part.kind == "trace")
        return b'{"spans":[' + spans + b'],"traces":[' + traces + b"]}"

    def _post(self, chunk: list[_Part], end: float) -> _Reply:
        body = self._body(chunk)
        headers = {"Content-Type": "application/json"}
        if len(body) > self.gzip_min_bytes:
            body = gzip.compress(body, compresslevel=5, mtime=0)
            headers["Content-Encoding"] = "gzip"
        clock = self._clock
        remaining = max(0.001, end - clock.monotonic())
        try:
            client = self._http()
            request = client.build_request(
                "POST",
                self.url + INGEST_PATH,
                content=body,
                headers=headers,
                timeout=_capped(self.request_timeout, remaining),
            )
            response = client.send(request, stream=True)
        except httpx.TransportError as exc:
            return _Reply(error=exc)
        except Exception as exc:
            # Whatever the layers under httpx raise (ssl.SSLError, h11 errors...) is a failed
            # connection: retried, and never let out of the exporter.
            warn_once(
                f"http-unexpected:{type(exc).__name__}",
                "bitfab: sending to %s raised %s; treated as a connection error",
                self.url,
                type(exc).__name__,
            )
            return _Reply(error=exc)
        try:
            return self._read_reply(response, end)
        except Exception as exc:
            # The answer broke off: the server may have stored the batch, so it is retried
            # (at-least-once; the server dedupes by id).
            return _Reply(error=exc)
        finally:
            try:
                response.close()
            except Exception:
                logger.debug("bitfab: closing a response failed", exc_info=True)

    def _read_reply(self, response: httpx.Response, end: float) -> _Reply:
        status = response.status_code
        retry_after = parse_retry_after(response.headers.get("retry-after"), self._clock.time())
        ok = 200 <= status < 300
        limit = MAX_RESPONSE_BYTES if ok else MAX_ERROR_BODY_BYTES
        try:
            raw = read_body(response, limit, expired=lambda: self._clock.monotonic() > end)
        except BodyError as exc:
            if ok:
                return _Reply(status=status, problem=str(exc))
            raw = b""
        try:
            parsed = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            parsed = None
        if ok:
            if not isinstance(parsed, dict):
                return _Reply(status=status, problem="the answer is not a JSON object")
            if "error" in parsed:
                return _Reply(status=status, problem=_error_text(parsed))
            return _Reply(status=status, body=parsed)
        if isinstance(parsed, dict):
            problem = _error_text(parsed)
        elif 300 <= status < 400:
            problem = f"a redirect to {response.headers.get('location', '?')}"
        else:
            problem = raw[:200].decode("utf-8", "replace")
        return _Reply(status=status, retry_after=retry_after, problem=problem)

    # -- telling the user -------------------------------------------------------------------------

    def _warn_refused(self, reply: _Reply) -> None:
        status = reply.status
        if status in (401, 403):
            warn_once(
                f"http-auth:{self.url}:{status}",
                "bitfab: the server at %s refused the API key (HTTP %d); spans are dropped. "
                "Check BITFAB_API_KEY.",
                self.url,
                status,
            )
            return
        if status is not None and 300 <= status < 400:
            warn_once(
                f"http-redirect:{self.url}",
                "bitfab: the server at %s answered HTTP %d (%s); bitfab does not follow "
                "redirects: set the URL to the final address",
                self.url,
                status,
                scrub(reply.problem or "", self._api_key),
            )
            return
        what = "a 2xx answer bitfab can't read" if status and status < 300 else f"HTTP {status}"
        warn_once(
            f"http-status:{self.url}:{status}",
            "bitfab: the server at %s answered %s (%s); those spans are dropped",
            self.url,
            what,
            scrub(reply.problem or "", self._api_key),
        )

    def _note_unreachable(self, spans: int, why: str) -> None:
        self._unreachable_dropped += spans
        if self._stop_deadline is not None:
            return  # the summary at shutdown says it once
        now = self._clock.monotonic()
        if now - self._last_warning < self.warn_interval:
            return
        self._last_warning = now
        logger.warning(
            "bitfab: server unreachable at %s (%s), %d spans dropped so far",
            self.url,
            scrub(why, self._api_key),
            self._unreachable_dropped,
        )


def _error_text(body: Mapping[str, Any]) -> str:
    code, detail = body.get("error"), body.get("detail")
    return f"{code}: {detail}" if detail is not None else str(code)
