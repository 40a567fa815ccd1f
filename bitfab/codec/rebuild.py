"""One rebuild function per known tag: readable form (children already rebuilt) -> value.

Each function checks the shape of its input strictly and raises ``ReplayDecodeError`` (the
caller adds the path) or lets a constructor's own exception through (the caller wraps it).
User classes come only from the ``TypeAllowList`` and must be of the kind the tag says.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
import uuid
from collections.abc import Callable
from typing import Any

from bitfab.codec import tags
from bitfab.codec.allowlist import TypeAllowList
from bitfab.codec.kinds import (
    DATACLASS_KIND,
    ENUM_KIND,
    MODEL_KIND,
    NAMEDTUPLE_KIND,
    kind_of,
)
from bitfab.exceptions import ReplayDecodeError

__all__ = ["REBUILDERS", "SUPERJSON_REBUILDERS", "Rebuilder"]

Rebuilder = Callable[[Any, "dict[str, Any]", TypeAllowList], Any]

_FLOATS = {"NaN", "Infinity", "-Infinity"}
_MICROS = decimal.Decimal(1_000_000)
_TIMEDELTA_CONTEXT = decimal.Context(prec=60)
_MAX_TIMEDELTA_DIGITS = 15  # timedelta.max is about 8.6e13 seconds
_MAX_TEXT = 100


def _expect(value: Any, expected: type, tag: str) -> None:
    if type(value) is not expected:
        raise ReplayDecodeError(
            f"tag {tag!r} expects a readable {expected.__name__}, got {type(value).__name__}"
        )


def _allowed_class(params: dict[str, Any], kind: str, tag: str, types: TypeAllowList) -> Any:
    name = params.get("class")
    if type(name) is not str:
        raise ReplayDecodeError(f"tag {tag!r} needs a 'class' name in its params")
    cls = types.lookup(name)
    if cls is None:
        shown = name if len(name) <= _MAX_TEXT else name[:_MAX_TEXT] + "..."
        raise ReplayDecodeError(
            f"class {shown!r} is not allowed: register it with bitfab.register_type() "
            "or name it in the function's annotations"
        )
    if kind_of(cls) != kind:
        raise ReplayDecodeError(f"class {name!r} is not a {kind}, as tag {tag!r} requires")
    return cls


def _float(text: Any) -> float:
    if type(text) is not str or text not in _FLOATS:
        raise ReplayDecodeError(f"expected 'NaN', 'Infinity' or '-Infinity', got {text!r:.40}")
    return float(text)


def _pairs(value: Any, tag: str) -> list[tuple[Any, Any]]:
    _expect(value, list, tag)
    pairs = []
    for pair in value:
        if type(pair) is not list or len(pair) != 2:
            raise ReplayDecodeError(f"tag {tag!r} expects a list of [key, value] pairs")
        pairs.append((pair[0], pair[1]))
    return pairs


def _tuple(value: Any, params: dict[str, Any], types: TypeAllowList) -> Any:
    _expect(value, list, tags.TUPLE)
    return tuple(value)


def _set(value: Any, params: dict[str, Any], types: TypeAllowList) -> Any:
    _expect(value, list, tags.SET)
    return set(value)


def _frozenset(value: Any, params: dict[str, Any], types: TypeAllowList) -> Any:
    _expect(value, list, tags.FROZENSET)
    return frozenset(value)


def _datetime(value: Any, params: dict[str, Any], types: TypeAllowList) -> Any:
    _expect(value, str, tags.DATETIME)
    return dt.datetime.fromisoformat(value)


def _date(value: Any, params: dict[str, Any], types: TypeAllowList) -> Any:
    _expect(value, str, tags.DATE)
    return dt.date.fromisoformat(value)


def _time(value: Any, params: dict[str, Any], types: TypeAllowList) -> Any:
    _expect(value, str, tags.TIME)
    return dt.time.fromisoformat(value)


def _uuid(value: Any, params: dict[str, Any], types: TypeAllowList) -> Any:
    _expect(value, str, tags.UUID)
    return uuid.UUID(value)


def _decimal(value: Any, params: dict[str, Any], types: TypeAllowList) -> Any:
    _expect(value, str, tags.DECIMAL)
    return decimal.Decimal(value)


def _bytes_of(value: Any, params: dict[str, Any], tag: str) -> bytes:
    _expect(value, str, tag)
    text: str = value
    encoding = params.get("encoding", "utf-8")
    if encoding == "utf-8":
        return text.encode("utf-8")
    if encoding == "hex":
        return bytes.fromhex(text)
    raise ReplayDecodeError(f"unknown bytes encoding {encoding!r:.40}")


def _bytes(value: Any, params: dict[str, Any], types: TypeAllowList) -> Any:
    return _bytes_of(value, params, tags.BYTES)


def _bytearray(value: Any, params: dict[str, Any], types: TypeAllowList) -> Any:
    return bytearray(_bytes_of(value, params, tags.BYTEARRAY))


def _non_finite(value: Any, params: dict[str, Any], types: TypeAllowList) -> Any:
    return _float(value)


def _int(value: Any, params: dict[str, Any], types: TypeAllowList) -> Any:
    _expect(value, str, tags.INT)
    if params.get("encoding", "hex") != "hex":
        raise ReplayDecodeError(f"unknown int encoding {params.get('encoding')!r:.40}")
    return int(value, 16)


def _dict(value: Any, params: dict[str, Any], types: TypeAllowList) -> Any:
    return dict(_pairs(value, tags.DICT))


def _ordereddict(value: Any, params: dict[str, Any], types: TypeAllowList) -> Any:
    if params.get("pairs") is True:
        return collections.OrderedDict(_pairs(value, tags.ORDEREDDICT))
    _expect(value, dict, tags.ORDEREDDICT)
    return collections.OrderedDict(value)


def _timedelta(value: Any, params: dict[str, Any], types: TypeAllowList) -> Any:
    t = type(value)
    if t is int:
        return dt.timedelta(seconds=value)
    if t is float:
        seconds = decimal.Decimal(repr(value))
    elif t is str:
        seconds = decimal.Decimal(value)
    else:
        raise ReplayDecodeError(f"tag {tags.TIMEDELTA!r} expects a number or a decimal string")
    if not seconds.is_finite() or seconds.adjusted() > _MAX_TIMEDELTA_DIGITS:
        raise ReplayDecodeError("timedelta out of range")
    micros = _TIMEDELTA_CONTEXT.multiply(seconds, _MICROS)
    if micros != micros.to_integral_value():
        raise ReplayDecodeError("a timedelta has at most 6 decimal places of seconds")
    return dt.timedelta(microseconds=int(micros))


def _enum(value: Any, params: dict[str, Any], types: TypeAllowList) -> Any:
    cls = _allowed_class(params, ENUM_KIND, tags.ENUM, types)
    return cls(value)


def _namedtuple(value: Any, params: dict[str, Any], types: TypeAllowList) -> Any:
    cls = _allowed_class(params, NAMEDTUPLE_KIND, tags.NAMEDTUPLE, types)
    _expect(value, list, tags.NAMEDTUPLE)
    return cls(*value)


def _dataclass(value: Any, params: dict[str, Any], types: TypeAllowList) -> Any:
    cls = _allowed_class(params, DATACLASS_KIND, tags.DATACLASS, types)
    _expect(value, dict, tags.DATACLASS)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [name for name in value if name not in fields]
    if unknown:
        raise ReplayDecodeError(f"{cls.__qualname__} has no field(s) {unknown!r}")
    missing = [
        name
        for name, f in fields.items()
        if f.init
        and name not in value
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ReplayDecodeError(f"{cls.__qualname__} is missing field(s) {missing!r}")
    obj = cls(**{name: item for name, item in value.items() if fields[name].init})
    for name, item in value.items():
        if not fields[name].init:
            object.__setattr__(obj, name, item)
    return obj


def _model(value: Any, params: dict[str, Any], types: TypeAllowList) -> Any:
    cls = _allowed_class(params, MODEL_KIND, tags.MODEL, types)
    data = value
    if not getattr(cls, "__pydantic_root_model__", False):
        _expect(value, dict, tags.MODEL)
        data = _by_alias(cls, value)
    try:
        return cls.model_validate(data)
    except ValueError as error:
        # pydantic_core.ValidationError, recognised without touching pydantic's lazy imports.
        if type(error).__name__ != "ValidationError" or not hasattr(error, "errors"):
            raise
        raise ReplayDecodeError(
            f"{cls.__qualname__} rejected the recorded data: {_validation_errors(error)!r}"
        ) from None


def _by_alias(cls: Any, value: dict[str, Any]) -> dict[str, Any]:
    """Key recorded field values the way ``model_validate`` expects: by alias when one is set."""
    fields = getattr(cls, "__pydantic_fields__", None) or cls.model_fields
    renamed: dict[str, Any] = {}
    for name, item in value.items():
        info = fields.get(name)
        alias = None
        if info is not None:
            alias = info.validation_alias if isinstance(info.validation_alias, str) else None
            alias = alias or (info.alias if isinstance(info.alias, str) else None)
        renamed[alias or name] = item
    return renamed


def _validation_errors(error: Any) -> list[dict[str, Any]]:
    try:
        errors = error.errors(include_url=False, include_input=False, include_context=False)
    except TypeError:  # older pydantic
        errors = error.errors()
    return [dict(e) for e in errors][:20]


REBUILDERS: dict[str, Rebuilder] = {
    tags.TUPLE: _tuple,
    tags.SET: _set,
    tags.FROZENSET: _frozenset,
    tags.NAMEDTUPLE: _namedtuple,
    tags.DATETIME: _datetime,
    tags.DATE: _date,
    tags.TIME: _time,
    tags.UUID: _uuid,
    tags.DECIMAL: _decimal,
    tags.BYTES: _bytes,
    tags.BYTEARRAY: _bytearray,
    tags.ENUM: _enum,
    tags.MODEL: _model,
    tags.DATACLASS: _dataclass,
    tags.FLOAT: _non_finite,
    tags.INT: _int,
    tags.DICT: _dict,
    tags.ORDEREDDICT: _ordereddict,
    tags.TIMEDELTA: _timedelta,
}


# ---- superjson's own annotations (TypeScript SDK), where they are harmless ----------------


def _sj_date(value: Any, params: dict[str, Any], types: TypeAllowList) -> Any:
    _expect(value, str, "Date")
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.astimezone(dt.timezone.utc)


def _sj_set(value: Any, params: dict[str, Any], types: TypeAllowList) -> Any:
    _expect(value, list, "set")
    return set(value)


def _sj_map(value: Any, params: dict[str, Any], types: TypeAllowList) -> Any:
    return dict(_pairs(value, "map"))


def _sj_bigint(value: Any, params: dict[str, Any], types: TypeAllowList) -> Any:
    _expect(value, str, "bigint")
    text = value.strip()
    if not text.lstrip("-").isdigit() or not text.isascii():
        raise ReplayDecodeError(f"not a bigint: {value!r:.40}")
    return int(text)


def _sj_undefined(value: Any, params: dict[str, Any], types: TypeAllowList) -> Any:
    return None


SUPERJSON_REBUILDERS: dict[str, Rebuilder] = {
    "Date": _sj_date,
    "set": _sj_set,
    "map": _sj_map,
    "bigint": _sj_bigint,
    "undefined": _sj_undefined,
    "number": _non_finite,
}
