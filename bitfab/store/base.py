"""The store interface: what every backend (SQLite, PostgreSQL) keeps.

A store holds the protocol's wire records (see ``PROTOCOL.md``) verbatim and answers the
questions that recording, replay and the UI ask of them. The semantics live in the docstrings
of :class:`Store`; implementations keep their SQL dialect to themselves.

Terms used below:

* a *span record* is one ``external_span`` object; a *trace record* is one ``external_trace``
  (completion) object.
* a *root* is a span whose ``rawSpan.parent_id`` is absent, null or empty.
* a *replay span* is one recorded during a test run: its record carries ``testRunId`` (or the
  older ``experimentId``). A *replay trace* is a trace whose spans are replay spans.
* a span's *start* is ``rawSpan.started_at`` parsed to integer microseconds since the epoch
  (``start_us``); a missing or unparseable timestamp is unknown and sorts as the oldest.
* a span *has an error* when ``span_data.error`` is a non-empty value or
  ``span_data.error_source`` is set.
* *tokens* are summed over the span's LLM usage entries: the dicts in ``span_data.contexts``
  that carry any of ``inputTokens``, ``outputTokens``, ``cachedInputTokens`` or ``costUsd``.
  ``total`` is ``input + output`` (cached input tokens are reported, not added).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bitfab.exceptions import StoreError
from bitfab.store.keys import ApiKey

__all__ = [
    "MAX_LIMIT",
    "MAX_SEARCH_CHARS",
    "TEST_RUN_STATUSES",
    "ApiKey",
    "FunctionStats",
    "PruneResult",
    "Rejection",
    "Store",
    "StoreBusyError",
    "StoreFullError",
    "TestRun",
    "TestRunItem",
    "TraceSummary",
    "UnknownTestRunError",
    "WriteResult",
    "check_limit",
    "check_search",
]

MAX_LIMIT = 10_000
"""Largest number of rows one listing call returns; larger limits are lowered to it."""

MAX_SEARCH_CHARS = 1_000
"""Longest ``search`` term :meth:`Store.traces` accepts."""

TEST_RUN_STATUSES = frozenset({"running", "completed", "interrupted", "failed"})


def check_limit(limit: int) -> int:
    """``limit`` lowered to :data:`MAX_LIMIT`; ``ValueError`` if it isn't a positive integer."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    return min(limit, MAX_LIMIT)


def check_search(search: str | None) -> str | None:
    """``search`` if it is a usable term, None for no search; ``ValueError`` if too long."""
    if search is None or search == "":
        return None
    if len(search) > MAX_SEARCH_CHARS:
        raise ValueError(f"search is longer than {MAX_SEARCH_CHARS} characters")
    return search


class StoreBusyError(StoreError):
    """The store stayed locked by another writer past the busy timeout; retry later."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreFullError(StoreError):
    """The store could not write: the disk is full or the file system failed (I/O error)."""


class UnknownTestRunError(StoreError):
    """No test run with this id is stored."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no test run with id {run_id!r}")
        self.run_id = run_id


@dataclass(frozen=True)
class Rejection:
    """One record of a batch that was not stored, and why."""

    kind: Literal["span", "trace"]
    index: int
    """Position of the record in the ``spans`` or ``traces`` sequence given to ``write``."""
    id: str | None
    reason: str


@dataclass(frozen=True)
class WriteResult:
    """What one :meth:`Store.write` did. Every record is counted exactly once."""

    spans_inserted: int = 0
    spans_duplicate: int = 0
    """Span records whose id was already stored (or repeated in the batch); the first was kept."""
    spans_discarded: int = 0
    """Span records of a trace that was dropped; not stored."""
    traces_inserted: int = 0
    traces_duplicate: int = 0
    traces_dropped: int = 0
    """Trace records with ``dropped: true``; their traces and spans are deleted."""
    rejected: tuple[Rejection, ...] = ()

    @property
    def accepted(self) -> int:
        """Records that were stored, already stored, or applied (everything not rejected)."""
        return (
            self.spans_inserted
            + self.spans_duplicate
            + self.spans_discarded
            + self.traces_inserted
            + self.traces_duplicate
            + self.traces_dropped
        )


