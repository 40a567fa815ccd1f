"""Recording-side faults (RELIABILITY.md C1, C3-C9): encoding never breaks the traced call."""

from __future__ import annotations

import dataclasses
import io
import json
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from codec_helpers import Node, Priority
from pydantic import BaseModel

from bitfab.codec import Encoded, Limits, decode_value, encode_call, encode_value
from bitfab.exceptions import ReplayDecodeError

CAP = 256 * 1024


def unserializable(name: str, path: str = "$[0]") -> tuple[str, dict[str, Any], tuple[str, ...]]:
    """The readable value, sidecar node and problems of a placeholder for type ``name``."""
    return (
        f"<unserializable: {name}>",
        [["custom", "bitfab:unserializable", {"type": name}]],
        (f"unserializable {name} at {path}",),
    )


@pytest.fixture
def open_file(tmp_path: Any) -> Iterator[io.TextIOWrapper]:
    with open(tmp_path / "f.txt", "w") as handle:
        yield handle


@pytest.fixture
def sock() -> Iterator[socket.socket]:
    with socket.socket() as s:
        yield s


def test_unserializable_arguments_become_placeholders(
    open_file: io.TextIOWrapper, sock: socket.socket
) -> None:
    """Locks, sockets, files, lambdas, modules, threads and classes become placeholders (C1)."""
    cases = [
        (threading.Lock(), "_thread.lock"),
        (sock, "socket.socket"),
        (open_file, "_io.TextIOWrapper"),
        (lambda: 1, "builtins.function"),
        (json, "builtins.module"),
        (threading.Thread(target=print), "threading.Thread"),
        (dict, "builtins.type"),
        (print, "builtins.builtin_function_or_method"),
    ]
    for obj, name in cases:
        text, node, problems = unserializable(name)
        assert encode_call((obj,), {"n": 1}) == Encoded(
            [text, {"n": 1}],
            {"v": 1, "kwarg_names": ["n"], "values": {"0": node}},
            problems,
            encode_call((obj,), {"n": 1}).size,
        )


def test_unserializable_values_refuse_to_decode() -> None:
    """A placeholder is never replayed as its text: decoding it names the tag and the path."""
    encoded = encode_call((1, threading.Lock()), {})
    with pytest.raises(ReplayDecodeError) as caught:
        decode_value(encoded.value, encoded.meta)
    assert caught.value.path == "$[1]"
    assert "bitfab:unserializable" in caught.value.reason


class Boom(BaseException):
    """A BaseException that is neither KeyboardInterrupt nor SystemExit."""


class RaisesEverywhere:
    def __repr__(self) -> str:
        raise Boom

    def __len__(self) -> int:
        raise Boom

    def __iter__(self) -> Iterator[Any]:
        raise Boom

    def __getattr__(self, name: str) -> Any:
        raise Boom

    def __eq__(self, other: object) -> bool:
        raise Boom

    def __lt__(self, other: object) -> bool:
        raise Boom

    __hash__ = object.__hash__


class LiesAboutClass:
    @property  # type: ignore[misc]
    def __class__(self) -> type:
        raise Boom


@dataclasses.dataclass
class BadField:
    x: int

    def __getattribute__(self, name: str) -> Any:
        if name == "x":
            raise Boom
        return object.__getattribute__(self, name)


class BadModel(BaseModel):
    x: int

    def __getattribute__(self, name: str) -> Any:
        if name == "x":
            raise ValueError("no")
        return super().__getattribute__(name)

    def model_dump(self, *args: Any, **kwargs: Any) -> Any:
        raise Boom


class BadList(list[int]):
    def __iter__(self) -> Iterator[int]:
        raise Boom

    def __len__(self) -> int:
        raise Boom


def test_objects_that_raise_become_placeholders() -> None:
    """Objects whose dunders, fields or properties raise (even BaseException) don't escape (C3)."""
    values = [
        RaisesEverywhere(),
        LiesAboutClass(),
        BadField(1),
        BadModel(x=1),
        {RaisesEverywhere(), RaisesEverywhere()},
        BadList([1, 2]),
        "fine",
    ]
    encoded = encode_call(tuple(values), {})
    prefix = "test_codec_faults."
    assert encoded.value == [
        f"<unserializable: {prefix}RaisesEverywhere>",
        f"<unserializable: {prefix}LiesAboutClass>",
        f"<unserializable: {prefix}BadField>",
        f"<unserializable: {prefix}BadModel>",
        [f"<unserializable: {prefix}RaisesEverywhere>"] * 2,
        [1, 2],
        "fine",
    ]
    assert encoded.problems == (
        f"unserializable {prefix}RaisesEverywhere at $[0]",
        f"unserializable {prefix}LiesAboutClass at $[1] (test_codec_faults.Boom raised)",
        f"unserializable {prefix}BadField at $[2] (test_codec_faults.Boom raised)",
        f"unserializable {prefix}BadModel at $[3] (builtins.ValueError raised)",
        f"unserializable {prefix}RaisesEverywhere at $[4][0]",
        f"unserializable {prefix}RaisesEverywhere at $[4][1]",
        f"not exactly restorable: {prefix}BadList at $[5]",
    )


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_and_system_exit_propagate(exc: type[BaseException]) -> None:
    """KeyboardInterrupt and SystemExit raised by a user object are not swallowed."""

    @dataclasses.dataclass
    class Interrupting:
        x: int

        def __getattribute__(self, name: str) -> Any:
            if name == "x":
                raise exc
            return object.__getattribute__(self, name)

    with pytest.raises(exc):
        encode_value({"a": [Interrupting(1)]})


