"""Test classes, a strict structural comparison and hypothesis strategies for the codec tests."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import enum
import math
from decimal import Decimal
from typing import Any, NamedTuple

from hypothesis import strategies as st
from pydantic import BaseModel, Field, RootModel

from bitfab.codec import TypeAllowList


class Priority(enum.Enum):
    LOW = 1
    HIGH = 2


class Level(enum.IntEnum):
    DEBUG = 10
    INFO = 20


class Color(str, enum.Enum):  # enum.StrEnum needs Python 3.11
    RED = "red"
    BLUE = "blue"


class Perm(enum.Flag):
    R = 4
    W = 2
    X = 1


class Planet(enum.Enum):
    EARTH = (5.97e24, 6.37e6)
    MARS = (6.42e23, 3.39e6)


class Point(NamedTuple):
    x: Any
    y: Any


@dataclasses.dataclass
class Box:
    value: Any
    label: str = "box"


@dataclasses.dataclass(frozen=True)
class Stamp:
    at: dt.datetime
    note: str = ""


@dataclasses.dataclass
class Node:
    name: str
    ref: Any = None


@dataclasses.dataclass
class Counted:
    items: list[Any]
    count: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.count = len(self.items)


@dataclasses.dataclass
class Ticket:
    title: str
    priority: Priority
    tags: tuple[str, ...] = ()


class Customer(BaseModel):
    name: str
    email: str | None = None


class Doc(BaseModel):
    title: str
    payload: Any = None


class Aliased(BaseModel):
    user_name: str = Field(alias="userName")


class Tags(RootModel[set[str]]):
    pass


TYPES = TypeAllowList(
    [
        Priority,
        Level,
        Color,
        Perm,
        Planet,
        Point,
        Box,
        Stamp,
        Node,
        Counted,
        Ticket,
        Customer,
        Doc,
        Aliased,
        Tags,
    ]
)


def same(a: Any, b: Any) -> bool:
    """Equal values of exactly the same types, recursively (NaN equals NaN, -0.0 is not 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, Decimal):
        return a.as_tuple() == b.as_tuple()
    if isinstance(a, enum.Enum):
        return a is b
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    if isinstance(a, (set, frozenset)):
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    if dataclasses.is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, BaseModel):
        fields = type(a).model_fields
        return all(same(getattr(a, name), getattr(b, name)) for name in fields)
    if isinstance(a, (dt.datetime, dt.time)):
        return a == b and a.utcoffset() == b.utcoffset()
    return bool(a == b)


# ---- hypothesis strategies ---------------------------------------------------------------

fixed_zones = st.integers(-1439, 1439).map(lambda m: dt.timezone(dt.timedelta(minutes=m)))
any_text = st.text(st.characters(exclude_categories=()), max_size=20)
tricky_keys = st.sampled_from(
    [
        "$t",
        "$ref",
        "py:tuple",
        "custom",
        "json",
        "meta",
        "values",
        "v",
        "a.b",
        "a\\.b",
        "\\",
        ".",
        "",
        "0",
        "__reduce__",
        "py/object",
    ]
)
keys = st.one_of(any_text, tricky_keys)

hashable_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=False),
    any_text,
    st.binary(max_size=20),
    st.datetimes(),
    st.datetimes(timezones=fixed_zones),
    st.dates(),
    st.times(),
    st.times(timezones=fixed_zones),
    st.timedeltas(),
    st.uuids(),
    st.decimals(allow_nan=False),
    st.sampled_from(Priority),
    st.sampled_from(Level),
    st.sampled_from(Color),
    st.sampled_from([Perm.R, Perm.R | Perm.W, Perm(0)]),
    st.sampled_from(Planet),
)
scalars = st.one_of(
    hashable_scalars,
    st.floats(),
    st.decimals(),
    st.binary(max_size=20).map(bytearray),
)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.sets(hashable_scalars, max_size=4),
        st.frozensets(hashable_scalars, max_size=4),
        st.dictionaries(keys, children, max_size=4),
        st.dictionaries(hashable_scalars, children, max_size=3),
        st.dictionaries(keys, children, max_size=3).map(collections.OrderedDict),
        st.builds(Box, children, any_text),
        st.builds(Point, children, children),
        st.builds(Doc, title=st.text(max_size=10), payload=children),
        st.builds(Customer, name=st.text(max_size=10), email=st.none() | st.text(max_size=10)),
        st.builds(
            Ticket,
            st.text(max_size=10),
            st.sampled_from(Priority),
            st.lists(st.text(max_size=5), max_size=3).map(tuple),
        ),
    )


values = st.recursive(scalars, _containers, max_leaves=12)
