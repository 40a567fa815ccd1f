"""The allow-list of classes that decoding may rebuild, filled in code only."""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Annotated, Any, Literal, Optional

import pytest
from codec_helpers import Box, Color, Customer, Level, Point, Priority, Stamp, Ticket
from pydantic import BaseModel

from bitfab.codec import (
    GLOBAL_TYPES,
    TypeAllowList,
    class_name,
    decode_value,
    encode_value,
)
from bitfab.exceptions import ReplayDecodeError


@dataclasses.dataclass
class Item:
    sku: str
    level: Level


class Order(BaseModel):
    customer: Customer
    items: list[Item]
    parent: Optional[Order] = None  # noqa: UP045 - Optional is what is being tested


def triage(
    ticket: Ticket,
    customers: list[Customer],
    *,
    point: Optional[Point] = None,  # noqa: UP045
    mode: Literal[Color.RED, "plain"] = "plain",
    box: Annotated[Box, "meta"] | None = None,
    history: dict[str, tuple[Order, ...]] | None = None,
) -> dict[str, Stamp]:
    return {}


def names(types: TypeAllowList) -> list[str]:
    return sorted(
        name
        for name in [
            class_name(cls)
            for cls in (Ticket, Priority, Customer, Point, Color, Box, Order, Item, Level, Stamp)
        ]
        if types.lookup(name) is not None
    )


def test_annotations_allow_named_classes_transitively() -> None:
    """Classes in parameters, return, generics, Literal, Annotated and their fields are allowed."""
    types = TypeAllowList()
    types.allow_annotations(triage)
    assert names(types) == [
        "codec_helpers:Box",
        "codec_helpers:Color",
        "codec_helpers:Customer",
        "codec_helpers:Level",
        "codec_helpers:Point",
        "codec_helpers:Priority",
        "codec_helpers:Stamp",
        "codec_helpers:Ticket",
        "test_codec_allowlist:Item",
        "test_codec_allowlist:Order",
    ]


def test_annotated_function_replays_its_recorded_call() -> None:
    """A call recorded from the function's own types decodes with the annotations' allow-list."""
    ticket = Ticket("printer", Priority.HIGH, ("hw",))
    order = Order(customer=Customer(name="Ada"), items=[Item("a1", Level.INFO)])
    encoded = encode_value([ticket, [order.customer], {"o": (order,)}])
    types = TypeAllowList()
    types.allow_annotations(triage)
    assert decode_value(encoded.value, encoded.meta, types=types) == [
        ticket,
        [order.customer],
        {"o": (order,)},
    ]
    with pytest.raises(ReplayDecodeError, match="is not allowed"):
        decode_value(encoded.value, encoded.meta, types=TypeAllowList())


def broken(
    a: DoesNotExist,  # type: ignore[name-defined]  # noqa: F821
    b: list[AlsoMissing],  # type: ignore[name-defined]  # noqa: F821
    c: os.nothing_here,  # type: ignore[name-defined]
    d: Ticket,
) -> NotThere:  # type: ignore[name-defined]  # noqa: F821
    return None


def test_unresolvable_forward_refs_are_skipped() -> None:
    """Names that do not resolve are skipped; what does resolve is still allowed."""
    types = TypeAllowList()
    types.allow_annotations(broken)
    assert names(types) == ["codec_helpers:Priority", "codec_helpers:Ticket"]


def test_odd_annotations_never_raise() -> None:
    """Syntax errors, non-type objects and odd callables in annotations never raise."""

    def odd(a: Any, b: Any) -> Any:
        return None

    odd.__annotations__ = {"a": "list[[", "b": 5, "c": "1 +", "return": "import os"}
    types = TypeAllowList()
    types.allow_annotations(odd)
    types.allow_annotations(print)
    types.allow_annotations(functools.partial(triage))
    types.allow_annotations(object())  # type: ignore[arg-type]
    assert "codec_helpers:Ticket" in names(types)