def test_cycles_terminate_with_a_marker() -> None:
    """Self-containing lists, self-referencing dataclasses and mutual dict cycles terminate (C4)."""
    loop: list[Any] = [1]
    loop.append(loop)
    node = Node("n")
    node.ref = node
    a: dict[str, Any] = {}
    b = {"a": a}
    a["b"] = b
    encoded = encode_value({"list": loop, "node": node, "dicts": a})
    assert encoded.value == {
        "list": [1, "<cycle>"],
        "node": {"name": "n", "ref": "<cycle>"},
        "dicts": {"b": {"a": "<cycle>"}},
    }
    assert encoded.meta == {
        "v": 1,
        "values": {
            "list.1": [["custom", "bitfab:cycle"]],
            "node": [
                ["custom", "py:dataclass", {"class": "codec_helpers:Node"}],
                {"ref": [["custom", "bitfab:cycle"]]},
            ],
            "dicts.b.a": [["custom", "bitfab:cycle"]],
        },
    }
    assert encoded.problems == (
        "cycle at $.list[1]",
        "cycle at $.node.ref",
        "cycle at $.dicts.b.a",
    )


def test_shared_values_that_are_not_cycles_are_encoded_twice() -> None:
    """A value reachable twice without a cycle (a DAG) is encoded in full both times."""
    shared = [Priority.LOW]
    encoded = encode_value([shared, {"again": shared}])
    assert encoded.value == [[1], {"again": [1]}]
    assert encoded.problems == ()


def test_ten_thousand_levels_stop_at_the_depth_limit() -> None:
    """A 10,000-deep list is cut at max_depth with a marker, without RecursionError (C5)."""
    deep: list[Any] = []
    for _ in range(10_000):
        deep = [deep]
    encoded = encode_value(deep)
    expected: Any = "<max depth>"
    for _ in range(33):
        expected = [expected]
    assert encoded.value == expected
    assert encoded.problems == ("max depth at $" + "[0]" * 33,)
    assert encoded.meta == {"v": 1, "values": {".".join(["0"] * 33): [["custom", "bitfab:depth"]]}}


def _frames_left(depth: int = 0) -> int:
    """How many more nested calls fit on the stack from the caller's frame."""
    try:
        return _frames_left(depth + 1)
    except RecursionError:
        return depth


def test_encoding_near_the_recursion_limit_degrades_to_markers() -> None:
    """Called with little stack left, encoding places depth markers instead of raising."""
    nested: list[Any] = []
    for _ in range(40):
        nested = [{"k": nested}]
    limits = Limits(max_depth=1_000)

    def dive(remaining: int) -> Encoded:
        if remaining > 0:
            return dive(remaining - 1)
        return encode_value(nested, limits=limits)

    frames = _frames_left()
    for headroom in range(6, 120, 2):
        encoded = dive(frames - headroom)
        assert type(encoded) is Encoded
        assert encoded.problems
        assert encoded.problems[0].startswith("max depth at $")


def test_huge_string_is_cut_without_copying_it() -> None:
    """A 100 MB string is cut to the field budget with its size kept, in bounded memory (C6)."""
    big = "x" * (100 * 1024 * 1024)
    tracemalloc.start()
    try:
        encoded = encode_value({"body": big})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    body = encoded.value["body"]
    assert CAP - 64 <= len(body) <= CAP
    assert encoded._replace(value=None, size=0) == Encoded(
        None,
        {
            "v": 1,
            "values": {"body": [["custom", "bitfab:truncated", {"size": len(big), "kind": "str"}]]},
        },
        ("truncated str at $.body",),
        0,
    )
    assert peak < 2 * CAP


def test_huge_bytes_view_is_cut_in_bounded_memory() -> None:
    """A 64 MB memoryview is recorded as its prefix, without copying the whole buffer (C6)."""
    view = memoryview(bytearray(64 * 1024 * 1024))
    tracemalloc.start()
    try:
        encoded = encode_value(view)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(encoded.value) <= CAP
    assert encoded.meta == {
        "v": 1,
        "values": [
            [
                "custom",
                "bitfab:truncated",
                {"size": 64 * 1024 * 1024, "kind": "memoryview", "encoding": "utf-8"},
            ]
        ],
    }
    assert encoded.problems == ("memoryview encoded as bytes at $", "truncated memoryview at $")
    assert peak < 3 * CAP


