"""Replay end to end: record with a real Bitfab into SQLite, change the code, replay, read the run."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from replay_helpers import replay_spans

import bitfab
from bitfab import Bitfab, RegistryError, ReplayError
from bitfab.exceptions import RegressionError
from bitfab.playback.backend import LocalBackend
from bitfab.playback.result import ReplayResult
from bitfab.store import Store, open_store
from bitfab.testing import FakeClock


def _scorer(bf: Bitfab, version: dict[str, int]) -> Any:
    """A traced function whose output depends on a setting the test flips ("the code change")."""

    @bf.trace(key="score")
    def score(text: str, *, weight: int = 1) -> dict[str, Any]:
        return {"text": text, "len": len(text) * weight, "version": version["v"]}

    return score


# ---- the whole loop ------------------------------------------------------------------------


def test_replay_runs_recorded_calls_through_the_current_code(bf: Bitfab) -> None:
    """A code change shows as ``changed`` with the changed path; the unchanged code gives ``same``."""
    version = {"v": 1}
    score = _scorer(bf, version)
    for text in ("a", "bb", "ccc"):
        score(text, weight=2)

    unchanged = score.replay()
    version["v"] = 2
    changed = score.replay()

    assert [item.verdict for item in unchanged] == ["same", "same", "same"]
    assert [item.verdict for item in changed] == ["changed", "changed", "changed"]
    assert [(c.path, c.kind, c.old, c.new) for item in changed for c in item.diff] == [
        ("$.version", "changed", 1, 2)
    ] * 3
    assert [item.result for item in changed] == [
        {"text": "ccc", "len": 6, "version": 2},
        {"text": "bb", "len": 4, "version": 2},
        {"text": "a", "len": 2, "version": 2},
    ]
    assert changed[0].original_output == {"text": "ccc", "len": 6, "version": 1}
    assert changed[0].input == {"args": ["ccc"], "kwargs": {"weight": 2}}
    assert changed.ok is False
    assert unchanged.ok is True


def test_replay_selects_the_newest_limit_roots_of_the_key(db: Path) -> None:
    """``limit=3`` of five recorded calls replays the three newest, newest first."""
    bf = Bitfab(db=str(db), clock=FakeClock())

    @bf.trace(key="echo")
    def echo(n: int) -> int:
        return n

    try:
        for n in range(5):
            echo(n)
        result = echo.replay(limit=3)
    finally:
        bf.shutdown(timeout=5)

    assert [(item.index, item.input["args"], item.result) for item in result] == [
        (0, [4], 4),
        (1, [3], 3),
        (2, [2], 2),
    ]


def test_calls_of_the_key_nested_in_other_traces_are_not_selected(bf: Bitfab) -> None:
    """Only root calls are replayed: a call of the key inside another traced call is not an item."""

    @bf.trace(key="leaf")
    def leaf(x: str) -> str:
        return x

    @bf.trace(key="outer")
    def outer() -> str:
        return leaf("nested")

    outer()
    leaf("root")

    result = leaf.replay(limit=10)

    assert [item.input["args"] for item in result] == [["root"]]


def test_trace_ids_select_exactly_those_and_report_unknown_ones(bf: Bitfab) -> None:
    """Given ids are replayed in the order given; unknown ids and other keys' traces are reported."""
    score = _scorer(bf, {"v": 1})

    @bf.trace(key="other")
    def other() -> int:
        return 1

    for text in ("a", "b", "c"):
        score(text)
    other()
    everything = score.replay(limit=3)
    ids = {item.input["args"][0]: item.original_trace_id for item in everything}
    other_trace = other.replay()[0].original_trace_id

    result = score.replay(trace_ids=[ids["a"], "no-such-trace", ids["c"], other_trace])

    assert [item.original_trace_id for item in result] == [ids["a"], ids["c"]]
    assert [item.input["args"] for item in result] == [["a"], ["c"]]
    assert result.unknown_trace_ids == ["no-such-trace", other_trace]
    assert "unknown trace ids: no-such-trace" in str(result)