def test_wrapped_functions_methods_and_classes_are_followed() -> None:
    """Decorated functions, bound methods and classes give the classes of what they wrap."""

    def decorate(fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        return wrapper

    class Service:
        def handle(self, point: Point) -> None:
            return None

    direct, decorated, method, cls = (TypeAllowList() for _ in range(4))
    direct.allow_annotations(triage)
    decorated.allow_annotations(decorate(triage))
    method.allow_annotations(Service().handle)
    cls.allow_annotations(Ticket)
    assert names(decorated) == names(direct)
    assert names(method) == ["codec_helpers:Point"]
    assert names(cls) == ["codec_helpers:Priority", "codec_helpers:Ticket"]


def test_register_returns_the_class_and_accepts_aliases() -> None:
    """register works as a decorator and under old names of a renamed class."""
    types = TypeAllowList()
    assert types.register(Box, aliases=["billing.old:Crate"]) is Box
    assert types.lookup("codec_helpers:Box") is Box
    assert types.lookup("billing.old:Crate") is Box
    recorded = {"value": 1, "label": "x"}
    meta = {"values": [["custom", "py:dataclass", {"class": "billing.old:Crate"}]]}
    assert decode_value(recorded, meta, types=types) == Box(1, "x")


def test_register_refuses_classes_it_cannot_rebuild() -> None:
    """Only dataclasses, enums, namedtuples and pydantic models can be registered."""

    class Plain:
        pass

    types = TypeAllowList()
    for cls in (int, Plain, os.PathLike):
        with pytest.raises(TypeError):
            types.register(cls)
    with pytest.raises(ValueError):
        types.register(Box, aliases=["no-colon"])
    assert len(types) == 0


def test_union_merges_two_lists() -> None:
    """union returns a new list with the classes of both."""
    left, right = TypeAllowList([Box]), TypeAllowList([Point])
    merged = left.union(right)
    assert (names(merged), names(left), names(right)) == (
        ["codec_helpers:Box", "codec_helpers:Point"],
        ["codec_helpers:Box"],
        ["codec_helpers:Point"],
    )


def test_lookup_never_resolves_names_itself() -> None:
    """lookup answers only from what was registered, whatever the name points at."""
    types = TypeAllowList([Box])
    assert [types.lookup(n) for n in ["os:system", "builtins:eval", "codec_helpers:Point", 5]] == [  # type: ignore[list-item]
        None,
        None,
        None,
        None,
    ]


def test_class_names_are_module_colon_qualname() -> None:
    """Classes are named 'module:QualName', nested classes with their dotted qualname."""

    class Inner:
        pass

    assert class_name(Ticket) == "codec_helpers:Ticket"
    assert class_name(Inner) == (
        "test_codec_allowlist:test_class_names_are_module_colon_qualname.<locals>.Inner"
    )


def test_global_types_is_an_allow_list() -> None:
    """GLOBAL_TYPES is the shared allow-list that bitfab.register_type() fills."""
    assert isinstance(GLOBAL_TYPES, TypeAllowList)
    assert GLOBAL_TYPES.lookup("codec_helpers:Ticket") is None


def test_a_functions_own_classes_also_answer_to_their_main_name() -> None:
    """A class defined beside the function is also found as __main__:QualName (the script was
    run directly when it recorded); classes of other modules are not, and a registered
    __main__ class keeps its name."""

    def quote(item: Item, customer: Customer) -> None: ...

    types = TypeAllowList()
    types.allow_annotations(quote)
    assert types.lookup(f"__main__:{Item.__qualname__}") is Item
    assert Customer.__module__ != quote.__module__
    assert types.lookup(f"__main__:{Customer.__qualname__}") is None

    @dataclasses.dataclass
    class Real:
        x: int

    Real.__module__ = "__main__"
    Real.__qualname__ = Item.__qualname__
    first = TypeAllowList([Real])
    first.allow_annotations(quote)
    assert first.lookup(f"__main__:{Item.__qualname__}") is Real
