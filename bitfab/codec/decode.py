"""Decoding: readable JSON + type sidecar -> the exact values that were recorded.

Recorded data is hostile. The decoder:

- copies the readable JSON into fresh lists and dicts, accepting only JSON types;
- walks the sidecar, navigating only into those fresh lists and dicts;
- rebuilds a value only for tags it knows, user classes only when the caller's
  ``TypeAllowList`` allows the class by name and the class is of the kind the tag says;
- never imports, never resolves a name from the data, never evaluates anything;
- raises ``ReplayDecodeError`` (with a ``$[0].user.name`` path) for everything else,
  including errors raised by allowed classes' constructors and validators.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bitfab.codec import tags
from bitfab.codec.allowlist import GLOBAL_TYPES, TypeAllowList
from bitfab.codec.paths import join_message_path, split_path
from bitfab.codec.rebuild import REBUILDERS, SUPERJSON_REBUILDERS, Rebuilder
from bitfab.exceptions import ReplayDecodeError

__all__ = ["decode_call", "decode_value"]

MAX_DECODE_DEPTH = 256
# Tags whose readable form is another value's readable form (an enum member's value, a
# RootModel's root): that value's own annotation travels in params["value"].
_WRAPPERS = frozenset({tags.ENUM, tags.MODEL})
_MAX_MESSAGE = 500

_LOSSY_REASONS = {
    tags.UNSERIALIZABLE: "the value could not be serialized when it was recorded",
    tags.GENERATOR: "the value was a generator or iterator, which is not recorded",
    tags.TRUNCATED: "the value was truncated when it was recorded",
    tags.CYCLE: "the value was a reference cycle when it was recorded",
    tags.DEPTH: "the value was nested deeper than the recording limit",
    tags.REDACTED: "the value was redacted when it was recorded",
    tags.INEXACT: "the value was a subclass of a builtin type, which is not exactly restorable",
}


def decode_value(
    value: Any, meta: Mapping[str, Any] | None, *, types: TypeAllowList | None = None
) -> Any:
    """Rebuild a recorded value from its readable JSON and type sidecar.

    Example::

        decode_value(["a", 1], {"v": 1, "values": [["custom", "py:tuple"]]})   # ("a", 1)

    Args:
        value: the readable JSON, as parsed by ``json.loads``.
        meta: the type sidecar, or None for plain JSON.
        types: the user classes that may be rebuilt; defaults to ``GLOBAL_TYPES``.

    Raises:
        ReplayDecodeError: the data cannot be rebuilt exactly (a lossy or unknown tag, a class
            that is not allowed, a malformed sidecar, a constructor that refused the data).
    """
    allowed = GLOBAL_TYPES if types is None else types
    try:
        tree = _sidecar_tree(meta)
        data = _copy_json(value)
        if tree is None:
            return data
        return _Decoder(allowed).apply(tree, data, "$", 0)
    except ReplayDecodeError:
        raise
    except _NotJSON as error:
        raise ReplayDecodeError(error.message, path=error.path()) from None
    except RecursionError:
        raise ReplayDecodeError("recorded data is nested too deeply", path="$") from None
    except Exception as error:
        raise ReplayDecodeError(f"malformed recorded data: {_describe(error)}", path="$") from None


def decode_call(
    value: Any, meta: Mapping[str, Any] | None, *, types: TypeAllowList | None = None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Rebuild a recorded call's ``(args, kwargs)`` from ``[*args, kwargs]`` and its sidecar.

    Without ``meta["kwarg_names"]`` every item is positional; with it, the last item must be a
    dict with exactly those keys.

    Raises:
        ReplayDecodeError: as for ``decode_value``, or when the shape is not a call's.
    """
    kwarg_names: list[str] = []
    if isinstance(meta, Mapping):
        names = meta.get("kwarg_names")
        if names is not None:
            if type(names) is not list or not all(type(n) is str for n in names):
                raise ReplayDecodeError("sidecar 'kwarg_names' must be a list of strings")
            if len(set(names)) != len(names):
                raise ReplayDecodeError("sidecar 'kwarg_names' repeats a name")
            kwarg_names = names
    decoded = decode_value(value, meta, types=types)
    if type(decoded) is not list:
        raise ReplayDecodeError("recorded call input must be a list of arguments")
    if not kwarg_names:
        return tuple(decoded), {}
    if not decoded:
        raise ReplayDecodeError("recorded call input is empty but names keyword arguments")
    last = decoded[-1]
    path = f"$[{len(decoded) - 1}]"
    if type(last) is not dict:
        raise ReplayDecodeError(
            "the last argument must be the dict of keyword arguments", path=path
        )
    if len(last) != len(kwarg_names) or set(last) != set(kwarg_names):
        raise ReplayDecodeError(
            f"keyword arguments {sorted(last)!r} do not match kwarg_names {kwarg_names!r}",
            path=path,
        )
    return tuple(decoded[:-1]), {name: last[name] for name in kwarg_names}


