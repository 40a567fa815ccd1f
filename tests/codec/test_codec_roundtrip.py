"""Exact round trips through readable JSON and the type sidecar, and what the JSON looks like."""

from __future__ import annotations

import collections
import datetime as dt
import json
import math
import uuid
import zoneinfo
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest
from codec_helpers import (
    TYPES,
    Aliased,
    Box,
    Color,
    Counted,
    Customer,
    Doc,
    Level,
    Perm,
    Planet,
    Point,
    Priority,
    Stamp,
    Tags,
    Ticket,
    keys,
    same,
    values,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitfab.codec import (
    Encoded,
    decode_call,
    decode_value,
    encode_call,
    encode_value,
)
from bitfab.exceptions import ReplayDecodeError

UTC = dt.timezone.utc
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))


def through_json(encoded: Encoded) -> tuple[Any, Any]:
    """The value and sidecar as a reader gets them: strict JSON text, parsed again."""
    text = json.dumps({"value": encoded.value, "meta": encoded.meta}, allow_nan=False)
    parsed = json.loads(text)
    return parsed["value"], parsed["meta"]


def round_trip(value: Any) -> Any:
    encoded = encode_value(value)
    assert encoded.problems == ()
    return decode_value(*through_json(encoded), types=TYPES)


TABLE = [
    None,
    True,
    False,
    0,
    -1,
    2**62,
    2**64,
    -(2**100),
    2**20_000,
    -(2**20_000) + 7,
    0.5,
    -0.0,
    1e308,
    math.nan,
    math.inf,
    -math.inf,
    "",
    "text",
    "ünïcödé ✓ 𝄞",
    b"",
    b"abc",
    b"\xff\xfe\x00",
    bytearray(b"x"),
    bytearray(b"\x80"),
    [],
    [1, [2, [3]]],
    (),
    (1, "a"),
    ((1,), [()]),
    set(),
    {3, 1, 2},
    frozenset({"a", "b"}),
    {1, "a", None},
    {},
    {"a": 1},
    {1: "a", (1, 2): "b", None: "c", 2.5: "d"},
    {"a": {1: {2: (3,)}}},
    {Color.RED: 1, Priority.LOW: 2},
    dt.datetime(2026, 11, 27, 10, 38, 45, 642593),
    dt.datetime(2026, 11, 27, 10, 38, 45, tzinfo=IST),
    dt.datetime(1, 1, 1, tzinfo=UTC),
    dt.date(2026, 2, 28),
    dt.time(23, 59, 59, 999999),
    dt.time(1, 2, tzinfo=IST),
    dt.timedelta(0),
    dt.timedelta(days=-1, microseconds=1),
    dt.timedelta(seconds=1.5),
    dt.timedelta(days=999_999_999, hours=23, microseconds=999_999),
    dt.timedelta(days=-999_999_999),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    Decimal("1.10"),
    Decimal("-0"),
    Decimal("1E+3"),
    Decimal("NaN"),
    Decimal("-Infinity"),
    Decimal("sNaN"),
    Priority.HIGH,
    Level.INFO,
    Color.RED,
    Perm.R | Perm.W,
    Perm(0),
    Planet.EARTH,
    Point(1, (2, 3)),
    Box(value=(1, 2), label="b"),
    Stamp(dt.datetime(2026, 1, 1, tzinfo=UTC), "n"),
    Counted([1, 2, 3]),
    Ticket("printer", Priority.HIGH, ("hw", "urgent")),
    Customer(name="Ada", email=None),
    Doc(title="d", payload={"k": (1, frozenset({2})), 3: [b"\x00"]}),
    Aliased(userName="bob"),
    Tags({"a", "b"}),
    collections.OrderedDict([("b", 1), ("a", (2,))]),
    collections.OrderedDict([(1, "x"), ("y", 2)]),
    [
        {"when": dt.datetime(2026, 1, 1), "ids": {uuid.UUID(int=1)}, "raw": b"\x01"},
        (Priority.LOW, [Point(math.nan, None)]),
    ],
]