def test_replays_are_never_selected_as_originals(bf: Bitfab, store: Store) -> None:
    """Replaying twice selects the same recorded calls, although the first replay stored new roots."""
    score = _scorer(bf, {"v": 1})
    for text in ("a", "b"):
        score(text)

    first = score.replay(limit=10)
    second = score.replay(limit=10)

    originals = [item.original_trace_id for item in first]
    assert len(originals) == 2
    assert [item.original_trace_id for item in second] == originals
    replay_roots = [
        record for record in replay_spans(store, first) if "parent_id" not in record["rawSpan"]
    ]
    assert len(replay_roots) == 2
    assert not {record["traceId"] for record in replay_roots} & set(originals)


def test_a_replay_trace_passed_in_trace_ids_is_not_replayed_as_an_original(bf: Bitfab) -> None:
    """A replay's own trace id is reported as unknown: replays are never originals, by id either."""
    score = _scorer(bf, {"v": 1})
    score("a")
    first = score.replay()
    replay_trace = first[0].trace_id
    assert replay_trace is not None

    result = score.replay(trace_ids=[replay_trace])

    assert [item.original_trace_id for item in result] == []
    assert result.unknown_trace_ids == [replay_trace]


def test_empty_trace_ids_replay_nothing(bf: Bitfab) -> None:
    """``trace_ids=[]`` means none, not "the newest ones"."""
    score = _scorer(bf, {"v": 1})
    score("a")

    result = score.replay(trace_ids=[])

    assert len(result) == 0
    assert result.message == "no recorded calls of 'score' to replay"


# ---- the result and the stored test run --------------------------------------------------


def test_the_test_run_is_stored_completed_with_its_items_and_summary(
    bf: Bitfab, store: Store
) -> None:
    """``get_test_run`` returns the run with status, verdicts, ids and the summary of the result."""
    version = {"v": 1}
    score = _scorer(bf, version)
    score("a")
    score("bb")
    version["v"] = 2

    result = score.replay(name="after the change")
    run = store.get_test_run(result.test_run_id or "")

    assert run is not None
    assert (run.key, run.name, run.status) == ("score", "after the change", "completed")
    assert run.completed_at is not None
    assert run.summary == result.summary.to_dict()
    assert run.summary["counts"]["changed"] == 2
    assert [
        (row.idx, row.verdict, row.original_trace_id, row.original_span_id, row.replay_trace_id)
        for row in run.items
    ] == [(i.index, i.verdict, i.original_trace_id, i.original_span_id, i.trace_id) for i in result]
    assert run.items[0].item["diff"] == [
        {"path": "$.version", "kind": "changed", "old": 1, "new": 2}
    ]
    assert result.test_run_url == f"/runs/{result.test_run_id}"
    assert [r.id for r in store.list_test_runs("score")] == [result.test_run_id]


def test_the_result_prints_as_a_table_and_converts_to_json(bf: Bitfab) -> None:
    """``print(result)`` names the key, verdicts, changed paths and the run; ``to_dict`` is JSON."""
    version = {"v": 1}
    score = _scorer(bf, version)
    score("a")
    version["v"] = 2

    result = score.replay(name="nightly")
    text = str(result)
    data = result.to_dict()

    assert text.splitlines()[0] == "replay of 'score' (nightly): 1 call"
    assert "changed" in text
    assert "$.version" in text
    assert f"test run: /runs/{result.test_run_id}" in text
    assert repr(result) == "<ReplayResult key='score' items=1 changed=1>"
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert data["test_run_id"] == result.test_run_id
    assert data["ok"] is False
    assert data["summary"]["counts"]["changed"] == 1
    assert data["items"][0]["diff"] == [
        {"path": "$.version", "kind": "changed", "old": 1, "new": 2}
    ]
    assert data["items"][0]["result"] == {"text": "a", "len": 1, "version": 2}


