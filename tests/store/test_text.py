"""Text the databases find awkward (NUL, U+0001, surrogates) comes back exactly, on every backend."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitfab.store import FunctionStats, Store
from bitfab.store.function_stats import ACCURACY
from bitfab.store.postgres_conn import escape, unescape

from .factories import BASE_US, span

# Characters that need care: NUL and U+0001 (the PostgreSQL escape), a lone surrogate, and
# ordinary ASCII and non-ASCII.
AWKWARD = st.text(alphabet=st.sampled_from(["\x00", "\x01", "\x02", "a", "b", "é", "\U0001f389"]))


@given(AWKWARD)
def test_escape_round_trips(text: str) -> None:
    """unescape(escape(x)) == x, and escaped text has no NUL."""
    escaped = escape(text)

    assert unescape(escaped) == text
    assert "\x00" not in escaped


@given(AWKWARD, AWKWARD)
def test_escape_keeps_byte_order(a: str, b: str) -> None:
    """Escaped strings compare (as UTF-8 bytes, COLLATE "C") as the originals do."""
    assert (a.encode() < b.encode()) == (escape(a).encode() < escape(b).encode())
    assert (a == b) == (escape(a) == escape(b))


def test_keys_names_and_errors_with_nul_come_back_exactly(store: Store) -> None:
    """A key, name and error holding NUL and U+0001 list exactly in functions() and traces()."""
    key, name, error = "k\x00ey\x01", "na\x01\x00me", "bo\x00om"
    record = span("n1", key=key, name=name, error=error, input=["x\x00y"], start_ms=1)
    store.write([record, span("plain", key="k", start_ms=2)])

    (summary,) = store.traces(key)
    stats = store.functions()

    assert store.get_span("n1") == record
    assert (summary.key, summary.name, summary.error) == (key, name, error)
    assert [s.span_id for s in store.traces(search="x\x00y")] == ["n1"]
    assert stats == [
        FunctionStats(
            key="k",
            name="k",
            calls=1,
            root_calls=1,
            errors=0,
            first_seen_us=BASE_US + 2_000,
            last_seen_us=BASE_US + 2_000,
            p50_duration_ms=pytest.approx(10.0, rel=ACCURACY),
            input_tokens=0,
            output_tokens=0,
            cached_tokens=0,
            total_tokens=0,
        ),
        FunctionStats(
            key=key,
            name=name,
            calls=1,
            root_calls=1,
            errors=1,
            first_seen_us=BASE_US + 1_000,
            last_seen_us=BASE_US + 1_000,
            p50_duration_ms=pytest.approx(10.0, rel=ACCURACY),
            input_tokens=0,
            output_tokens=0,
            cached_tokens=0,
            total_tokens=0,
        ),
    ]


_ids = itertools.count()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=AWKWARD, payload=AWKWARD)
def test_any_awkward_text_round_trips_through_every_column(
    store: Store, text: str, payload: str
) -> None:
    """Span ids, trace ids, keys and records with awkward text read back as written."""
    n = next(_ids)
    span_id, trace_id, key = f"s{n}{text}", f"t{n}{text}", f"k{n}{text}"
    record = span(span_id, trace=trace_id, key=key, name=text or None, input=[payload])

    store.write([record])

    assert store.get_span(span_id) == record
    assert store.trace_spans(trace_id) == [record]
    assert store.newest_roots(key, 5) == [record]
    (summary,) = store.traces(key)
    assert (summary.trace_id, summary.span_id, summary.key) == (trace_id, span_id, key)
    assert store.roots_of_traces([trace_id]) == {trace_id: record}