def test_ten_million_items_are_cut_fast() -> None:
    """A 10M-element list keeps max_items items and records its length, quickly (C6)."""
    items = [0] * 10_000_000
    started = time.perf_counter()
    encoded = encode_value(items)
    elapsed = time.perf_counter() - started
    assert encoded._replace(size=0) == Encoded(
        [0] * 10_000,
        {"v": 1, "values": [["custom", "bitfab:truncated", {"size": 10_000_000, "kind": "list"}]]},
        ("truncated list at $",),
        0,
    )
    assert elapsed < 1.0


def test_budget_is_shared_across_the_whole_call() -> None:
    """Arguments share one budget: a later big argument is cut once earlier ones used it up."""
    first = "a" * 600
    encoded = encode_call((first, "b" * 600), {}, budget=1_000)
    assert encoded.value[0] == first
    assert 300 < len(encoded.value[1]) < 400
    assert encoded.problems == ("truncated str at $[1]",)
    assert encoded.size <= 1_000


def test_items_past_the_budget_are_dropped_with_a_marker() -> None:
    """When the budget runs out inside a container, the rest of its items are dropped."""
    encoded = encode_value({f"k{i}": i for i in range(1_000)}, budget=200)
    assert 0 < len(encoded.value) < 30
    assert encoded.meta == {
        "v": 1,
        "values": [["custom", "bitfab:truncated", {"size": 1_000, "kind": "dict"}]],
    }
    assert encoded.problems == ("truncated dict at $",)


def test_problems_are_capped() -> None:
    """A thousand placeholders give fifty problem lines and a count of the rest."""
    encoded = encode_value([threading.Lock() for _ in range(1_000)])
    assert len(encoded.problems) == 51
    assert encoded.problems[-1] == "... and 950 more problems"


def test_mutating_arguments_after_encoding_changes_nothing() -> None:
    """The encoded input is a snapshot: later mutation of the arguments does not show (C7, C8)."""
    items = [1, 2]
    arg = {"items": items, "meta": {"k": "v"}, "raw": bytearray(b"ab")}
    node = Node("n", ref=items)
    encoded = encode_call((arg, items, node), {"opt": items})
    items.append(3)
    arg["meta"]["k"] = "changed"  # type: ignore[index]
    arg["raw"].extend(b"cd")  # type: ignore[attr-defined]
    node.name = "renamed"
    assert encoded.value == [
        {"items": [1, 2], "meta": {"k": "v"}, "raw": "ab"},
        [1, 2],
        {"name": "n", "ref": [1, 2]},
        {"opt": [1, 2]},
    ]
    assert encoded.value[1] is not items


def test_fast_path_result_is_a_fresh_list() -> None:
    """Even the scalar fast path returns a new list, never the caller's tuple or list."""
    args = (1, "a", None, 2.5, True)
    encoded = encode_call(args, {})
    assert encoded == Encoded([1, "a", None, 2.5, True], None, (), encoded.size)
    assert type(encoded.value) is list


def test_generators_and_iterators_are_not_consumed() -> None:
    """Generator and iterator arguments are recorded as markers and left untouched (C9)."""
    gen = (i for i in range(3))
    it = iter([4, 5])
    encoded = encode_call((gen,), {"it": it})
    assert encoded.value == [
        "<generator: builtins.generator>",
        {"it": "<generator: builtins.list_iterator>"},
    ]
    assert encoded.problems == (
        "generator builtins.generator at $[0] (not consumed)",
        "generator builtins.list_iterator at $[1].it (not consumed)",
    )
    assert list(gen) == [0, 1, 2]
    assert list(it) == [4, 5]
    with pytest.raises(ReplayDecodeError, match="bitfab:generator"):
        decode_value(encoded.value, encoded.meta)


def test_limits_reject_negative_values() -> None:
    """Limits refuse negative or non-int bounds when they are built."""
    for bad in ({"max_items": -1}, {"max_depth": -1}, {"max_field_bytes": 1.5}):
        with pytest.raises(ValueError):
            Limits(**bad)  # type: ignore[arg-type]


def test_small_limits_cut_early() -> None:
    """max_depth and max_items apply to every container, including dataclasses and dicts."""
    limits = Limits(max_depth=1, max_items=3)
    encoded = encode_value({"a": [[1]], "b": [1, 2, 3, 4], "c": Node("x")}, limits=limits)
    assert encoded.value == {
        "a": ["<max depth>"],
        "b": [1, 2, 3],
        "c": {"name": "x", "ref": None},
    }
    assert encoded.problems == ("max depth at $.a[0]", "truncated list at $.b")