@pytest.mark.parametrize("value", TABLE, ids=lambda v: type(v).__name__)
def test_type_table_round_trips_exactly(value: Any) -> None:
    """Every supported type comes back equal and of the same type, through strict JSON."""
    assert same(round_trip(value), value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_nested_values_round_trip(value: Any) -> None:
    """Arbitrary nestings of the supported types round-trip exactly."""
    assert same(round_trip(value), value)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.one_of(st.none(), st.integers(), keys, st.just(["custom", "py:tuple"])),
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(keys, children, max_size=4),
        ),
        max_leaves=15,
    )
)
def test_user_data_shaped_like_tags_round_trips_as_itself(value: Any) -> None:
    """Dicts with '$t', 'py:' or sidecar-like keys and lists like annotations stay plain data."""
    encoded = encode_value(value)
    assert encoded.value == value
    assert encoded.meta is None
    assert same(decode_value(*through_json(encoded)), value)


def test_sidecar_shaped_user_dicts_are_plain_data() -> None:
    """A user value that looks like a sidecar or a tag needs no sidecar and decodes as itself."""
    value = {
        "$t": "os.system",
        "json": [1],
        "meta": {"values": [["custom", "py:tuple"]]},
        "py/reduce": [{"py/type": "os.system"}, ["echo"]],
    }
    assert encode_value(value) == Encoded(value, None, (), encode_value(value).size)
    assert decode_value(value, None) == value


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(values, max_size=3).map(tuple),
    st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), values, max_size=3),
)
def test_calls_round_trip(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Positional and keyword arguments of any supported types come back exactly."""
    encoded = encode_call(args, kwargs)
    assert encoded.problems == ()
    back_args, back_kwargs = decode_call(*through_json(encoded), types=TYPES)
    assert same(back_args, args)
    assert same(back_kwargs, kwargs)


def test_other_mappings_and_deques_keep_their_content() -> None:
    """A mappingproxy and a deque read as their content and are reported as not exact."""
    encoded = encode_value([MappingProxyType({"a": (1,)}), collections.deque([1, "x"])])
    assert encoded.value == [{"a": [1]}, [1, "x"]]
    assert encoded.problems == (
        "not exactly restorable: builtins.mappingproxy at $[0]",
        "not exactly restorable: collections.deque at $[1]",
    )


def test_tuple_with_datetime_reads_as_a_person_expects() -> None:
    """A tuple holding a datetime reads as a plain list; the sidecar says tuple and datetime."""
    encoded = encode_value((1, dt.datetime(2026, 1, 2, 3, 4, 5, 6)))
    assert encoded._replace(size=0) == Encoded(
        value=[1, "2026-01-02T03:04:05.000006"],
        meta={
            "v": 1,
            "values": [["custom", "py:tuple"], {"1": [["custom", "py:datetime"]]}],
        },
        problems=(),
        size=0,
    )


def test_plain_json_needs_no_sidecar() -> None:
    """Values that JSON already represents exactly get no sidecar at all."""
    encoded = encode_value({"a": [1, "x", None, True, 2.5]})
    assert encoded._replace(size=0) == Encoded({"a": [1, "x", None, True, 2.5]}, None, (), 0)


def test_nested_annotations_fold_into_dotted_paths() -> None:
    """Annotated values under plain containers are addressed by folded, escaped paths."""
    encoded = encode_value({"a.b": [{"c": {1, 2}}], "d": (b"hi",)})
    assert encoded.value == {"a.b": [{"c": [1, 2]}], "d": ["hi"]}
    assert encoded.meta == {
        "v": 1,
        "values": {
            "a\\.b.0.c": [["custom", "py:set"]],
            "d": [["custom", "py:tuple"], {"0": [["custom", "py:bytes", {"encoding": "utf-8"}]]}],
        },
    }


def test_user_classes_read_as_their_fields() -> None:
    """Dataclasses, enums and models read as their fields and values, with the class named."""
    encoded = encode_value([Ticket("printer", Priority.HIGH), Customer(name="Ada"), Planet.MARS])
    assert encoded.value == [
        {"title": "printer", "priority": 2, "tags": []},
        {"name": "Ada", "email": None},
        [6.42e23, 3.39e6],
    ]
    assert encoded.meta == {
        "v": 1,
        "values": {
            "0": [
                ["custom", "py:dataclass", {"class": "codec_helpers:Ticket"}],
                {
                    "priority": [["custom", "py:enum", {"class": "codec_helpers:Priority"}]],
                    "tags": [["custom", "py:tuple"]],
                },
            ],
            "1": [["custom", "py:model", {"class": "codec_helpers:Customer"}]],
            "2": [
                [
                    "custom",
                    "py:enum",
                    {"class": "codec_helpers:Planet", "value": [["custom", "py:tuple"]]},
                ]
            ],
        },
    }


def test_non_string_keys_become_pairs() -> None:
    """A dict with any non-str key reads as [key, value] pairs, keys annotated as needed."""
    encoded = encode_value({"a": 1, (1, 2): dt.date(2026, 1, 1)})
    assert encoded.value == [["a", 1], [[1, 2], "2026-01-01"]]
    assert encoded.meta == {
        "v": 1,
        "values": [
            ["custom", "bitfab:dict"],
            {"1.0": [["custom", "py:tuple"]], "1.1": [["custom", "py:date"]]},
        ],
    }


def test_non_finite_floats_and_big_ints_read_as_strings() -> None:
    """NaN and infinities read as JSON-safe strings, and ints past 3,900 digits as hex."""
    encoded = encode_value([math.nan, -math.inf, 2**20_000])
    assert encoded.value == ["NaN", "-Infinity", hex(2**20_000)]
    assert encoded.meta == {
        "v": 1,
        "values": {
            "0": [["custom", "bitfab:float"]],
            "1": [["custom", "bitfab:float"]],
            "2": [["custom", "bitfab:int", {"encoding": "hex"}]],
        },
    }


def test_timedelta_reads_as_seconds() -> None:
    """A timedelta reads as whole seconds, as a float when exact, or as an exact decimal string."""
    cases = [
        dt.timedelta(minutes=2),
        dt.timedelta(seconds=1, microseconds=500_000),
        dt.timedelta(days=-999_999_999, microseconds=1),
    ]
    assert [encode_value(td).value for td in cases] == [
        120,
        1.5,
        "-86399999913599.999999",
    ]


def test_call_puts_keyword_arguments_last_and_names_them() -> None:
    """A call reads as its positional arguments then one dict of keyword arguments."""
    encoded = encode_call((1, (2,)), {"lang": "en", "when": dt.date(2026, 1, 1)})
    assert encoded._replace(size=0) == Encoded(
        value=[1, [2], {"lang": "en", "when": "2026-01-01"}],
        meta={
            "v": 1,
            "kwarg_names": ["lang", "when"],
            "values": {"1": [["custom", "py:tuple"]], "2.when": [["custom", "py:date"]]},
        },
        problems=(),
        size=0,
    )
    args, kwargs = decode_call(*through_json(encoded))
    assert (args, kwargs) == ((1, (2,)), {"lang": "en", "when": dt.date(2026, 1, 1)})


def test_call_with_a_trailing_positional_dict_stays_positional() -> None:
    """Without keyword arguments a trailing dict argument is decoded as positional."""
    encoded = encode_call(({"a": 1},), {})
    assert encoded._replace(size=0) == Encoded([{"a": 1}], None, (), 0)
    assert decode_call(*through_json(encoded)) == (({"a": 1},), {})


def test_nul_and_lone_surrogates_survive_json_text() -> None:
    """Strings with NUL and lone surrogates stay as they are and come back exactly via JSON."""
    value = {"nul\x00key": ["a\x00b", "\ud800", "x\udfffy"], "bytes": b"\x00\xff"}
    encoded = encode_value(value)
    assert encoded.value == {"nul\x00key": ["a\x00b", "\ud800", "x\udfffy"], "bytes": "00ff"}
    text = json.dumps(encoded.value)
    assert text.isascii()
    assert same(decode_value(json.loads(text), encoded.meta), value)


def test_zoneinfo_datetime_becomes_an_equal_fixed_offset() -> None:
    """A zoneinfo datetime comes back as the same instant with its UTC offset at that time."""
    paris = dt.datetime(2026, 7, 1, 12, 0, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    back = round_trip(paris)
    assert back == paris
    assert back.utcoffset() == dt.timedelta(hours=2)
    assert back.tzinfo == dt.timezone(dt.timedelta(hours=2))


def test_ordered_dict_is_exact_but_other_dict_subclasses_are_reported() -> None:
    """OrderedDict round-trips; Counter and defaultdict keep their content but are reported."""
    ordered = collections.OrderedDict([("b", 1), ("a", 2)])
    ordered.move_to_end("b")
    assert same(round_trip(ordered), ordered)
    assert list(round_trip(ordered)) == ["a", "b"]

    counter = collections.Counter("aab")
    encoded = encode_value({"x": counter, "y": collections.defaultdict(list, {"k": [1]})})
    assert encoded.value == {"x": {"a": 2, "b": 1}, "y": {"k": [1]}}
    assert encoded.problems == (
        "not exactly restorable: collections.Counter at $.x",
        "not exactly restorable: collections.defaultdict at $.y",
    )
    with pytest.raises(ReplayDecodeError) as caught:
        decode_value(encoded.value, encoded.meta)
    assert caught.value.path == "$.x"
    assert "bitfab:inexact" in caught.value.reason


def test_subclasses_of_scalars_are_reported_with_their_base_value() -> None:
    """A str or int subclass reads as its base value, with a problem, never silently."""

    class Name(str):
        def __str__(self) -> str:
            raise RuntimeError("not called")

    class Port(int):
        pass

    encoded = encode_value([Name("ada"), Port(80), Level.DEBUG])
    assert encoded.value == ["ada", 80, 10]
    assert type(encoded.value[0]) is str
    assert type(encoded.value[1]) is int
    assert encoded.problems == (
        "not exactly restorable: test_codec_roundtrip.test_subclasses_of_scalars_are_reported"
        "_with_their_base_value.<locals>.Name at $[0]",
        "not exactly restorable: test_codec_roundtrip.test_subclasses_of_scalars_are_reported"
        "_with_their_base_value.<locals>.Port at $[1]",
    )


def test_memoryview_encodes_as_bytes_and_says_so() -> None:
    """A memoryview is recorded as bytes, with a problem noting it was a memoryview."""
    encoded = encode_value(memoryview(b"abc"))
    assert encoded._replace(size=0) == Encoded(
        "abc",
        {"v": 1, "values": [["custom", "py:bytes", {"encoding": "utf-8"}]]},
        ("memoryview encoded as bytes at $",),
        0,
    )
    assert decode_value(encoded.value, encoded.meta) == b"abc"


def test_dataclass_init_false_field_is_restored_as_recorded() -> None:
    """Fields with init=False are set after construction to their recorded values."""
    counted = Counted([1, 2])
    counted.count = 99
    back = round_trip(counted)
    assert (back.items, back.count) == ([1, 2], 99)


def test_decoding_gives_fresh_equal_results_each_time() -> None:
    """Decoding the same data twice gives equal values that share nothing with the input."""
    encoded = encode_value({"a": [[1], {"b": (2,)}]})
    value, meta = through_json(encoded)
    first = decode_value(value, meta)
    second = decode_value(value, meta)
    assert first == second == {"a": [[1], {"b": (2,)}]}
    assert first["a"] is not value["a"]
    first["a"][0].append(5)
    assert value["a"][0] == [1]
    assert second["a"][0] == [1]


def test_sets_read_sorted_when_sortable() -> None:
    """Sets read in sorted order when their items sort, so equal sets give equal JSON."""
    assert encode_value({"b", "c", "a"}).value == ["a", "b", "c"]
    assert sorted(map(repr, encode_value({1, "a"}).value)) == ["'a'", "1"]


def test_superjson_annotations_from_other_sdks_are_accepted() -> None:
    """superjson's Date, set, map, bigint, undefined and number annotations decode."""
    value = ["2026-01-02T03:04:05.678Z", [1, 2], [["k", 1]], "123456789012345678901", None, "NaN"]
    meta = {
        "values": {
            "0": ["Date"],
            "1": ["set"],
            "2": ["map"],
            "3": ["bigint"],
            "4": ["undefined"],
            "5": ["number"],
        }
    }
    decoded = decode_value(value, meta)
    assert decoded[:5] == [
        dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        {1, 2},
        {"k": 1},
        123456789012345678901,
        None,
    ]
    assert math.isnan(decoded[5])
