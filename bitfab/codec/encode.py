"""Encoding: Python values -> readable JSON + type sidecar.

``encode_value`` encodes one value (a return value), ``encode_call`` the arguments of a call as
``[*positional, {keyword: value}]``. Both run on the traced application's thread, so the common
case of a few small scalars takes a fast path that skips the walk entirely, and neither ever
raises (except KeyboardInterrupt and SystemExit): what cannot be encoded exactly becomes a
placeholder and a line in ``Encoded.problems``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from bitfab.codec import tags
from bitfab.codec.redact import (
    _PREFIX_FIRST_CHARS,
    _SECRET_PREFIXES,
    Redactor,
    env_secret_values,
)
from bitfab.codec.walker import Encoder

__all__ = ["DEFAULT_LIMITS", "Encoded", "Limits", "encode_call", "encode_value"]


@dataclass(slots=True, frozen=True)
class Limits:
    """Bounds on what one encoded field may cost.

    Args:
        max_field_bytes: budget for one encoded field (all of a call's input, or its output),
            in approximate bytes of readable JSON; longer strings and containers are cut.
        max_depth: containers nested deeper than this become a ``"<max depth>"`` marker.
        max_items: items kept per container; the rest are dropped with a truncation marker.
    """

    max_field_bytes: int = 256 * 1024
    max_depth: int = 32
    max_items: int = 10_000

    def __post_init__(self) -> None:
        for name in ("max_field_bytes", "max_depth", "max_items"):
            limit = getattr(self, name)
            if type(limit) is not int or limit < 0:
                raise ValueError(f"Limits.{name} must be an int >= 0, got {limit!r}")


DEFAULT_LIMITS = Limits()


class Encoded(NamedTuple):
    """An encoded value.

    ``value`` is JSON-ready and made of fresh objects (mutating the original later does not
    change it). ``meta`` is the type sidecar, None when nothing needed annotating. ``problems``
    is empty when the value can be rebuilt exactly, else says what was lost and where, such as
    ``"truncated str at $.body"``. ``size`` approximates the bytes of ``value`` as JSON.
    """

    value: Any
    meta: dict[str, Any] | None
    problems: tuple[str, ...]
    size: int


_FAST_STR = 256
_new = tuple.__new__
_NO_PROBLEMS: tuple[str, ...] = ()
# When even a marker could not be built because the caller left no stack: built from literals
# in the handler, because no function can be called there.
_NO_STACK_PROBLEM = ("max depth at $ (no stack left to encode)",)
_DEPTH_SIZE = len(tags.DEPTH_MARKER) + 2


def encode_value(
    value: object,
    *,
    limits: Limits = DEFAULT_LIMITS,
    redactor: Redactor | None = None,
    budget: int | None = None,
) -> Encoded:
    """Encode one value into readable JSON and its type sidecar.

    Example::

        encode_value((1, datetime(2026, 1, 2)))
        # Encoded(value=[1, "2026-01-02T00:00:00"],
        #         meta={"v": 1, "values": [["custom", "py:tuple"],
        #                                  {"1": [["custom", "py:datetime"]]}]},
        #         problems=(), size=...)

    Args:
        value: anything; never consumed (generators) or mutated.
        limits: size, depth and item bounds.
        redactor: when given, values under secret-looking names and credential-looking
            strings become ``"[REDACTED]"``.
        budget: byte budget for this value, overriding ``limits.max_field_bytes`` (for
            example what is left of a span's budget).

    What "exact" means, type by type, is equal value and same type, with these limits:

    - an aware datetime or time keeps its UTC offset, not its tzinfo object: a ``ZoneInfo``
      zone comes back as the fixed-offset ``timezone`` it had at that instant (equal, same
      offset, but later arithmetic no longer follows the zone's rules); ``fold`` is not kept;
    - values reachable twice come back as equal copies, not as one shared object;
    - pydantic models keep their fields and extra fields, not private attributes, and are
      rebuilt through ``model_validate`` (so validators run again);
    - a memoryview is recorded as bytes, and subclasses of builtins other than
      ``OrderedDict`` as their base type, both with a problem.
    """
    t = type(value)
    if value is None or t is bool:
        return _new(Encoded, (value, None, _NO_PROBLEMS, 5))
    if t is int and -1073741823 <= value <= 1073741823:  # type: ignore[operator]
        return _new(Encoded, (value, None, _NO_PROBLEMS, 8))
    if t is float and value - value == 0.0:  # type: ignore[operator]
        return _new(Encoded, (value, None, _NO_PROBLEMS, 20))
    room = limits.max_field_bytes if budget is None else budget
    if t is str and len(value) < 8 and len(value) + 2 <= room:  # type: ignore[arg-type]
        return _new(Encoded, (value, None, _NO_PROBLEMS, len(value) + 2))  # type: ignore[arg-type]
    encoder = Encoder(room, limits.max_depth, limits.max_items, redactor)
    try:
        readable, node = encoder.value(value, 0, None)
    except (KeyboardInterrupt, SystemExit):
        raise
    except RecursionError:  # only when even a marker could not be built (no stack left)
        return _new(
            Encoded,
            (
                tags.DEPTH_MARKER,
                {"v": tags.SIDECAR_VERSION, "values": [[tags.CUSTOM, tags.DEPTH]]},
                _NO_STACK_PROBLEM,
                _DEPTH_SIZE,
            ),
        )
    except BaseException as error:  # a bug: never let it reach the traced call
        return _failed(error)
    meta = None if node is None else {"v": tags.SIDECAR_VERSION, "values": node}
    return _new(Encoded, (readable, meta, encoder.problem_tuple(), room - encoder.rem))


def encode_call(
    args: tuple[object, ...],
    kwargs: dict[str, object],
    *,
    param_names: Sequence[str] = (),
    limits: Limits = DEFAULT_LIMITS,
    redactor: Redactor | None = None,
    budget: int | None = None,
) -> Encoded:
    """Encode a call's arguments as ``[*args, kwargs]`` (the kwargs dict only if non-empty).

    Example::

        encode_call(("hi",), {"api_key": "k-123"}, redactor=DEFAULT_REDACTOR)
        # Encoded(value=["hi", {"api_key": "[REDACTED]"}],
        #         meta={"v": 1, "kwarg_names": ["api_key"],
        #               "values": {"1.api_key": [["custom", "bitfab:redacted"]]}},
        #         problems=("redacted at $[1].api_key",), size=...)

    Args:
        args: the positional arguments.
        kwargs: the keyword arguments; their names go to ``meta["kwarg_names"]``.
        param_names: ``param_names[i]`` names positional argument ``i``, so that a secret
            passed positionally (``login("bob", "hunter2")``) is redacted by its name too.
        limits, redactor, budget: as for ``encode_value``; the budget covers all arguments.
    """
    room = limits.max_field_bytes if budget is None else budget
    if not kwargs:
        # Fast path: a few plain scalars, no keyword arguments, nothing secret.
        size = 2
        for a in args:
            t = type(a)
            if t is int:
                if -1073741823 <= a <= 1073741823:  # type: ignore[operator]
                    size += 9
                    continue
            elif t is str:
                n = len(a)  # type: ignore[arg-type]
                if n < 8 or (
                    n < _FAST_STR
                    and (redactor is None or not redactor.value_patterns or not _maybe_secret(a))  # type: ignore[arg-type]
                ):
                    size += n + 3
                    continue
            elif a is None or t is bool:
                size += 6
                continue
            elif t is float and a - a == 0.0:  # type: ignore[operator]
                size += 21
                continue
            break
        else:
            if size <= room and (
                redactor is None
                or not param_names
                or (type(param_names) is tuple and param_names in redactor._safe_names)
                or not redactor.any_name_is_secret(param_names)
            ):
                return _new(Encoded, ([*args], None, _NO_PROBLEMS, size))
    encoder = Encoder(room, limits.max_depth, limits.max_items, redactor)
    try:
        items: list[object] = list(args)
        if kwargs:
            items.append(kwargs)
        redact_at = None
        if redactor is not None and param_names and redactor.any_name_is_secret(param_names):
            names = list(param_names)[: len(args)]
            redact_at = {i for i, name in enumerate(names) if redactor.name_is_secret(name)}
        readable, node = encoder.arguments(items, redact_at or None)
    except (KeyboardInterrupt, SystemExit):
        raise
    except RecursionError:
        return _new(
            Encoded,
            (
                tags.DEPTH_MARKER,
                {"v": tags.SIDECAR_VERSION, "values": [[tags.CUSTOM, tags.DEPTH]]},
                _NO_STACK_PROBLEM,
                _DEPTH_SIZE,
            ),
        )
    except BaseException as error:  # a bug, or arguments that are not what the types say
        return _failed(error)
    meta: dict[str, Any] | None = None
    if kwargs or node is not None:
        meta = {"v": tags.SIDECAR_VERSION}
        if kwargs:
            meta["kwarg_names"] = [str(name) for name in kwargs]
        if node is not None:
            meta["values"] = node
    return _new(Encoded, (readable, meta, encoder.problem_tuple(), room - encoder.rem))


def _maybe_secret(text: str) -> bool:
    """Whether a short string might be redacted (the walk then decides exactly)."""
    return (
        len(text) >= 16 and text[0] in _PREFIX_FIRST_CHARS and text.startswith(_SECRET_PREFIXES)
    ) or text in env_secret_values()


def _failed(error: BaseException) -> Encoded:
    """The result when encoding itself failed: a placeholder that is never replayed."""
    name = type(error).__name__
    text = f"<unserializable: encoding failed with {name}>"
    node = [[tags.CUSTOM, tags.UNSERIALIZABLE, {"type": name}]]
    meta = {"v": tags.SIDECAR_VERSION, "values": node}
    return Encoded(text, meta, (f"encoding failed at $ ({name} raised)",), len(text) + 2)
