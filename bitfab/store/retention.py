"""Retention: the batch loop of :meth:`Store.prune`, shared by the backends.

A prune runs in up to three phases, each a series of short transactions (*batches*):

1. ``runs`` (only with ``include_test_runs``): delete test runs created before the cutoff, with
   their items, at most ``batch_size`` a batch.
2. ``traces``: walk the root spans that started before the cutoff, oldest first, at most
   ``batch_size`` a batch, and delete the traces of those no test run references.
3. ``records``: walk the trace records (completions and dropped-trace markers) stored before
   the cutoff, and delete the markers and the completions whose trace has no span left.

Phases 2 and 3 walk by keyset (``start_us, id``) so each batch starts where the previous one
ended: kept rows are looked at once, and a batch's work is bounded however many are kept. A
backend supplies one function per phase that runs one batch in its own transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from bitfab.store.base import PruneResult

__all__ = ["FIRST", "Batch", "PrunePlan", "run_prune"]

FIRST = (-(2**63), "")
"""The keyset position before every row: ``(start_us, id) > FIRST`` holds for all known starts."""


@dataclass(frozen=True)
class PrunePlan:
    """The arguments of one prune, checked."""

    older_than_us: int
    key: str | None
    batch_size: int
    include_test_runs: bool
    max_batches: int | None

    def __post_init__(self) -> None:
        for name in ("older_than_us", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.max_batches is not None and (
            isinstance(self.max_batches, bool)
            or not isinstance(self.max_batches, int)
            or self.max_batches < 1
        ):
            raise ValueError(f"max_batches must be None or at least 1, got {self.max_batches!r}")


class Batch(NamedTuple):
    """What one batch did."""

    examined: int
    """Rows the batch walked over; fewer than ``batch_size`` ends the phase."""
    after: tuple[int, str] = FIRST
    """The keyset position of the last row walked: the next batch starts after it."""
    traces: int = 0
    spans: int = 0
    trace_records: int = 0
    test_runs: int = 0
    kept: int = 0


Phase = Callable[[tuple[int, str]], Batch]
"""Runs one batch in its own transaction, starting after the given keyset position."""


def run_prune(plan: PrunePlan, *, runs: Phase, traces: Phase, records: Phase) -> PruneResult:
    """Run the phases of ``plan`` batch by batch and add up what they did."""
    phases = ([runs] if plan.include_test_runs else []) + [traces, records]
    totals = [0, 0, 0, 0, 0]  # traces, spans, trace_records, test_runs, kept
    batches = 0
    for phase in phases:
        after = FIRST
        while True:
            if plan.max_batches is not None and batches >= plan.max_batches:
                return _result(totals, batches, finished=False)
            batch = phase(after)
            if batch.examined == 0:
                break
            # A batch that only walked past kept rows is not counted, nor capped by max_batches:
            # a caller looping over max_batches=1 still gets past any number of kept traces.
            if batch.traces or batch.spans or batch.trace_records or batch.test_runs:
                batches += 1
            for i, value in enumerate(batch[2:]):
                totals[i] += value
            if batch.examined < plan.batch_size:
                break
            after = batch.after
    return _result(totals, batches, finished=True)


def _result(totals: list[int], batches: int, *, finished: bool) -> PruneResult:
    traces, spans, trace_records, test_runs, kept = totals
    return PruneResult(
        traces=traces,
        spans=spans,
        trace_records=trace_records,
        test_runs=test_runs,
        kept_for_test_runs=kept,
        batches=batches,
        finished=finished,
    )