def test_raise_for_regressions_lists_the_changed_items(bf: Bitfab) -> None:
    """A changed output makes ``ok`` False and ``raise_for_regressions`` raise with the path."""
    version = {"v": 1}
    score = _scorer(bf, version)
    score("a")
    score.replay().raise_for_regressions()  # unchanged: no exception
    version["v"] = 2

    result = score.replay()

    assert result.ok is False
    with pytest.raises(RegressionError, match=r"\$\.version") as caught:
        result.raise_for_regressions()
    assert "1 of 1 replayed calls of 'score' regressed (1 changed)" in str(caught.value)


def test_dry_run_checks_inputs_without_calling_the_function_or_creating_a_run(
    bf: Bitfab, store: Store
) -> None:
    """``dry_run=True`` rebuilds and binds each input (verdict ``valid``), runs nothing, stores no run."""
    calls: list[str] = []

    @bf.trace(key="side_effect")
    def side_effect(text: str) -> str:
        calls.append(text)
        return text

    side_effect("a")
    side_effect("b")
    calls.clear()

    result = side_effect.replay(dry_run=True)

    assert calls == []
    assert [(item.verdict, item.input) for item in result] == [
        ("valid", {"args": ["b"], "kwargs": {}}),
        ("valid", {"args": ["a"], "kwargs": {}}),
    ]
    assert result.dry_run is True
    assert result.test_run_id is None
    assert store.list_test_runs() == []
    assert "[dry run]" in str(result)


