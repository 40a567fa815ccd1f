"""Retention: deleting old recordings in small batches, by hand or in the server's background.

``bitfab prune --older-than 30d`` and ``bitfab serve --retention 30d`` both come here. The
store deletes whole traces, at most ``batch_size`` per transaction (:meth:`Store.prune`); this
module loops over batches with a short pause between them, so writers (the server's ingest)
get the store between two batches and are never held up for long.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

from bitfab.exceptions import StoreError
from bitfab.store.base import PruneResult, Store

__all__ = ["RetentionThread", "add_up", "parse_age", "prune_in_batches"]

logger = logging.getLogger("bitfab.retention")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)


def parse_age(text: str) -> float:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"2w"``, ``"3600s"`` as seconds; ``ValueError`` else."""
    match = _AGE.match(text)
    if match is None:
        raise ValueError(
            f"expected an age such as 30d, 12h, 90m, 2w or 3600s (s, m, h, d, w), not {text!r}"
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if seconds <= 0:
        raise ValueError(f"the age must be more than zero, not {text!r}")
    return seconds


def add_up(totals: PruneResult, result: PruneResult) -> PruneResult:
    """``totals`` plus one more call's ``result`` (kept traces: the most any call saw)."""
    return PruneResult(
        traces=totals.traces + result.traces,
        spans=totals.spans + result.spans,
        trace_records=totals.trace_records + result.trace_records,
        test_runs=totals.test_runs + result.test_runs,
        kept_for_test_runs=max(totals.kept_for_test_runs, result.kept_for_test_runs),
        batches=totals.batches + result.batches,
        finished=result.finished,
    )


def prune_in_batches(
    store: Store,
    older_than_us: int,
    *,
    key: str | None = None,
    include_test_runs: bool = False,
    batch_size: int = 500,
    pause_s: float = 0.02,
    on_batch: Callable[[PruneResult], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> PruneResult:
    """Prune until nothing older than ``older_than_us`` is left (or ``should_stop()``).

    One store transaction per batch, ``pause_s`` between batches. ``on_batch`` sees the totals
    after each batch that deleted something.
    """
    totals = PruneResult(finished=False)
    while not should_stop():
        result = store.prune(
            older_than_us,
            key=key,
            batch_size=batch_size,
            include_test_runs=include_test_runs,
            max_batches=1,
        )
        totals = add_up(totals, result)
        if result.finished:
            break
        if on_batch is not None:
            on_batch(totals)
        if pause_s > 0:
            time.sleep(pause_s)
    return totals


class RetentionThread:
    """Prunes recordings older than ``max_age_s`` every ``every_s`` seconds, in a daemon thread.

    Safe with several servers on one database: a prune deletes whole traces by id, so two
    servers pruning at once delete each trace once and the other finds nothing to do. A store
    error is logged and retried at the next round; it never stops the server.
    """

    def __init__(
        self,
        store: Store,
        max_age_s: float,
        *,
        every_s: float = 600.0,
        batch_size: int = 500,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_age_s <= 0 or every_s <= 0:
            raise ValueError("max_age_s and every_s must be more than zero")
        self.store = store
        self.max_age_s = max_age_s
        self.every_s = every_s
        self.batch_size = batch_size
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0

    def run_once(self) -> PruneResult:
        """One round: prune everything older than the age, now."""
        cutoff_us = int((self._clock() - self.max_age_s) * 1_000_000)
        totals = prune_in_batches(
            self.store, cutoff_us, batch_size=self.batch_size, should_stop=self._stop.is_set
        )
        self.rounds += 1
        if totals.traces or totals.test_runs:
            logger.info(
                "retention: deleted %d trace(s), %d span(s) older than %s in %d batch(es)",
                totals.traces,
                totals.spans,
                _age_text(self.max_age_s),
                totals.batches,
            )
        return totals

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="bitfab-retention", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except StoreError as exc:
                logger.warning("retention: prune failed, retrying in %.0fs: %s", self.every_s, exc)
            except Exception:  # a bug must not end the loop silently
                logger.exception("retention: unexpected error")
            self._stop.wait(self.every_s)


def _age_text(seconds: float) -> str:
    for unit in ("w", "d", "h", "m"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