@dataclass(frozen=True)
class FunctionStats:
    """What was recorded for one ``traceFunctionKey`` outside of replays.

    Every field is exact (kept in a per-key summary that each write, drop and prune updates in
    its transaction) except ``p50_duration_ms``, which is within 2% of the exact median.
    """

    key: str
    name: str | None
    """The span name of the newest call (by start, then id)."""
    calls: int
    """Recorded calls of the key, as a root or nested."""
    root_calls: int
    """Calls that were the root of their trace: what a replay of the key can select."""
    errors: int
    """Calls that have an error."""
    first_seen_us: int | None
    """Earliest start of a call, in microseconds since the epoch."""
    last_seen_us: int | None
    p50_duration_ms: float | None
    """Median duration of the calls (the mean of the middle two for an even count), read from a
    histogram with logarithmic buckets: within 2% of the exact median
    (:data:`bitfab.store.function_stats.ACCURACY`; when the middle two durations have one
    sign, as they do unless a clock went backwards). None when no call has a duration."""
    input_tokens: int
    """Tokens of the key's own spans' usage entries; a trace's totals are in ``traces()``."""
    output_tokens: int
    cached_tokens: int
    total_tokens: int


@dataclass(frozen=True)
class TraceSummary:
    """One trace as a list shows it: its root span plus totals over all its spans."""

    trace_id: str
    span_id: str
    key: str | None
    name: str | None
    started_at: str | None
    start_us: int | None
    duration_ms: float | None
    error: str | None
    """The root span's error, or None."""
    test_run_id: str | None
    model: str | None
    """The model of the trace's first LLM call (by start), or None."""
    completed: bool
    """The trace's completion record is stored."""
    span_count: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    total_tokens: int


@dataclass(frozen=True)
class PruneResult:
    """What one :meth:`Store.prune` deleted and kept."""

    traces: int = 0
    """Traces deleted whole: their spans and their completion record."""
    spans: int = 0
    """Span records deleted (all of them spans of the deleted traces)."""
    trace_records: int = 0
    """Dropped-trace markers and completion records without any span that were deleted."""
    test_runs: int = 0
    """Test runs deleted with their items (only with ``include_test_runs=True``)."""
    kept_for_test_runs: int = 0
    """Old traces left in place because a test run references them."""
    batches: int = 0
    """Transactions that deleted something; each deleted at most ``batch_size`` traces."""
    finished: bool = True
    """Nothing prunable is left; False when ``max_batches`` stopped the pruning first."""


@dataclass(frozen=True, kw_only=True)
class TestRunItem:
    """One recorded call replayed in a test run."""

    __test__ = False  # not a pytest test class

    idx: int
    original_trace_id: str | None = None
    original_span_id: str | None = None
    replay_trace_id: str | None = None
    verdict: str | None = None
    item: Mapping[str, Any] = field(default_factory=dict)
    """Everything else about the item (outputs, durations, tokens, error), as JSON."""