def test_a_failing_completion_warns_and_still_returns_the_results(
    bf: Bitfab, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """When the backend can't complete the run: a warning, ``completed`` False, the items intact."""
    score = _scorer(bf, {"v": 1})
    score("a")

    def broken(self: LocalBackend, run_id: str, **_: Any) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(LocalBackend, "complete_run", broken)
    with caplog.at_level(logging.WARNING, logger="bitfab"):
        result = score.replay()

    assert result.completed is False
    assert [item.verdict for item in result] == ["same"]
    assert [
        r.getMessage() for r in caplog.records if "could not complete test run" in r.getMessage()
    ] == [
        f"bitfab: could not complete test run {result.test_run_id}: disk gone;"
        " the results are still returned"
    ]
    assert "warning: the test run could not be completed on the backend" in str(result)


def test_on_progress_is_called_once_per_item(bf: Bitfab) -> None:
    """``on_progress(done, total, item)`` counts up to the total, one call per item."""
    score = _scorer(bf, {"v": 1})
    for text in ("a", "b", "c"):
        score(text)
    seen: list[tuple[int, int, str]] = []

    score.replay(on_progress=lambda done, total, item: seen.append((done, total, item.verdict)))

    assert seen == [(1, 3, "same"), (2, 3, "same"), (3, 3, "same")]


def test_a_failing_on_progress_callback_does_not_stop_the_run(
    bf: Bitfab, caplog: pytest.LogCaptureFixture
) -> None:
    """``on_progress`` is the user's code too: if it raises, a warning is logged and the run goes on."""
    score = _scorer(bf, {"v": 1})
    score("a")
    score("b")

    def broken(done: int, total: int, item: Any) -> None:
        raise RuntimeError("progress bar crashed")

    with caplog.at_level(logging.WARNING, logger="bitfab"):
        result = score.replay(on_progress=broken)

    assert [i.verdict for i in result] == ["same", "same"]
    assert result.completed is True
    assert [r.getMessage() for r in caplog.records] == ["bitfab: on_progress raised; ignored"] * 2


# ---- the ways to call it -------------------------------------------------------------------


def test_the_functional_form_takes_the_function_or_its_key(bf: Bitfab) -> None:
    """``bf.replay(fn)`` and ``bf.replay("key")`` replay the same recorded calls as ``fn.replay()``."""
    score = _scorer(bf, {"v": 1})
    score("a")

    by_function = bf.replay(score, limit=1)
    by_key = bf.replay("score", limit=1, mock="none")

    assert [(i.verdict, i.original_trace_id) for i in by_function] == [
        (i.verdict, i.original_trace_id) for i in by_key
    ]
    assert by_key[0].verdict == "same"


def test_bitfab_replay_stays_the_replay_function_once_a_replay_has_run(bf: Bitfab) -> None:
    """``bitfab.replay`` (in ``__all__``) is still the default instance's ``replay`` after the
    ``bitfab.replay`` package has been imported, as the first replay does."""
    score = _scorer(bf, {"v": 1})
    score("a")
    score.replay()

    assert bitfab.replay == bitfab.default_instance().replay


def test_the_default_instance_replays_a_function_from_its_own_recorder(
    bf: Bitfab, db: Path
) -> None:
    """The module-level form on a function traced by another Bitfab replays that Bitfab's recorded
    calls and stores the run next to them, not in the default ``.bitfab/bitfab.db``."""
    score = _scorer(bf, {"v": 1})
    score("a")
    score("b")

    result = bitfab.default_instance().replay(score)

    assert [(i.verdict, i.input["args"]) for i in result] == [("same", ["b"]), ("same", ["a"])]
    with open_store(db) as own_store:
        assert own_store.get_test_run(result.test_run_id or "") is not None


class Greeter:
    """A class with traced methods; the greeting depends on the instance or the class."""

    prefix = "hello"

    def __init__(self, name: str) -> None:
        self.name = name


def _trace_greeter(bf: Bitfab) -> type[Greeter]:
    class Traced(Greeter):
        @bf.trace(key="greet")
        def greet(self, who: str) -> str:
            return f"{self.name}: hi {who}"

        @bf.trace(key="shout")
        @classmethod
        def shout(cls, who: str) -> str:
            return f"{cls.prefix} {who}".upper()

    return Traced


def test_a_method_replays_on_the_instance_it_is_called_on(bf: Bitfab) -> None:
    """``obj.method.replay()`` uses ``obj``; ``receiver=`` does the same through the functional form."""
    traced = _trace_greeter(bf)
    traced("ann").greet("bob")

    same = traced("ann").greet.replay()
    changed = traced("eve").greet.replay()
    by_key = bf.replay("greet", receiver=traced("eve"))

    assert [i.verdict for i in same] == ["same"]
    assert [(i.verdict, i.result, i.input) for i in changed] == [
        ("changed", "eve: hi bob", {"args": ["bob"], "kwargs": {}})
    ]
    assert [i.result for i in by_key] == ["eve: hi bob"]


def test_a_classmethod_replays_on_its_class(bf: Bitfab) -> None:
    """``Class.classmethod.replay()`` runs with the class as ``cls``; a subclass changes the output."""
    traced = _trace_greeter(bf)
    traced.shout("bob")

    class Polite(traced):  # type: ignore[misc,valid-type]
        prefix = "dear"

    same = traced.shout.replay()
    changed = Polite.shout.replay()

    assert [(i.verdict, i.result) for i in same] == [("same", "HELLO BOB")]
    assert [(i.verdict, i.result) for i in changed] == [("changed", "DEAR BOB")]


def test_an_unbound_instance_method_is_refused_with_a_clear_error(bf: Bitfab) -> None:
    """``Class.method.replay()`` has no instance to run on: a ReplayError says how to give one."""
    traced = _trace_greeter(bf)
    traced("ann").greet("bob")

    with pytest.raises(ReplayError, match=r"obj\.greet\.replay\(\.\.\.\), or pass receiver=obj"):
        traced.greet.replay()
    with pytest.raises(ReplayError, match="receiver=obj"):
        bf.replay("greet")


def test_areplay_runs_inside_an_event_loop(bf: Bitfab) -> None:
    """``await fn.areplay()`` and ``await bf.areplay(fn)`` work where ``replay()`` can't."""

    @bf.trace(key="fetch")
    async def fetch(n: int) -> int:
        await asyncio.sleep(0)
        return n * 2

    asyncio.run(fetch(21))

    async def main() -> tuple[ReplayResult, ReplayResult]:
        return await fetch.areplay(), await bf.areplay(fetch)

    method_form, functional_form = asyncio.run(main())

    assert [(i.verdict, i.result) for i in method_form] == [("same", 42)]
    assert [(i.verdict, i.result) for i in functional_form] == [("same", 42)]


def test_sync_replay_inside_a_running_loop_points_to_areplay(bf: Bitfab) -> None:
    """``replay()`` called from a coroutine raises a ReplayError that names ``areplay()``."""
    score = _scorer(bf, {"v": 1})
    score("a")

    async def main() -> None:
        score.replay()

    with pytest.raises(ReplayError, match=r"await fn\.areplay\(\.\.\.\)"):
        asyncio.run(main())


# ---- bad input -----------------------------------------------------------------------------


def test_an_unknown_key_raises_a_registry_error_listing_the_known_keys(bf: Bitfab) -> None:
    """``bf.replay("typo")`` names the known keys."""
    _scorer(bf, {"v": 1})

    @bf.trace(key="alpha")
    def alpha() -> None:
        return None

    with pytest.raises(
        RegistryError, match="no traced function has key 'scroe'; known keys: alpha, score"
    ):
        bf.replay("scroe")


def test_an_untraced_function_is_refused(bf: Bitfab) -> None:
    """Only traced functions replay: a plain one gets a ReplayError saying how to trace it."""

    def plain() -> None:
        return None

    with pytest.raises(ReplayError, match=r"decorate it with @bitfab\.trace\(key=\.\.\.\)"):
        bf.replay(plain)


def test_no_recorded_calls_gives_an_empty_result_with_a_message(bf: Bitfab, db: Path) -> None:
    """Replaying a key that was never called returns no items, says so, is not a regression and
    leaves no empty test run behind."""
    score = _scorer(bf, {"v": 1})

    result = score.replay()

    assert len(result) == 0
    assert result.ok is True
    assert result.message == "no recorded calls of 'score' to replay"
    assert str(result).splitlines()[0] == "no recorded calls of 'score' to replay"
    assert (result.test_run_id, result.test_run_url) == (None, None)
    with open_store(db) as store:
        assert store.list_test_runs("score") == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"limit": 0}, "limit must be a positive integer"),
        ({"limit": True}, "limit must be a positive integer"),
        ({"max_concurrency": 0}, "max_concurrency must be a positive integer"),
        ({"mock": "some"}, "mock must be 'marked', 'all' or 'none'"),
        ({"trace_ids": "abc"}, "trace_ids takes a list of trace ids"),
        ({"ignore": ["created_at"]}, "invalid ignore path"),
    ],
)
def test_invalid_options_are_refused_before_anything_runs(
    bf: Bitfab, store: Store, options: dict[str, Any], message: str
) -> None:
    """A bad option raises a ReplayError naming it, and no test run is created."""
    score = _scorer(bf, {"v": 1})
    score("a")

    with pytest.raises(ReplayError, match=message):
        score.replay(**options)
    assert store.list_test_runs() == []


def test_is_replaying_is_false_outside_a_replay(bf: Bitfab) -> None:
    """Recording and the code around ``replay()`` see ``is_replaying()`` False; the replayed call True."""
    seen: list[tuple[bool, bool]] = []

    @bf.trace(key="probe")
    def probe() -> None:
        seen.append((bitfab.is_replaying(), bf.is_replaying()))

    probe()
    probe.replay()

    assert seen == [(False, False), (True, True)]
    assert (bitfab.is_replaying(), bf.is_replaying()) == (False, False)