def _describe(error: BaseException) -> str:
    try:
        text = f"{type(error).__name__}: {error}"
    except Exception:  # an exception whose __str__ fails
        text = type(error).__name__
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + "..."


def _sidecar_tree(meta: Any) -> Any:
    if meta is None:
        return None
    if not isinstance(meta, Mapping):
        raise ReplayDecodeError("the type sidecar must be an object")
    for key in ("copy", "copies"):
        if key in meta:
            raise ReplayDecodeError(
                f"the sidecar has {key!r}: another SDK's pickle-style fallback, never decoded"
            )
    version = meta.get("v", tags.SIDECAR_VERSION)
    if version != tags.SIDECAR_VERSION or type(version) is not int:
        if type(version) is int and version > tags.SIDECAR_VERSION:
            raise ReplayDecodeError(
                f"sidecar version {version} is newer than this bitfab understands: upgrade bitfab"
            )
        raise ReplayDecodeError(f"unknown sidecar version {version!r}")
    return meta.get("values")


class _NotJSON(Exception):
    """Raised while copying the readable value; collects the path on the way out."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.segments: list[int | str] = []

    def path(self) -> str:
        path = "$"
        for segment in reversed(self.segments):
            path = join_message_path(path, segment)
        return path


def _copy_json(value: Any, depth: int = 0) -> Any:
    """A fresh copy of readable JSON, refusing anything ``json.loads`` would not produce.

    Paths are only built when something is wrong, as the error unwinds.
    """
    t = type(value)
    if t is list:
        if depth >= MAX_DECODE_DEPTH:
            raise _NotJSON(f"recorded data is nested deeper than {MAX_DECODE_DEPTH}")
        out: list[Any] = []
        append = out.append
        for i, item in enumerate(value):
            ti = type(item)
            if ti is str or ti is int or ti is float or ti is bool or item is None:
                append(item)
                continue
            try:
                append(_copy_json(item, depth + 1))
            except _NotJSON as error:
                error.segments.append(i)
                raise
        return out
    if t is dict:
        if depth >= MAX_DECODE_DEPTH:
            raise _NotJSON(f"recorded data is nested deeper than {MAX_DECODE_DEPTH}")
        copy: dict[str, Any] = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _NotJSON(f"object key {_short(key)} is not a string")
            ti = type(item)
            if ti is str or ti is int or ti is float or ti is bool or item is None:
                copy[key] = item
                continue
            try:
                copy[key] = _copy_json(item, depth + 1)
            except _NotJSON as error:
                error.segments.append(key)
                raise
        return copy
    if t is str or t is int or t is float or t is bool or value is None:
        return value
    raise _NotJSON(f"recorded data holds a {t.__name__}, which is not JSON")


class _Decoder:
    __slots__ = ("types",)

    def __init__(self, types: TypeAllowList) -> None:
        self.types = types

    def apply(self, node: Any, value: Any, path: str, depth: int) -> Any:
        """Apply one sidecar node to the value at ``path``; returns the rebuilt value."""
        if depth >= MAX_DECODE_DEPTH:
            raise ReplayDecodeError(f"sidecar is nested deeper than {MAX_DECODE_DEPTH}", path=path)
        if type(node) is dict:
            return self.children(node, value, path, depth)
        if type(node) is not list or len(node) not in (1, 2):
            raise ReplayDecodeError(
                "malformed sidecar node: expected [annotation] or [annotation, {children}]",
                path=path,
            )
        if len(node) == 2:
            if type(node[1]) is not dict:
                raise ReplayDecodeError(
                    "malformed sidecar node: children must be an object", path=path
                )
            value = self.children(node[1], value, path, depth)
        return self.annotation(node[0], value, path, depth)

    def children(self, mapping: dict[Any, Any], value: Any, path: str, depth: int) -> Any:
        for key, child in mapping.items():
            if type(key) is not str:
                raise ReplayDecodeError(f"sidecar path {key!r} is not a string", path=path)
            try:
                segments = split_path(key)
            except ValueError as error:
                raise ReplayDecodeError(str(error), path=path) from None
            container = value
            container_path = path
            for segment in segments[:-1]:
                container, container_path = self.step(container, segment, container_path, key)
            target, target_path = self.step(container, segments[-1], container_path, key)
            rebuilt = self.apply(child, target, target_path, depth + 1)
            if type(container) is list:
                container[int(segments[-1])] = rebuilt
            else:
                container[segments[-1]] = rebuilt
        return value

    @staticmethod
    def step(container: Any, segment: str, path: str, key: str) -> tuple[Any, str]:
        if type(container) is list:
            if segment.isascii() and segment.isdigit() and (segment == "0" or segment[0] != "0"):
                index = int(segment)
                if index < len(container):
                    return container[index], join_message_path(path, index)
        elif type(container) is dict and segment in container:
            return container[segment], join_message_path(path, segment)
        raise ReplayDecodeError(f"sidecar path {key!r} does not exist in the value", path=path)

    def annotation(self, annotation: Any, value: Any, path: str, depth: int) -> Any:
        rebuild: Rebuilder | None
        params: dict[str, Any]
        if type(annotation) is str:  # superjson's own annotations ("Date", "set", ...)
            rebuild = SUPERJSON_REBUILDERS.get(annotation)
            if rebuild is None:
                raise ReplayDecodeError(f"unsupported annotation {annotation!r}", path=path)
            tag, params = annotation, {}
        else:
            if (
                type(annotation) is not list
                or len(annotation) not in (2, 3)
                or annotation[0] != tags.CUSTOM
                or type(annotation[1]) is not str
            ):
                raise ReplayDecodeError(
                    f"unsupported annotation {_short(annotation)}: expected "
                    "['custom', tag] or ['custom', tag, params]",
                    path=path,
                )
            tag = annotation[1]
            params = annotation[2] if len(annotation) == 3 else {}
            if type(params) is not dict:
                raise ReplayDecodeError(f"params of tag {tag!r} must be an object", path=path)
            reason = _LOSSY_REASONS.get(tag)
            if reason is not None:
                raise ReplayDecodeError(f"not replayable: {reason} (tag {tag!r})", path=path)
            rebuild = REBUILDERS.get(tag)
            if rebuild is None:
                raise ReplayDecodeError(f"unknown tag {_short(tag)}", path=path)
        if "value" in params and tag in _WRAPPERS:  # the annotation of the wrapped value
            value = self.apply(params["value"], value, path, depth + 1)
        try:
            return rebuild(value, params, self.types)
        except ReplayDecodeError as error:
            raise ReplayDecodeError(error.reason, path=path) from None
        except RecursionError:
            raise ReplayDecodeError(f"cannot rebuild {tag}: too deep", path=path) from None
        except Exception as error:
            raise ReplayDecodeError(
                f"cannot rebuild {tag}: {_describe(error)}", path=path
            ) from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "..."