@dataclass(frozen=True, kw_only=True)
class TestRun:
    """A replay of recorded calls of one key through the current code."""

    __test__ = False  # not a pytest test class

    id: str
    key: str
    created_at: str
    """ISO-8601 UTC, e.g. ``2026-11-27T10:38:45.642593Z``."""
    name: str | None = None
    status: str = "running"
    completed_at: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    code_version: str | None = None
    summary: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Anything else the run carries (notes, metadata, the protocol's experiment id), as JSON."""
    items: tuple[TestRunItem, ...] = ()


class Store(Protocol):
    """Where recorded spans, traces and test runs are kept.

    Every method is safe to call from any thread. Methods raise :class:`StoreBusyError` when
    the store stays locked past its busy timeout, :class:`StoreFullError` when the disk is full
    or failing, and :class:`~bitfab.exceptions.StoreError` for anything else the backend
    reports; never the backend's own exception types.
    """

    def write(
        self, spans: Sequence[Mapping[str, Any]], traces: Sequence[Mapping[str, Any]] = ()
    ) -> WriteResult:
        """Store span and trace records in one transaction, committed before returning.

        Records are upserted by id with keep-first semantics: a record whose id is already
        stored, identical or not, is accepted and counted as a duplicate, and the stored one
        stays. A span record without a non-empty string ``id`` or ``traceId``, or without a
        ``rawSpan`` object, or that cannot be written as strict JSON (NaN, infinity, a value
        JSON has no form for) is rejected with a reason; the rest of the batch is still
        written. A trace record may arrive before or after its spans. A trace record with
        ``dropped: true`` deletes the trace and its spans and is remembered, so spans of that
        trace that arrive later (a client retry) are discarded.
        """
        ...

    def get_span(self, span_id: str) -> dict[str, Any] | None:
        """The stored span record, parsed, exactly as it was written; None if unknown."""
        ...

    def trace_spans(self, trace_id: str) -> list[dict[str, Any]]:
        """Every span record of the trace, ordered by start (unknown starts last), then id."""
        ...

    def subtree(self, span_id: str) -> list[dict[str, Any]]:
        """The span and all its descendants within its trace, ordered like ``trace_spans``.

        Empty if the span is unknown. Parent links that form a cycle end the walk.
        """
        ...

    def get_trace(self, trace_id: str) -> dict[str, Any] | None:
        """The stored trace completion record, parsed; None if none is stored or it was dropped."""
        ...

    def trace_status(self, trace_ids_to_expected: Mapping[str, int]) -> list[str]:
        """The given traces that are whole: completion record stored and at least n spans stored.

        Keeps the order of the mapping.
        """
        ...

    def newest_roots(self, key: str, limit: int) -> list[dict[str, Any]]:
        """What a replay of ``key`` selects: its newest non-replay root spans.

        Root span records of ``key`` that are not replay spans, newest start first (ties by
        id, descending), at most ``limit`` (lowered to :data:`MAX_LIMIT`). ``limit`` below 1
        raises ``ValueError``.
        """
        ...

    def roots_of_traces(self, trace_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """Each given trace id mapped to its root span record, or None if none is stored.

        Replay traces are allowed here. A trace with several roots gives its earliest. The
        dict keeps the order asked.
        """
        ...

    def functions(self) -> list[FunctionStats]:
        """Statistics per key over non-replay spans, ordered by key.

        Keys that were only ever called nested (never a root) are listed with
        ``root_calls == 0``. Spans without a key are left out, and so is a key whose calls were
        all deleted (dropped or pruned). Reads a summary kept at write time: its cost depends
        on the number of keys, not of spans.
        """
        ...

    def traces(
        self,
        key: str | None = None,
        *,
        limit: int = 50,
        before_us: int | None = None,
        errors_only: bool = False,
        include_replays: bool = False,
        search: str | None = None,
    ) -> list[TraceSummary]:
        """Traces newest first, one summary per root span.

        Args:
            key: only roots of this key (exact match).
            limit: at most this many (lowered to :data:`MAX_LIMIT`; below 1 is a ``ValueError``).
            before_us: only roots that started strictly before this (the next page: pass the
                ``start_us`` of the last summary of the previous one). Roots with an unknown
                start are left out when this is given.
            errors_only: only traces whose root has an error.
            include_replays: also replay traces (by default only recorded ones).
            search: literal, ASCII-case-insensitive substring of the root's ``input`` as it
                appears inside its JSON strings: a quote, backslash or non-ASCII character in
                the term matches that character in the recorded text. No wildcards. Longer than
                :data:`MAX_SEARCH_CHARS` is a ``ValueError``.
        """
        ...

    def create_test_run(self, run: TestRun) -> None:
        """Store a new test run with its items. An id already stored raises ``StoreError``."""
        ...

    def complete_test_run(
        self,
        run_id: str,
        *,
        items: Sequence[TestRunItem],
        summary: Mapping[str, Any],
        status: str = "completed",
        completed_at: str | None = None,
    ) -> None:
        """Finish a run: set status, summary and completion time, and replace all its items.

        Completing twice replaces the first completion. ``completed_at`` defaults to now.
        Raises :class:`UnknownTestRunError` for an unknown run, ``ValueError`` for a status
        outside :data:`TEST_RUN_STATUSES` or two items with one ``idx``.
        """
        ...

    def set_test_run_status(self, run_id: str, status: str) -> None:
        """Change only the status of a run (e.g. ``interrupted``); items stay."""
        ...

    def get_test_run(self, run_id: str) -> TestRun | None:
        """The run with its items ordered by ``idx``; None if unknown."""
        ...

    def list_test_runs(self, key: str | None = None, *, limit: int = 50) -> list[TestRun]:
        """Runs newest first by ``created_at``, optionally of one key. ``items`` is left empty."""
        ...

    def replay_trace_ids(self, run_id: str) -> list[str]:
        """Every trace recorded under this test run id (by its spans or its completion record).

        Ordered by the trace's earliest span start, traces with no known start last.
        """
        ...

    def token_totals(self, trace_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """``{input, output, cached, total}`` summed over all spans of each given trace.

        Every asked id is present; a trace with no spans or no usage gives zeros.
        """
        ...

    def trace_models(self, trace_ids: Sequence[str]) -> dict[str, str | None]:
        """The model of each given trace's first LLM call (by start, then id), or None.

        Every asked id is present; one query for all of them (``replay/start`` asks for 100).
        """
        ...

    def count_spans(self) -> int:
        """How many span records are stored."""
        ...

    # -- retention ---------------------------------------------------------------------------

    def prune(
        self,
        older_than_us: int,
        *,
        key: str | None = None,
        batch_size: int = 500,
        include_test_runs: bool = False,
        max_batches: int | None = None,
    ) -> PruneResult:
        """Delete what was recorded before a cutoff, a bounded batch per transaction.

        A trace goes whole (its spans and its completion record) when one of its root spans
        started strictly before ``older_than_us`` (microseconds since the epoch) and, if ``key``
        is given, that root is of ``key``. Traces whose roots have no known start are kept.
        Dropped-trace markers and completion records that have no span, stored before the
        cutoff (by their ``externalTrace.started_at``, else the time they were written) and of
        ``key`` if given, go too.

        A trace that a test run references is kept and counted in ``kept_for_test_runs``: one
        named by an item of a run (as the original or the replay), or a replay trace recorded
        under the id of a stored run. With ``include_test_runs=True`` the test runs created
        before the cutoff (of ``key`` if given) are deleted first, with their items, so the
        traces only they referenced are deleted too.

        Each transaction looks at most ``batch_size`` traces (or test runs, or trace records)
        and commits before the next starts, so writers wait at most one batch. ``max_batches``
        caps the transactions that delete something (one that only passes kept traces is not
        counted); ``finished`` is False when it stopped the work early, and calling again
        carries on. Pruning twice with one cutoff deletes nothing the second time.

        Raises:
            ValueError: ``batch_size`` or ``max_batches`` below 1.
        """
        ...

    # -- API keys of the server (see bitfab.store.keys) ------------------------------------

    def create_api_key(self, key: ApiKey) -> None:
        """Store a new key. An id or hash already stored raises ``StoreError``."""
        ...

    def api_keys(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        ...

    def find_api_key(self, key_hash: str) -> ApiKey | None:
        """The key (revoked or not) whose secret hashes to ``key_hash``; None if none does."""
        ...

    def revoke_api_key(self, key_id: str, *, revoked_at: str | None = None) -> ApiKey | None:
        """Revoke a key (revoking twice keeps the first time); the key, or None if unknown."""
        ...

    def touch_api_key(self, key_id: str, *, used_at: str | None = None) -> None:
        """Record that a key was just used (``last_used_at``); an unknown id is ignored."""
        ...

    def close(self) -> None:
        """Release connections. Calls after this raise ``StoreError``; closing twice is fine."""
        ...
