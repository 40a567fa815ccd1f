"""Encoding what the exact-type table does not cover: user classes, subclasses, the rest.

Reached from ``Encoder.value`` once the dispatch on ``type(v)`` found nothing. Checks go from
the most to the least specific: enums (before int and str, which IntEnum and StrEnum
subclass), dataclasses, pydantic models, namedtuples, files, iterators, then subclasses of
builtins, which keep their content but are reported as not exactly restorable. Anything else
is a placeholder.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import enum
import io
import sys
import types
import uuid
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from bitfab.codec import tags
from bitfab.codec.allowlist import class_name
from bitfab.codec.binary import emit_bytes
from bitfab.codec.kinds import is_namedtuple_class
from bitfab.codec.nodes import CUSTOM, Node, type_name, wrap
from bitfab.codec.paths import Chain, render_chain

if TYPE_CHECKING:
    from bitfab.codec.walker import Encoder

__all__ = ["encode_other"]

_FIELD_CACHE_MAX = 1024
_dataclass_fields: dict[type, tuple[str, ...]] = {}


def encode_other(enc: Encoder, v: Any, t: type, depth: int, chain: Chain) -> tuple[Any, Node]:
    """Encode a value whose exact type is not in the dispatch table."""
    if isinstance(v, enum.Enum):
        return _enum(enc, v, t, depth, chain)
    if getattr(t, "__dataclass_fields__", None) is not None and dataclasses.is_dataclass(t):
        return _dataclass(enc, v, t, depth, chain)
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(v, pydantic.BaseModel):
        return _model(enc, v, t, depth, chain)
    if isinstance(v, tuple) and is_namedtuple_class(t):
        return _namedtuple(enc, v, t, depth, chain)
    if isinstance(v, io.IOBase):  # files are iterators too, but not generators
        return enc.placeholder(t, chain)
    if isinstance(v, (Iterator, types.GeneratorType)):
        name = type_name(t)
        enc.problem(f"generator {name} at {render_chain(chain)} (not consumed)")
        text = f"<generator: {name}>"
        enc.rem -= len(text) + 2
        return text, [[CUSTOM, tags.GENERATOR, {"type": name}]]
    for base in _INEXACT_BASES:
        if isinstance(v, base):
            return _inexact(enc, v, t, base, depth, chain)
    return enc.placeholder(t, chain)


def _enum(enc: Encoder, v: enum.Enum, t: type, depth: int, chain: Chain) -> tuple[Any, Node]:
    readable, inner = enc.value(v._value_, depth, chain)
    params: dict[str, Any] = {"class": class_name(t)}
    if type(inner) is list:  # the member's value is annotated itself
        params["value"] = inner
        inner = None
    return readable, wrap([CUSTOM, tags.ENUM, params], inner)


def _dataclass_field_names(cls: type) -> tuple[str, ...]:
    names = _dataclass_fields.get(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cls))
        if len(_dataclass_fields) >= _FIELD_CACHE_MAX:
            _dataclass_fields.clear()
        _dataclass_fields[cls] = names
    return names


def _dataclass(enc: Encoder, v: Any, t: type, depth: int, chain: Chain) -> tuple[Any, Node]:
    fields: dict[str, Any] = {}
    for name in _dataclass_field_names(t):
        try:
            fields[name] = getattr(v, name)
        except AttributeError:  # an init=False field that was never set
            continue
    annotation = [CUSTOM, tags.DATACLASS, {"class": class_name(t)}]
    return enc.mapping(v, fields.items(), depth, chain, annotation, annotation, "dataclass")


def _model(enc: Encoder, v: Any, t: type, depth: int, chain: Chain) -> tuple[Any, Node]:
    params: dict[str, Any] = {"class": class_name(t)}
    annotation = [CUSTOM, tags.MODEL, params]
    if getattr(t, "__pydantic_root_model__", False):
        readable, inner = enc.value(v.root, depth, chain)
        if type(inner) is list:
            params["value"] = inner
            inner = None
        return readable, wrap(annotation, inner)
    # Field values one by one, not model_dump(mode="json"), which would lose their types.
    names = getattr(t, "__pydantic_fields__", None)
    if not isinstance(names, dict):
        names = getattr(t, "model_fields", {})
    fields = {name: getattr(v, name) for name in names}
    extra = getattr(v, "__pydantic_extra__", None)
    if type(extra) is dict:
        fields.update(extra)
    return enc.mapping(v, fields.items(), depth, chain, annotation, annotation, "model")


def _namedtuple(enc: Encoder, v: Any, t: type, depth: int, chain: Chain) -> tuple[Any, Node]:
    annotation = [CUSTOM, tags.NAMEDTUPLE, {"class": class_name(t)}]
    fields: tuple[str, ...] = t._fields  # type: ignore[attr-defined]
    redact_at = None
    if enc.redactor is not None:
        redact_at = {i for i, f in enumerate(fields) if enc.name_is_secret(f)} or None
    return enc.seq(v, v, len(v), depth, chain, annotation, "namedtuple", redact_at)


def _inexact(
    enc: Encoder, v: Any, t: type, base: type, depth: int, chain: Chain
) -> tuple[Any, Node]:
    """A subclass of a builtin (or another mapping or deque): its content, marked not exact.

    Builtin content is read with the base type's own methods, so overrides in the subclass
    (``__iter__``, ``items``, ``__str__`` ...) do not run, and nothing big is copied whole.
    """
    readable: Any
    inner: Node
    if base is list or base is tuple or base is collections.deque:
        annotation = [CUSTOM, tags.TUPLE] if base is tuple else None
        kind = "tuple" if base is tuple else "list"
        iterator = base.__iter__(v)
        readable, inner = enc.seq(
            v, iterator, base.__len__(v), depth, chain, annotation, kind, None
        )
    elif base is dict or base is Mapping:
        items = dict.items(v) if base is dict else v.items()
        readable, inner = enc.mapping(v, items, depth, chain, None, [CUSTOM, tags.DICT], "dict")
    elif base is set or base is frozenset:
        readable, inner = enc.set_(base(base.__iter__(v)), depth, chain)
    elif base is str:
        n = str.__len__(v)
        head = str.__getitem__(v, slice(0, max(enc.rem, 0) + 1))
        readable, inner = enc.str_(head, depth, chain)
        if type(inner) is list and n > len(head):
            inner[0][2]["size"] = n
    elif base is bytes or base is bytearray:
        view = memoryview(v)
        n = view.nbytes
        room = max(enc.rem - 2, 0)
        data = view[:room].tobytes() if n > room else view.tobytes()
        tag = tags.BYTES if base is bytes else tags.BYTEARRAY
        readable, inner = emit_bytes(enc, data, n, tag, base.__name__, chain)
    else:
        readable, inner = enc.value(_TO_BASE[base](v), depth, chain)
    name = type_name(t)
    enc.problem(f"not exactly restorable: {name} at {render_chain(chain)}")
    params: dict[str, Any] = {"class": name}
    if type(inner) is list:
        params["as"] = inner[0]
        inner = inner[1] if len(inner) > 1 else None
    return readable, wrap([CUSTOM, tags.INEXACT, params], inner)


# Types whose subclasses (and other mappings and deques) keep their content as the base type,
# most specific first; for the scalar ones, a conversion to an exact base instance that avoids
# the subclass's overrides.
_INEXACT_BASES: tuple[type, ...] = (
    dict,
    list,
    tuple,
    str,
    int,
    float,
    bytes,
    bytearray,
    set,
    frozenset,
    dt.datetime,
    dt.date,
    dt.time,
    dt.timedelta,
    uuid.UUID,
    Decimal,
    Mapping,
    collections.deque,
)
_TO_BASE: dict[type, Callable[[Any], Any]] = {
    int: int.__int__,
    float: float.__float__,
    dt.datetime: lambda v: dt.datetime.fromisoformat(dt.datetime.isoformat(v)),
    dt.date: lambda v: dt.date.fromordinal(dt.date.toordinal(v)),
    dt.time: lambda v: dt.time.fromisoformat(dt.time.isoformat(v)),
    dt.timedelta: lambda v: dt.timedelta(v.days, v.seconds, v.microseconds),
    uuid.UUID: lambda v: uuid.UUID(int=v.int),
    Decimal: lambda v: Decimal(Decimal.__str__(v)),
}
