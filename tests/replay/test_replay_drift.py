"""Inputs rebuilt exactly and bound to the current signature; verdicts and comparison options.

A signature change is modelled as the next deploy would see it: a second Bitfab on the same store
traces the new version of the function under the same key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import itertools
import json
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pydantic
import pytest

from bitfab import Bitfab


class Priority(enum.Enum):
    LOW = "low"
    HIGH = "high"


@dataclasses.dataclass
class Ticket:
    id: int
    opened: dt.datetime
    priority: Priority


@dataclasses.dataclass
class OldTicket:
    id: int


@dataclasses.dataclass
class RenamedTicket:
    id: int


class Request(pydantic.BaseModel):
    text: str
    tags: tuple[str, ...]
    due: dt.date | None = None


# ---- inputs rebuilt exactly ----------------------------------------------------------------


def test_recorded_inputs_are_rebuilt_with_their_exact_types(bf: Bitfab) -> None:
    """Dataclass, pydantic model, enum, aware and naive datetimes, tuple and kwargs come back equal
    and of the same type as they were passed."""
    received: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    @bf.trace(key="triage")
    def triage(
        ticket: Ticket,
        request: Request,
        pair: tuple[int, str],
        *,
        at: dt.datetime,
        level: Priority = Priority.LOW,
    ) -> str:
        received.append(((ticket, request, pair), {"at": at, "level": level}))
        return f"{ticket.id}:{level.value}"

    args = (
        Ticket(7, dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc), Priority.HIGH),
        Request(text="printer on fire", tags=("hw", "urgent"), due=dt.date(2024, 5, 2)),
        (1, "two"),
    )
    kwargs = {"at": dt.datetime(2024, 5, 1, 13, 0), "level": Priority.HIGH}
    triage(*args, **kwargs)
    received.clear()

    result = triage.replay()

    assert [item.verdict for item in result] == ["same"]
    assert received == [(args, kwargs)]
    (ticket, request, pair), rebuilt_kwargs = received[0]
    assert type(ticket) is Ticket
    assert type(ticket.opened) is dt.datetime and ticket.opened.tzinfo == dt.timezone.utc
    assert type(ticket.priority) is Priority
    assert type(request) is Request and type(request.tags) is tuple
    assert type(pair) is tuple
    assert rebuilt_kwargs["at"].tzinfo is None
    assert type(rebuilt_kwargs["level"]) is Priority
    assert result[0].input == {"args": list(args), "kwargs": kwargs}
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["items"][0]["input"]["args"][0] == {
        "id": 7,
        "opened": "2024-05-01T12:30:00+00:00",
        "priority": "high",
    }


def test_a_renamed_class_replays_through_its_alias(db: Path) -> None:
    """Recorded as ``OldTicket``, the class is now ``RenamedTicket``: refused until the old name is
    registered as an alias, then rebuilt as the new class."""
    old = Bitfab(db=str(db))

    @old.trace(key="close")
    def close(ticket: OldTicket) -> int:
        return ticket.id

    close(OldTicket(3))
    old.flush()
    new = Bitfab(db=str(db))
    received: list[Any] = []

    @new.trace(key="close")
    def close_v2(ticket: RenamedTicket) -> int:
        received.append(ticket)
        return ticket.id

    before = close_v2.replay()
    new.register_type(RenamedTicket, aliases=[f"{__name__}:OldTicket"])
    after = close_v2.replay()

    assert [i.verdict for i in before] == ["not_replayable"]
    assert f"class '{__name__}:OldTicket' is not allowed" in (before[0].error or "")
    assert [(i.verdict, i.result) for i in after] == [("same", 3)]
    assert received == [RenamedTicket(3)]


# ---- the current signature -----------------------------------------------------------------


def _record_v1(db: Path) -> None:
    """Version 1 of ``summarize``: two calls, one with a keyword argument."""
    old = Bitfab(db=str(db))

    @old.trace(key="summarize")
    def summarize(text: str, *, style: str = "short") -> str:
        return f"{style}:{text}"

    summarize("a")
    summarize("b", style="long")
    old.flush()


def _deploy(db: Path, fn: Any) -> Any:
    """Trace ``fn`` as the new version of ``summarize`` (a new Bitfab on the same store)."""
    return Bitfab(db=str(db)).trace(key="summarize")(fn)


def _outcomes(result: Any) -> list[tuple[str, Any]]:
    return [(item.verdict, item.error or item.result) for item in result]


def test_a_parameter_added_with_a_default_gets_the_default(db: Path) -> None:
    """Recorded calls bind to the new signature; the new parameter takes its default."""
    _record_v1(db)

    def summarize(text: str, *, style: str = "short", lang: str = "en") -> str:
        return f"{style}:{text}" if lang == "en" else "?"

    result = _deploy(db, summarize).replay()

    assert _outcomes(result) == [("same", "long:b"), ("same", "short:a")]


def test_a_removed_keyword_parameter_fails_the_items_that_passed_it(db: Path) -> None:
    """The call that passed ``style`` is ``not_replayable`` with an error naming it; the other runs."""
    _record_v1(db)

    def summarize(text: str) -> str:
        return f"short:{text}"

    result = _deploy(db, summarize).replay()

    assert [item.verdict for item in result] == ["not_replayable", "same"]
    error = result[0].error or ""
    assert error.startswith("recorded argument 'style' is not a parameter of summarize(text")
    assert error.endswith("any more (removed or renamed?)")
    assert result[0].error_type == "NotReplayable"
    assert result.ok is False


def test_a_renamed_keyword_parameter_is_named_in_the_error(db: Path) -> None:
    """Renaming ``style`` to ``tone`` fails the call that passed ``style``, naming it."""
    _record_v1(db)

    def summarize(text: str, *, tone: str = "short") -> str:
        return f"{tone}:{text}"

    result = _deploy(db, summarize).replay()

    assert [item.verdict for item in result] == ["not_replayable", "same"]
    assert "recorded argument 'style' is not a parameter of summarize" in (result[0].error or "")


def test_a_new_required_parameter_fails_every_item_naming_it(db: Path) -> None:
    """A parameter added without a default has no recorded value: each item names it."""
    _record_v1(db)

    def summarize(text: str, *, style: str = "short", model: str) -> str:
        return text

    result = _deploy(db, summarize).replay()

    assert [item.verdict for item in result] == ["not_replayable", "not_replayable"]
    assert all("required parameter 'model'" in (item.error or "") for item in result)


def test_a_removed_positional_parameter_fails_with_the_counts(db: Path) -> None:
    """Positional values carry no names: the error gives the recorded count and the new signature."""
    old = Bitfab(db=str(db))

    @old.trace(key="add")
    def add(a: int, b: int) -> int:
        return a + b

    add(1, 2)
    old.flush()

    def add_v2(a: int) -> int:
        return a

    result = Bitfab(db=str(db)).trace(key="add")(add_v2).replay()

    assert [item.verdict for item in result] == ["not_replayable"]
    error = result[0].error or ""
    assert error.startswith("2 positional arguments were recorded but add_v2(a")
    assert error.endswith("takes 1")


def test_adapt_inputs_reshapes_recorded_inputs_for_the_new_signature(db: Path) -> None:
    """``adapt_inputs(args, kwargs, ctx)`` renames the old keyword; every item then runs."""
    _record_v1(db)
    contexts: list[Mapping[str, Any]] = []

    def summarize(text: str, *, tone: str = "short") -> str:
        return f"{tone}:{text}"

    def adapt(
        args: tuple[Any, ...], kwargs: dict[str, Any], ctx: Mapping[str, Any]
    ) -> tuple[Sequence[Any], Mapping[str, Any]]:
        contexts.append(ctx)
        if "style" in kwargs:
            kwargs = {"tone": kwargs["style"]}
        return args, kwargs

    result = _deploy(db, summarize).replay(adapt_inputs=adapt)

    assert _outcomes(result) == [("same", "long:b"), ("same", "short:a")]
    assert sorted(ctx["index"] for ctx in contexts) == [0, 1]
    assert {ctx["key"] for ctx in contexts} == {"summarize"}
    assert {(ctx["trace_id"], ctx["span_id"]) for ctx in contexts} == {
        (item.original_trace_id, item.original_span_id) for item in result
    }


def test_adapt_inputs_raising_fails_only_that_item(db: Path) -> None:
    """An exception in ``adapt_inputs`` is that item's ``not_replayable`` reason."""
    _record_v1(db)

    def adapt(args: tuple[Any, ...], kwargs: dict[str, Any], ctx: Any) -> Any:
        if kwargs:
            raise KeyError("style")
        return args, kwargs

    result = _deploy(db, lambda text, *, style="short": f"{style}:{text}").replay(
        adapt_inputs=adapt
    )

    assert _outcomes(result) == [
        ("not_replayable", "adapt_inputs raised KeyError: 'style'"),
        ("same", "short:a"),
    ]


