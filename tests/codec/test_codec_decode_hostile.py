"""Decoding hostile recorded data (RELIABILITY.md D1-D5): no import, no call, clear errors."""

from __future__ import annotations

import base64
import builtins
import dataclasses
import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from codec_helpers import TYPES, Box, Customer, Point, Priority

from bitfab.codec import TypeAllowList, decode_call, decode_value
from bitfab.codec.decode import MAX_DECODE_DEPTH
from bitfab.exceptions import ReplayDecodeError

# A protocol-0 pickle of os.system("echo pwned"), written out by hand.
PICKLE_BLOB = b"cos\nsystem\n(S'echo pwned'\ntR."


@contextmanager
def sentinels(*, allow_loaded: bool = False) -> Iterator[list[str]]:
    """Replace importing, os.system and subprocess.Popen with traps that record any call.

    With ``allow_loaded``, ``import`` statements of modules that are already loaded pass
    (pydantic-core runs ``import enum`` while it builds a validation error); loading a new
    module is still trapped.
    """
    called: list[str] = []
    real_import = builtins.__import__

    def trap(name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> Any:
            called.append(name)
            raise AssertionError(f"{name} called during decode")

        return record

    def import_trap(name: str, *args: Any, **kwargs: Any) -> Any:
        if allow_loaded and name in sys.modules:
            return real_import(name, *args, **kwargs)
        called.append(f"__import__({name})")
        raise AssertionError(f"import {name} during decode")

    saved = (builtins.__import__, importlib.import_module, os.system, subprocess.Popen)
    builtins.__import__ = import_trap
    importlib.import_module = trap("importlib.import_module")
    os.system = trap("os.system")
    subprocess.Popen = trap("subprocess.Popen")  # type: ignore[misc]
    try:
        yield called
    finally:
        builtins.__import__, importlib.import_module, os.system, subprocess.Popen = saved  # type: ignore[misc]


def decode_guarded(
    value: Any, meta: Any, types: TypeAllowList | None = None, *, allow_loaded: bool = False
) -> Any:
    """Decode under the sentinels; returns the result or the ReplayDecodeError raised."""
    with sentinels(allow_loaded=allow_loaded) as called:
        try:
            result: Any = decode_value(value, meta, types=types)
        except ReplayDecodeError as error:
            result = error
    assert called == []
    return result


def custom(tag: str, params: dict[str, Any] | None = None) -> list[Any]:
    return [["custom", tag] if params is None else ["custom", tag, params]]


MALICIOUS_TAGS = [
    ("$t", custom("os.system")),
    ("os-system", custom("os:system", {"args": ["touch pwned"]})),
    ("eval-dataclass", custom("py:dataclass", {"class": "builtins:eval"})),
    ("popen-namedtuple", custom("py:namedtuple", {"class": "subprocess:Popen"})),
    ("import-enum", custom("py:enum", {"class": "importlib:import_module"})),
    ("system-model", custom("py:model", {"class": "os:system"})),
    ("reduce-shape", custom("py:dataclass", {"class": "os:_wrap_close", "__reduce__": ["x"]})),
    ("superjson-class", [["class", "os.system"]]),
    ("superjson-symbol", [["symbol", "x"]]),
    ("superjson-regexp", ["regexp"]),
    ("superjson-error", ["Error"]),
    ("no-custom", [["py:tuple"]]),
]


@pytest.mark.parametrize(("name", "node"), MALICIOUS_TAGS, ids=[n for n, _ in MALICIOUS_TAGS])
def test_malicious_tags_are_refused_without_importing(name: str, node: Any, tmp_path: Path) -> None:
    """Tags naming dangerous callables or classes raise ReplayDecodeError; nothing runs (D1)."""
    marker = tmp_path / "pwned"
    value = {"__reduce__": ["os.system", [f"touch {marker}"]], "cmd": f"touch {marker}"}
    result = decode_guarded(value, {"v": 1, "values": node}, types=TYPES)
    assert isinstance(result, ReplayDecodeError)
    assert result.path == "$"
    assert not marker.exists()


def test_disallowed_class_error_says_how_to_allow_it() -> None:
    """A class name not in the allow-list is refused with the fix in the message."""
    result = decode_guarded({"a": 1}, {"values": custom("py:dataclass", {"class": "os:system"})})
    assert isinstance(result, ReplayDecodeError)
    assert result.reason == (
        "class 'os:system' is not allowed: register it with bitfab.register_type() "
        "or name it in the function's annotations"
    )


def test_allowed_class_of_the_wrong_kind_is_refused() -> None:
    """An allowed class is still refused when the tag says it is a different kind."""
    result = decode_guarded(
        {"value": 1}, {"values": custom("py:dataclass", {"class": "codec_helpers:Priority"})}, TYPES
    )
    assert isinstance(result, ReplayDecodeError)
    assert (
        result.reason
        == "class 'codec_helpers:Priority' is not a dataclass, as tag 'py:dataclass' requires"
    )


def test_allow_list_in_the_data_is_ignored() -> None:
    """An allow-list smuggled into the sidecar or params changes nothing (D4)."""
    meta = {
        "v": 1,
        "trusted": ["os:system"],
        "types": ["os:system"],
        "values": custom("py:dataclass", {"class": "os:system", "trusted": True}),
    }
    result = decode_guarded({"a": 1}, meta, types=TYPES)
    assert isinstance(result, ReplayDecodeError)
    assert "is not allowed" in result.reason
    allowed = decode_guarded(
        {"value": 1},
        {
            "values": custom(
                "py:dataclass", {"class": "codec_helpers:Box", "trusted": ["os:system"]}
            )
        },
        TYPES,
    )
    assert allowed == Box(1)


def test_foreign_serialization_formats_stay_plain_data() -> None:
    """Pickle blobs, jsonpickle dicts and YAML tags are returned as the data they are (D2)."""
    value = {
        "pickle_b64": base64.b64encode(PICKLE_BLOB).decode(),
        "pickle_raw": PICKLE_BLOB.decode(),
        "jsonpickle": {"py/reduce": [{"py/function": "os.system"}, {"py/tuple": ["echo pwned"]}]},
        "jsonpickle_object": {"py/object": "subprocess.Popen", "args": ["sh"]},
        "yaml": "!!python/object/apply:os.system ['echo pwned']",
        "blob": PICKLE_BLOB.hex(),
    }
    meta = {"v": 1, "values": {"blob": custom("py:bytes", {"encoding": "hex"})}}
    result = decode_guarded(value, meta)
    assert result == {**value, "blob": PICKLE_BLOB}


@pytest.mark.parametrize("key", ["copy", "copies"])
def test_pickle_style_copy_sidecars_are_never_decoded(key: str) -> None:
    """Another SDK's 'copy'/'copies' fallback makes the value not replayable."""
    result = decode_guarded(
        ["x"], {"v": 1, key: {"0": "gASVIAAAAAAAAACMAm9zlIwGc3lzdGVtlJOUjAVlY2hvlIWUUpQu"}}
    )
    assert isinstance(result, ReplayDecodeError)
    assert key in result.reason


LOSSY = ["unserializable", "generator", "truncated", "cycle", "depth", "redacted", "inexact"]


@pytest.mark.parametrize("tag", LOSSY)
def test_lossy_tags_name_tag_and_path(tag: str) -> None:
    """Markers of values not recorded exactly refuse to decode, naming the tag and the path."""
    value = [{"user": {"name": "x"}}]
    result = decode_guarded(value, {"values": {"0.user.name": custom(f"bitfab:{tag}")}})
    assert isinstance(result, ReplayDecodeError)
    assert result.path == "$[0].user.name"
    assert f"'bitfab:{tag}'" in result.reason


def test_unknown_tags_name_tag_and_path() -> None:
    """A tag this version does not know is refused with its name and where it was."""
    result = decode_guarded({"a": [1, "x"]}, {"values": {"a.1": custom("py:frobnicate")}})
    assert isinstance(result, ReplayDecodeError)
    assert (result.reason, result.path) == ("unknown tag 'py:frobnicate'", "$.a[1]")


def _deep_sidecar(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {"0": custom("py:tuple")}
    for _ in range(levels):
        node = {"0": node}
    return node


MALFORMED: list[tuple[str, Any, Any]] = [
    ("meta-list", [1], []),
    ("meta-str", [1], "x"),
    ("newer-version", [1], {"v": 2}),
    ("version-str", [1], {"v": "1"}),
    ("values-int", [1], {"values": 5}),
    ("annotation-int", [1], {"values": [1]}),
    ("annotation-empty", [1], {"values": [[]]}),
    ("annotation-none", [1], {"values": [None]}),
    ("custom-without-tag", [1], {"values": [["custom"]]}),
    ("tag-not-str", [1], {"values": [["custom", 5]]}),
    ("params-not-dict", [1], {"values": [["custom", "py:tuple", 5]]}),
    ("children-not-dict", [1], {"values": [["custom", "py:tuple"], 5]}),
    ("node-too-long", [1], {"values": [["custom", "py:tuple"], {}, 3]}),
    ("index-out-of-range", [1], {"values": {"9": custom("py:tuple")}}),
    ("index-not-canonical", [[1]], {"values": {"00": custom("py:tuple")}}),
    ("index-negative", [[1]], {"values": {"-1": custom("py:tuple")}}),
    ("index-unicode-digit", [[1]], {"values": {"\u0660": custom("py:tuple")}}),
    ("key-on-list", [[1]], {"values": {"a": custom("py:tuple")}}),
    ("path-through-scalar", [1], {"values": {"0.x.y": custom("py:tuple")}}),
    ("path-into-rebuilt", [[1]], {"values": {"0": custom("py:tuple"), "0.0": custom("py:tuple")}}),
    ("node-str", [[1]], {"values": {"0": "x"}}),
    ("lone-backslash", {"a": [1]}, {"values": {"a\\": custom("py:tuple")}}),
    ("path-not-str", [[1]], {"values": {1: custom("py:tuple")}}),
    ("sidecar-too-deep", [1], {"values": _deep_sidecar(MAX_DECODE_DEPTH + 5)}),
    ("datetime-not-str", [1], {"values": {"0": custom("py:datetime")}}),
    ("datetime-garbage", ["soon"], {"values": {"0": custom("py:datetime")}}),
    ("uuid-garbage", ["x"], {"values": {"0": custom("py:uuid")}}),
    ("decimal-garbage", ["1.2.3"], {"values": {"0": custom("py:decimal")}}),
    ("hex-garbage", ["zz"], {"values": {"0": custom("py:bytes", {"encoding": "hex"})}}),
    ("bytes-base64", ["eA=="], {"values": {"0": custom("py:bytes", {"encoding": "base64"})}}),
    ("bytes-surrogate", ["\ud800"], {"values": {"0": custom("py:bytes", {"encoding": "utf-8"})}}),
    ("float-lowercase", ["nan"], {"values": {"0": custom("bitfab:float")}}),
    ("int-not-hex", ["0xzz"], {"values": {"0": custom("bitfab:int")}}),
    ("dict-not-pairs", [[1, 2, 3]], {"values": {"0": custom("bitfab:dict")}}),
    ("dict-unhashable-key", [[[[1], 2]]], {"values": {"0": custom("bitfab:dict")}}),
    ("set-unhashable", [[[1]]], {"values": {"0": custom("py:set")}}),
    ("timedelta-huge", ["1e999999999"], {"values": {"0": custom("bitfab:timedelta")}}),
    ("timedelta-overflow", [10**30], {"values": {"0": custom("bitfab:timedelta")}}),
    ("timedelta-nan", ["NaN"], {"values": {"0": custom("bitfab:timedelta")}}),
    ("timedelta-ns", [1.0000001], {"values": {"0": custom("bitfab:timedelta")}}),
    ("timedelta-bool", [True], {"values": {"0": custom("bitfab:timedelta")}}),
    ("bigint-garbage", ["12a"], {"values": {"0": ["bigint"]}}),
    (
        "enum-bad-value",
        [99],
        {"values": {"0": custom("py:enum", {"class": "codec_helpers:Priority"})}},
    ),
    ("enum-no-class", [1], {"values": {"0": custom("py:enum")}}),
    (
        "namedtuple-arity",
        [[1, 2, 3]],
        {"values": {"0": custom("py:namedtuple", {"class": "codec_helpers:Point"})}},
    ),
    (
        "dataclass-missing",
        [{"label": "x"}],
        {"values": {"0": custom("py:dataclass", {"class": "codec_helpers:Box"})}},
    ),
    (
        "dataclass-extra",
        [{"value": 1, "nope": 2}],
        {"values": {"0": custom("py:dataclass", {"class": "codec_helpers:Box"})}},
    ),
    (
        "dataclass-not-dict",
        [[1]],
        {"values": {"0": custom("py:dataclass", {"class": "codec_helpers:Box"})}},
    ),
    ("value-tuple", (1, 2), None),
    ("value-int-key", {1: "a"}, None),
    ("value-set", [{1}], None),
]


@pytest.mark.parametrize(("name", "value", "meta"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_data_raises_only_replay_decode_error(name: str, value: Any, meta: Any) -> None:
    """Every malformed sidecar or value raises ReplayDecodeError, never another exception."""
    result = decode_guarded(value, meta, types=TYPES)
    assert isinstance(result, ReplayDecodeError), result


def test_errors_carry_the_json_path() -> None:
    """Errors deep inside say where: list indices in brackets, keys after dots."""
    value = {"items": [{"when": "x"}, {"odd key": [0, "y"]}]}
    meta = {"values": {"items.1.odd key.1": custom("py:date")}}
    result = decode_guarded(value, meta)
    assert isinstance(result, ReplayDecodeError)
    assert result.path == '$.items[1]["odd key"][1]'
    assert str(result).endswith('(at $.items[1]["odd key"][1])')


def test_values_that_are_not_json_are_refused_with_their_path() -> None:
    """Python objects where JSON was expected are refused, with the path to them."""
    result = decode_guarded({"a": [1, {"b": (2,)}]}, None)
    assert isinstance(result, ReplayDecodeError)
    assert (result.reason, result.path) == (
        "recorded data holds a tuple, which is not JSON",
        "$.a[1].b",
    )


def test_too_deep_values_are_refused() -> None:
    """Readable JSON nested past the decode limit is refused, not recursed into."""
    deep: list[Any] = []
    for _ in range(MAX_DECODE_DEPTH + 10):
        deep = [deep]
    result = decode_guarded(deep, None)
    assert isinstance(result, ReplayDecodeError)


def test_pydantic_validation_errors_are_listed() -> None:
    """A model that rejects the data gives a ReplayDecodeError listing pydantic's errors."""
    meta = {"values": {"0": custom("py:model", {"class": "codec_helpers:Customer"})}}
    result = decode_guarded([{"name": 5}], meta, types=TYPES, allow_loaded=True)
    assert isinstance(result, ReplayDecodeError)
    assert result.path == "$[0]"
    assert result.reason == (
        "Customer rejected the recorded data: "
        "[{'type': 'string_type', 'loc': ('name',), 'msg': 'Input should be a valid string'}]"
    )


def test_constructor_errors_are_wrapped_with_the_path() -> None:
    """Errors raised by an allowed class's own code become ReplayDecodeError with the path."""

    @dataclasses.dataclass
    class Picky:
        n: int

        def __post_init__(self) -> None:
            raise KeyError("n")

    types = TypeAllowList([Picky])
    meta = {"values": {"1": custom("py:dataclass", {"class": f"{__name__}:{Picky.__qualname__}"})}}
    result = decode_guarded([0, {"n": 1}], meta, types=types)
    assert isinstance(result, ReplayDecodeError)
    assert (result.path, result.reason) == ("$[1]", "cannot rebuild py:dataclass: KeyError: 'n'")


def test_default_allow_list_is_global_types() -> None:
    """Without types=, only GLOBAL_TYPES is consulted, and test classes are not in it."""
    meta = {"values": custom("py:namedtuple", {"class": "codec_helpers:Point"})}
    result = decode_guarded([1, 2], meta)
    assert isinstance(result, ReplayDecodeError)
    assert decode_guarded([1, 2], meta, types=TYPES) == Point(1, 2)


@pytest.mark.parametrize(
    ("value", "meta"),
    [
        ({"a": 1}, None),
        ([1, {"a": 1}], {"kwarg_names": ["b"]}),
        ([1, {"a": 1}], {"kwarg_names": ["a", "b"]}),
        ([1, 2], {"kwarg_names": ["a"]}),
        ([], {"kwarg_names": ["a"]}),
        ([{"a": 1}], {"kwarg_names": "a"}),
        ([{"a": 1}], {"kwarg_names": ["a", "a"]}),
    ],
)
def test_call_shapes_are_checked(value: Any, meta: Any) -> None:
    """A recorded call must be a list, and named keyword arguments must match its last dict."""
    with sentinels() as called, pytest.raises(ReplayDecodeError):
        decode_call(value, meta)
    assert called == []


def test_foreign_sidecar_fields_are_ignored() -> None:
    """superjson's referentialEqualities and unknown top-level keys do not affect decoding."""
    meta = {"values": {"0": custom("py:tuple")}, "referentialEqualities": {"0": ["1"]}, "x": 1}
    assert decode_guarded([[1], [1]], meta) == [(1,), [1]]


def test_models_and_enums_decode_only_from_the_allow_list() -> None:
    """An allowed model and enum rebuild; the same data without the allow-list is refused."""
    value = [{"name": "Ada", "email": None}, 2]
    meta = {
        "values": {
            "0": custom("py:model", {"class": "codec_helpers:Customer"}),
            "1": custom("py:enum", {"class": "codec_helpers:Priority"}),
        }
    }
    assert decode_guarded(value, meta, types=TYPES) == [Customer(name="Ada"), Priority.HIGH]
    assert isinstance(decode_guarded(value, meta, types=TypeAllowList()), ReplayDecodeError)
