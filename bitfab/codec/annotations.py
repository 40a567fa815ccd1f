"""Find the rebuildable classes named in a function's annotations.

Used by ``TypeAllowList.allow_annotations``: the classes a traced function declares are the
classes its recorded calls may contain. String annotations (``from __future__ import
annotations``, forward references) are resolved without ``eval``: the string is parsed with
``ast`` and only names, attribute access on modules and classes, subscripts, ``|`` unions and
nested strings are followed, in the namespace of the code that wrote the annotation. Anything
that does not resolve is skipped.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import enum
import functools
import inspect
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from bitfab.codec.kinds import (
    DATACLASS_KIND,
    MODEL_KIND,
    NAMEDTUPLE_KIND,
    kind_of,
)

__all__ = ["classes_in_annotations"]

_MAX_DEPTH = 40
_MAX_STRING = 2_000
_BUILTINS: Mapping[str, Any] = vars(builtins)
_ANNOTATED = getattr(typing, "Annotated", None)


def classes_in_annotations(fn: Callable[..., Any]) -> list[type]:
    """The dataclasses, enums, namedtuples and pydantic models that ``fn``'s annotations name.

    Follows class fields transitively. Never raises: what can't be resolved is left out.
    """
    walker = _Walker()
    try:
        walker.walk_callable(fn)
    except Exception:  # noqa: S110 - best effort by contract; what was found so far is kept
        pass
    return list(walker.found)


def _module_namespace(obj: object) -> Mapping[str, Any]:
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    return vars(module) if module is not None else {}


class _Walker:
    __slots__ = ("found", "seen")

    def __init__(self) -> None:
        self.found: dict[type, None] = {}
        self.seen: set[int] = set()

    def walk_callable(self, fn: object) -> None:
        if isinstance(fn, type):
            self.walk(fn, _module_namespace(fn), {}, 0)
            return
        target = fn
        for _ in range(_MAX_DEPTH):
            if isinstance(target, functools.partial):
                target = target.func
            elif isinstance(target, (types.MethodType, staticmethod, classmethod)):
                target = target.__func__
            else:
                break
        try:
            target = inspect.unwrap(target)  # type: ignore[arg-type]
        except ValueError:
            pass
        annotations = getattr(target, "__annotations__", None)
        if not isinstance(annotations, Mapping) and callable(target):
            call: object = type(target).__call__
            annotations = getattr(call, "__annotations__", None)
            target = call
        if not isinstance(annotations, Mapping):
            return
        globalns = getattr(target, "__globals__", None)
        if not isinstance(globalns, Mapping):
            globalns = _module_namespace(target)
        localns = _closure_namespace(target)
        for hint in list(annotations.values()):
            self.walk(hint, globalns, localns, 0)

    def walk(
        self, hint: object, globalns: Mapping[str, Any], localns: Mapping[str, Any], depth: int
    ) -> None:
        if depth > _MAX_DEPTH or hint is None:
            return
        try:
            self._walk(hint, globalns, localns, depth)
        except Exception:  # noqa: S110 - one bad annotation must not hide the others
            pass

    def _walk(
        self, hint: object, globalns: Mapping[str, Any], localns: Mapping[str, Any], depth: int
    ) -> None:
        depth += 1
        if isinstance(hint, str):
            for obj in _resolve_string(hint, globalns, localns, depth):
                self.walk(obj, globalns, localns, depth)
            return
        if isinstance(hint, typing.ForwardRef):
            self.walk(hint.__forward_arg__, globalns, localns, depth)
            return
        if isinstance(hint, (list, tuple)):
            for item in hint:
                self.walk(item, globalns, localns, depth)
            return
        origin = typing.get_origin(hint)
        if origin is not None:
            args = typing.get_args(hint)
            if origin is typing.Literal:
                for arg in args:
                    if isinstance(arg, enum.Enum):
                        self.walk(type(arg), globalns, localns, depth)
                return
            if _ANNOTATED is not None and origin is _ANNOTATED:
                # get_origin(Annotated[X, ...]) is Annotated only with include_extras; be safe.
                if args:
                    self.walk(args[0], globalns, localns, depth)
                return
            self.walk(origin, globalns, localns, depth)
            for arg in args:
                self.walk(arg, globalns, localns, depth)
            return
        metadata_origin = getattr(hint, "__origin__", None)
        if metadata_origin is not None and hasattr(hint, "__metadata__"):
            self.walk(metadata_origin, globalns, localns, depth)
            return
        supertype = getattr(hint, "__supertype__", None)  # typing.NewType
        if supertype is not None:
            self.walk(supertype, globalns, localns, depth)
            return
        if isinstance(hint, typing.TypeVar):
            self.walk(hint.__bound__, globalns, localns, depth)
            for constraint in hint.__constraints__:
                self.walk(constraint, globalns, localns, depth)
            return
        if type(hint).__name__ == "TypeAliasType":  # `type X = ...` (3.12+)
            self.walk(getattr(hint, "__value__", None), globalns, localns, depth)
            return
        if isinstance(hint, type):
            self._walk_class(hint, depth)

    def _walk_class(self, cls: type, depth: int) -> None:
        if id(cls) in self.seen:
            return
        self.seen.add(id(cls))
        kind = kind_of(cls)
        if kind is None:
            return
        self.found[cls] = None
        namespace = _module_namespace(cls)
        class_ns: Mapping[str, Any] = dict(vars(cls))
        if kind == DATACLASS_KIND:
            for field in dataclasses.fields(cls):
                self.walk(field.type, namespace, class_ns, depth)
        elif kind == MODEL_KIND:
            fields = getattr(cls, "__pydantic_fields__", None)
            if isinstance(fields, Mapping):
                for info in fields.values():
                    self.walk(getattr(info, "annotation", None), namespace, class_ns, depth)
        elif kind == NAMEDTUPLE_KIND:
            own = vars(cls).get("__annotations__")
            if isinstance(own, Mapping):
                for hint in own.values():
                    self.walk(hint, namespace, class_ns, depth)


def _closure_namespace(fn: object) -> Mapping[str, Any]:
    code = getattr(fn, "__code__", None)
    closure = getattr(fn, "__closure__", None)
    if code is None or not closure:
        return {}
    namespace: dict[str, Any] = {}
    for name, cell in zip(code.co_freevars, closure, strict=False):
        try:
            namespace[name] = cell.cell_contents
        except ValueError:  # an empty cell
            continue
    return namespace


def _resolve_string(
    text: str, globalns: Mapping[str, Any], localns: Mapping[str, Any], depth: int
) -> list[object]:
    if len(text) > _MAX_STRING or depth > _MAX_DEPTH:
        return []
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return []
    return list(_resolve_node(tree.body, globalns, localns, depth))


def _lookup_name(name: str, globalns: Mapping[str, Any], localns: Mapping[str, Any]) -> object:
    for namespace in (localns, globalns, _BUILTINS):
        if name in namespace:
            return namespace[name]
    raise LookupError(name)


def _static_attribute(obj: object, name: str) -> object:
    """``obj.name`` for modules and classes, read from their ``__dict__`` (no ``__getattr__``)."""
    if isinstance(obj, types.ModuleType):
        return vars(obj)[name]
    if isinstance(obj, type):
        for klass in obj.__mro__:
            namespace = vars(klass)
            if name in namespace:  # enum members are in the class __dict__ too
                return namespace[name]
    raise LookupError(name)


def _resolve_single(
    node: ast.expr, globalns: Mapping[str, Any], localns: Mapping[str, Any]
) -> object:
    if isinstance(node, ast.Name):
        return _lookup_name(node.id, globalns, localns)
    if isinstance(node, ast.Attribute):
        return _static_attribute(_resolve_single(node.value, globalns, localns), node.attr)
    raise LookupError(ast.dump(node))


def _resolve_node(
    node: ast.expr, globalns: Mapping[str, Any], localns: Mapping[str, Any], depth: int
) -> Iterator[object]:
    """Yield the objects an annotation expression names (for walking, not for building)."""
    if depth > _MAX_DEPTH:
        return
    depth += 1
    if isinstance(node, (ast.Name, ast.Attribute)):
        try:
            yield _resolve_single(node, globalns, localns)
        except (LookupError, TypeError):
            return
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, str):
            yield from _resolve_string(node.value, globalns, localns, depth)
    elif isinstance(node, ast.Subscript):
        try:
            head: object = _resolve_single(node.value, globalns, localns)
        except (LookupError, TypeError):
            head = None
        elements = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if head is typing.Literal:
            for element in elements:
                if isinstance(element, (ast.Name, ast.Attribute)):
                    try:
                        member = _resolve_single(element, globalns, localns)
                    except (LookupError, TypeError):
                        continue
                    if isinstance(member, enum.Enum):
                        yield type(member)
            return
        if head is not None:
            yield head
        if _ANNOTATED is not None and head is _ANNOTATED:
            elements = elements[:1]
        for element in elements:
            yield from _resolve_node(element, globalns, localns, depth)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        yield from _resolve_node(node.left, globalns, localns, depth)
        yield from _resolve_node(node.right, globalns, localns, depth)
    elif isinstance(node, (ast.Tuple, ast.List)):
        for element in node.elts:
            yield from _resolve_node(element, globalns, localns, depth)