def test_adapt_inputs_returning_a_malformed_shape_fails_the_item_not_the_run(
    db: Path,
) -> None:
    """``adapt_inputs`` returning ``(1, 2)`` (not ``(args, kwargs)``) is that item's failure: the run
    still completes and the other items are replayed."""
    _record_v1(db)

    def adapt(args: tuple[Any, ...], kwargs: dict[str, Any], ctx: Any) -> Any:
        return (1, 2) if kwargs else (args, kwargs)

    result = _deploy(db, lambda text, *, style="short": f"{style}:{text}").replay(
        adapt_inputs=adapt
    )

    assert [item.verdict for item in result] == ["not_replayable", "same"]
    assert "adapt_inputs" in (result[0].error or "")


def test_a_recording_flagged_not_replayable_fails_with_the_recorded_reason(bf: Bitfab) -> None:
    """A lock argument was recorded as a placeholder: that item fails with why, and never runs."""
    calls: list[Any] = []

    @bf.trace(key="guarded")
    def guarded(lock: Any, n: int) -> int:
        calls.append(lock)
        return n

    guarded(threading.Lock(), 1)
    guarded("no lock", 2)
    calls.clear()

    result = guarded.replay()

    assert _outcomes(result) == [
        ("same", 2),
        ("not_replayable", "not replayable: unserializable _thread.lock at $[0]"),
    ]
    assert calls == ["no lock"]


# ---- verdicts --------------------------------------------------------------------------------


def test_each_verdict_on_the_same_recording(bf: Bitfab) -> None:
    """One recording, four code versions: ``same``, ``changed``, ``error``, ``fixed``, ``still_error``."""
    mode = {"now": "ok"}

    @bf.trace(key="parse")
    def parse(text: str) -> int:
        if text == "bad" and mode["now"] != "fixed":
            raise ValueError(f"cannot parse {text!r}")
        if mode["now"] == "raise":
            raise RuntimeError("new bug")
        return len(text) + (1 if mode["now"] == "off-by-one" else 0)

    parse("good")
    with pytest.raises(ValueError):
        parse("bad")

    def verdicts() -> list[tuple[str, str | None, str | None]]:
        return [(i.verdict, i.error, i.original_error) for i in parse.replay()]

    was_bad = "cannot parse 'bad'"
    assert verdicts() == [
        ("still_error", "ValueError: cannot parse 'bad'", was_bad),
        ("same", None, None),
    ]
    mode["now"] = "off-by-one"
    assert [v for v, _, _ in verdicts()] == ["still_error", "changed"]
    mode["now"] = "raise"
    assert verdicts()[1] == ("error", "RuntimeError: new bug", None)
    mode["now"] = "fixed"
    assert verdicts()[0] == ("fixed", None, was_bad)


def test_ignore_paths_hide_volatile_fields(bf: Bitfab) -> None:
    """``$.created_at`` and ``$.items[*].id`` differ on every call; ignored, the output is ``same``."""
    ids = itertools.count()

    @bf.trace(key="order")
    def order(names: list[str]) -> dict[str, Any]:
        return {
            "created_at": dt.datetime.now(dt.timezone.utc),
            "items": [{"id": str(uuid.UUID(int=next(ids))), "name": n} for n in names],
            "count": len(names),
        }

    order(["x", "y"])

    plain = order.replay()
    ignored = order.replay(ignore=["$.created_at", "$.items[*].id"])

    assert sorted(c.path for c in plain[0].diff) == [
        "$.created_at",
        "$.items[0].id",
        "$.items[1].id",
    ]
    assert (ignored[0].verdict, ignored[0].diff) == ("same", [])


def test_compare_returning_a_bool_decides_the_verdict(bf: Bitfab) -> None:
    """A ``compare(original, new)`` hook wins over the diff; it gets the rebuilt values."""
    version = {"v": 1}

    @bf.trace(key="answer")
    def answer(q: str) -> Ticket:
        return Ticket(version["v"], dt.datetime(2024, 1, 1), Priority.LOW)

    answer("q")
    version["v"] = 2
    pairs: list[tuple[Any, Any]] = []

    def same_priority(original: Ticket, new: Ticket) -> bool:
        pairs.append((original, new))
        return original.priority == new.priority

    result = answer.replay(compare=same_priority)

    assert [i.verdict for i in result] == ["same"]
    assert pairs == [
        (
            Ticket(1, dt.datetime(2024, 1, 1), Priority.LOW),
            Ticket(2, dt.datetime(2024, 1, 1), Priority.LOW),
        )
    ]


@pytest.mark.parametrize(("min_score", "expected"), [(0.5, "same"), (0.9, "changed")])
def test_compare_returning_a_score_is_held_to_min_score(
    bf: Bitfab, min_score: float, expected: str
) -> None:
    """A float from ``compare`` is ``same`` at or above ``min_score``, else ``changed``; it is kept."""
    words = {"w": ["a", "b", "c", "d"]}

    @bf.trace(key="tags")
    def tags() -> list[str]:
        return list(words["w"])

    tags()
    words["w"] = ["a", "b", "c", "x"]

    def overlap(original: list[str], new: list[str]) -> float:
        return len(set(original) & set(new)) / len(set(original) | set(new))

    result = tags.replay(compare=overlap, min_score=min_score)

    assert [(i.verdict, i.score) for i in result] == [(expected, 0.6)]


def test_compare_raising_is_an_error_of_that_item(bf: Bitfab) -> None:
    """A crashing ``compare`` hook makes the item an ``error`` saying so, not a crash of the run."""

    @bf.trace(key="const")
    def const() -> int:
        return 1

    const()

    def broken(original: Any, new: Any) -> bool:
        raise ZeroDivisionError("oops")

    result = const.replay(compare=broken)

    assert _outcomes(result) == [("error", "compare raised ZeroDivisionError: oops")]
