"""Compare a recorded output with a replayed one, like with like.

Both sides come in *canonical form*: a pair ``(value, meta)`` where ``value`` is the readable
JSON and ``meta`` the type sidecar described in PROTOCOL.md ("The type sidecar"), or None. A
live object is never compared with its JSON: the caller encodes the new result first.

Decisions, so that a verdict means the same thing everywhere:

- JSON has one number type, so ``1`` and ``1.0`` are equal. Numbers are compared exactly
  (``2**53 + 1`` differs from ``2.0**53``); ``NaN`` equals ``NaN``. A bool is not a number:
  ``true`` against ``1`` is a type change.
- A position annotated in one sidecar and not in the other, or with another tag or ``class``, is
  a type change: a tuple is not a list, a dataclass is not a dict, a datetime is not a string.
  Other annotation params (a bytes ``encoding``) that differ make a plain change.
- Lists are compared by position; a longer side gives one ``added`` or ``removed`` change per
  extra element.
- An ignored path hides everything under it, including keys added or removed there.
- A sidecar that can't be read (wrong shape, a path that isn't in the value) is treated as no
  sidecar; the reason is appended to the ``problems`` list when one is passed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from bitfab.codec.paths import Chain, render_chain, split_path

__all__ = [
    "FRAGMENT_LIMIT",
    "MAX_CHANGES",
    "Change",
    "ChangeKind",
    "IgnoreSet",
    "Truncated",
    "Typed",
    "diff",
    "parse_ignore",
    "typed_view",
    "verdict",
]

ChangeKind = Literal["changed", "added", "removed", "type_changed", "more"]

MAX_CHANGES = 200
"""How many changes ``diff`` reports before it sums up the rest in one ``more`` change."""

FRAGMENT_LIMIT = 2048
"""Characters of JSON above which an ``old`` / ``new`` fragment is replaced by a ``Truncated``."""

_PREVIEW = 120
_MAX_DEPTH = 2000  # deeper than any JSON that json.loads returns; guards against cycles


# ---- values -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Typed:
    """A position the sidecar annotated: its tag, its ``class`` param and the value under it.

    ``params`` holds the annotation's other params as sorted, compact JSON (None if none), so
    that two views are equal only when everything that defines the value is equal.
    """

    tag: str
    class_name: str | None
    value: Any
    params: str | None = None


@dataclass(frozen=True)
class Truncated:
    """Stands in for a fragment whose JSON is longer than ``FRAGMENT_LIMIT`` characters."""

    preview: str

    def __str__(self) -> str:
        return self.preview


@dataclass(frozen=True)
class Change:
    """One difference between two outputs.

    ``path`` is written ``$.a[0].b`` (``$["x y"]`` for keys that aren't identifiers); ``old`` and
    ``new`` are the readable JSON fragments (None on the missing side of ``added``/``removed``),
    or a ``Truncated`` when large. The last change of a capped diff has kind ``more``, path
    ``$`` and ``new`` set to the number of changes left out.
    """

    path: str
    kind: ChangeKind
    old: Any = None
    new: Any = None

    def to_dict(self) -> dict[str, Any]:
        """The change as JSON; a truncated side becomes its preview, listed under ``truncated``."""
        out: dict[str, Any] = {"path": self.path, "kind": self.kind}
        truncated = []
        for side, fragment in (("old", self.old), ("new", self.new)):
            if isinstance(fragment, Truncated):
                truncated.append(side)
                fragment = fragment.preview
            out[side] = fragment
        if truncated:
            out["truncated"] = truncated
        return out


# ---- the sidecar --------------------------------------------------------------------------

# (tag, class param, other params as canonical JSON)
_Ann = tuple[str, str | None, str | None]


class _Node:
    """One position of the annotation trie, resolved against the readable value."""

    __slots__ = ("ann", "children")

    def __init__(self) -> None:
        self.ann: _Ann | None = None
        self.children: dict[int | str, _Node] = {}


class _BadSidecar(Exception):
    pass


def typed_view(value: Any, meta: Any, *, problems: list[str] | None = None) -> Any:
    """A comparable structure where every annotated position is a ``Typed`` marker.

    Unannotated values are returned as they are (shared, not copied), so two views compare
    with ``==``; mind that Python's ``True == 1`` carries over, which ``diff`` does not.

    Example::

        >>> typed_view([1, 2], {"v": 1, "values": [["custom", "py:tuple"]]})
        Typed(tag='py:tuple', class_name=None, value=[1, 2], params=None)

    Args:
        value: the readable JSON.
        meta: its sidecar, or None.
        problems: if given, a note is appended when the sidecar is unreadable and ignored.

    Never raises.
    """
    trie = _annotations(value, meta, problems)
    if trie is None:
        return value
    try:
        return _view(value, trie)
    except RecursionError:
        _note(problems, "the sidecar is nested too deeply")
        return value


def _view(value: Any, node: _Node) -> Any:
    if node.children:
        kids = node.children
        if isinstance(value, dict):
            value = {k: _view(v, kids[k]) if k in kids else v for k, v in value.items()}
        elif isinstance(value, list):
            value = [_view(v, kids[i]) if i in kids else v for i, v in enumerate(value)]
    if node.ann is not None:
        tag, class_name, params = node.ann
        return Typed(tag, class_name, value, params)
    return value


def _note(problems: list[str] | None, reason: str) -> None:
    if problems is not None:
        problems.append(f"sidecar ignored: {reason}")


def _annotations(value: Any, meta: Any, problems: list[str] | None) -> _Node | None:
    try:
        return _read_sidecar(value, meta)
    except _BadSidecar as exc:
        reason = str(exc)
    except RecursionError:
        reason = "the sidecar is nested too deeply"
    except Exception as exc:  # a sidecar is data from elsewhere: no shape of it may raise here
        reason = f"{type(exc).__name__}: {exc}"
    _note(problems, reason)
    return None


def _read_sidecar(value: Any, meta: Any) -> _Node | None:
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise _BadSidecar(f"meta is {type(meta).__name__}, not an object")
    version = meta.get("v", 1)
    if isinstance(version, bool) or version != 1:
        raise _BadSidecar(f"unsupported sidecar version {version!r}")
    values = meta.get("values")
    if values is None:
        return None
    root = _Node()
    _parse_tree(values, value, root)
    if root.ann is None and not root.children:
        return None
    return root


def _parse_tree(tree: Any, value: Any, node: _Node) -> None:
    if isinstance(tree, dict):
        _parse_children(tree, value, node)
        return
    if not isinstance(tree, list) or not 1 <= len(tree) <= 2:
        raise _BadSidecar(f"a node is neither [annotation, {{children}}] nor a map: {tree!r:.80}")
    ann = _parse_annotation(tree[0])
    if node.ann is not None and node.ann != ann:
        raise _BadSidecar("one position has two different annotations")
    node.ann = ann
    if len(tree) == 2:
        if not isinstance(tree[1], dict):
            raise _BadSidecar(f"the children of a node are not a map: {tree[1]!r:.80}")
        _parse_children(tree[1], value, node)


def _parse_children(mapping: dict[Any, Any], value: Any, node: _Node) -> None:
    for path, tree in mapping.items():
        if not isinstance(path, str):
            raise _BadSidecar(f"path {path!r} is not a string")
        try:
            segments = split_path(path)
        except ValueError as exc:
            raise _BadSidecar(str(exc)) from None
        here, at = value, node
        for segment in segments:
            key: int | str
            if isinstance(here, dict):
                if segment not in here:
                    raise _BadSidecar(f"path {path!r} is not in the value")
                key = segment
            elif isinstance(here, list):
                if not (segment.isascii() and segment.isdigit()) or int(segment) >= len(here):
                    raise _BadSidecar(f"path {path!r} is not in the value")
                key = int(segment)
            else:
                raise _BadSidecar(f"path {path!r} goes inside a scalar")
            here = here[key]
            at = at.children.setdefault(key, _Node())
        _parse_tree(tree, here, at)


def _parse_annotation(ann: Any) -> _Ann:
    if isinstance(ann, str):  # superjson's own annotations ("Date", "set", ...)
        return (ann, None, None)
    if isinstance(ann, list) and len(ann) in (2, 3) and ann[0] == "custom":
        tag = ann[1]
        params = ann[2] if len(ann) == 3 else None
        if not isinstance(tag, str) or not isinstance(params, (dict, type(None))):
            raise _BadSidecar(f"malformed annotation {ann!r:.80}")
        if not params:
            return (tag, None, None)
        class_name = params.get("class")
        if class_name is not None and not isinstance(class_name, str):
            raise _BadSidecar(f"malformed class in annotation {ann!r:.80}")
        rest = {k: v for k, v in params.items() if k != "class"}
        try:
            text = json.dumps(rest, sort_keys=True, separators=(",", ":")) if rest else None
        except (TypeError, ValueError):
            raise _BadSidecar(f"malformed params in annotation {ann!r:.80}") from None
        return (tag, class_name, text)
    if isinstance(ann, list) and len(ann) == 2 and all(isinstance(a, str) for a in ann):
        return (ann[0], ann[1], None)  # superjson's ["class", name] / ["symbol", name]
    raise _BadSidecar(f"malformed annotation {ann!r:.80}")


# ---- ignore paths -------------------------------------------------------------------------


class _Any:
    __slots__ = ()

    def __repr__(self) -> str:
        return "*"


_ANY = _Any()
_Selector = int | str | _Any  # list index, dict key, any child
_Step = tuple[bool, _Selector]  # (recursive descent, selector)
_States = frozenset[tuple[int, int]]  # (pattern, steps matched so far)


class IgnoreSet:
    """Compiled ignore paths; build it with ``parse_ignore``.

    A path matches a position when it matches the position or one of its ancestors: ignoring
    ``$.user`` ignores ``$.user.name`` too.
    """

    __slots__ = ("_patterns", "expressions")

    def __init__(self, expressions: Sequence[str], patterns: Sequence[Sequence[_Step]]) -> None:
        self.expressions = tuple(expressions)
        self._patterns = tuple(tuple(p) for p in patterns)

    def __repr__(self) -> str:
        return f"IgnoreSet({list(self.expressions)!r})"

    def __len__(self) -> int:
        return len(self.expressions)

    def matches(self, path: Iterable[int | str]) -> bool:
        """Whether the position at ``path`` (keys and indices from the root) is ignored."""
        states = self._start()
        if self._done(states):
            return True
        for segment in path:
            states = self._advance(states, segment)
            if self._done(states):
                return True
            if not states:
                return False
        return False

    def _start(self) -> _States:
        return frozenset((p, 0) for p in range(len(self._patterns)))

    def _done(self, states: _States) -> bool:
        return any(step == len(self._patterns[p]) for p, step in states)

    def _advance(self, states: _States, segment: int | str) -> _States:
        if not states:
            return states
        out: set[tuple[int, int]] = set()
        for p, step in states:
            steps = self._patterns[p]
            if step == len(steps):
                continue
            descend, selector = steps[step]
            if descend:
                out.add((p, step))
            if selector is _ANY or (
                type(selector) is type(segment) and selector == segment  # an index is not a key
            ):
                out.add((p, step + 1))
        return frozenset(out)


def parse_ignore(paths: Iterable[str] | str | IgnoreSet) -> IgnoreSet:
    """Compile JSONPath-like ignore paths.

    The subset understood: ``$`` (the whole value), ``.name`` and ``["any key"]`` / ``['any key']``
    (a dict key), ``[2]`` (a list index), ``[*]`` and ``.*`` (any child), and ``..`` before any of
    those (at any depth below). Example::

        parse_ignore(["$.created_at", "$.items[*].id", '$["key with.dot"]', "$..request_id"])

    A dotted name is made of letters, digits, ``_`` and ``-``; other keys need brackets.

    Raises:
        ValueError: an expression is not in the subset; the message gives the position.
    """
    if isinstance(paths, IgnoreSet):
        return paths
    expressions = [paths] if isinstance(paths, str) else list(paths)
    return IgnoreSet(expressions, [_parse_path(e) for e in expressions])


def _parse_path(expr: str) -> list[_Step]:
    if not isinstance(expr, str):
        raise TypeError(f"an ignore path must be a str, not {type(expr).__name__}")
    if not expr.startswith("$"):
        _fail(expr, 0, "expected '$'")
    steps: list[_Step] = []
    i, n = 1, len(expr)
    while i < n:
        selector: _Selector
        if expr.startswith("..", i):
            i += 2
            if i < n and expr[i] == "[":
                selector, i = _parse_bracket(expr, i)
            else:
                selector, i = _parse_name(expr, i)
            steps.append((True, selector))
        elif expr[i] == ".":
            selector, i = _parse_name(expr, i + 1)
            steps.append((False, selector))
        elif expr[i] == "[":
            selector, i = _parse_bracket(expr, i)
            steps.append((False, selector))
        else:
            _fail(expr, i, "expected '.', '..' or '['")
    return steps


def _is_name_char(ch: str) -> bool:
    return ch == "-" or ("a" + ch).isidentifier()


def _parse_name(expr: str, i: int) -> tuple[_Selector, int]:
    if expr.startswith("*", i):
        return _ANY, i + 1
    j = i
    while j < len(expr) and _is_name_char(expr[j]):
        j += 1
    if j == i:
        _fail(expr, i, "expected a key name or '*'")
    return expr[i:j], j


def _parse_bracket(expr: str, i: int) -> tuple[_Selector, int]:
    j = i + 1
    if j >= len(expr):
        _fail(expr, j, "expected '*', an index or a quoted key")
    ch = expr[j]
    selector: _Selector
    if ch == "*":
        selector, j = _ANY, j + 1
    elif "0" <= ch <= "9":
        k = j
        while k < len(expr) and "0" <= expr[k] <= "9":
            k += 1
        selector, j = int(expr[j:k]), k
    elif ch == '"':
        try:
            selector, j = json.JSONDecoder().raw_decode(expr, j)
        except json.JSONDecodeError as exc:
            _fail(expr, exc.pos, f"invalid quoted key ({exc.msg})")
    elif ch == "'":
        chars: list[str] = []
        k = j + 1
        while k < len(expr) and expr[k] != "'":
            if expr[k] == "\\" and k + 1 < len(expr):
                k += 1
            chars.append(expr[k])
            k += 1
        if k >= len(expr):
            _fail(expr, j, "unterminated quoted key")
        selector, j = "".join(chars), k + 1
    else:
        _fail(expr, j, "expected '*', an index or a quoted key")
    if not expr.startswith("]", j):
        _fail(expr, j, "expected ']'")
    return selector, j + 1


def _fail(expr: str, position: int, what: str) -> NoReturn:
    raise ValueError(f"invalid ignore path {expr!r} at position {position}: {what}")


# ---- diff ---------------------------------------------------------------------------------


class _Missing:
    __slots__ = ()


_MISSING = _Missing()

# (position, old value, its annotations, new value, its annotations, ignore states, depth)
_Frame = tuple[Chain, Any, _Node | None, Any, _Node | None, _States, int]


def diff(
    original: tuple[Any, Any],
    new: tuple[Any, Any],
    *,
    ignore: Iterable[str] | IgnoreSet = (),
    max_changes: int = MAX_CHANGES,
    problems: list[str] | None = None,
) -> list[Change]:
    """The differences between two outputs in canonical form ``(value, meta)``.

    Changes come sorted by path (keys in string order, indices in numeric order, a parent
    before its children). Past ``max_changes``, one last change of kind ``more`` says how many
    were left out.

    Example::

        >>> diff(({"a": 1, "b": [1]}, None), ({"a": 2, "b": [1, 2]}, None))
        [Change(path='$.a', kind='changed', old=1, new=2),
         Change(path='$.b[1]', kind='added', old=None, new=2)]

    Args:
        original: the recorded output and its sidecar.
        new: the replayed output, encoded the same way.
        ignore: paths to leave out (see ``parse_ignore``), or an ``IgnoreSet``.
        max_changes: how many changes to report in full.
        problems: if given, notes about unreadable sidecars are appended to it.

    Raises:
        ValueError: an ignore path is invalid.
    """
    ignore_set = parse_ignore(ignore)
    old_value, old_meta = original
    new_value, new_meta = new
    old_trie = _annotations(old_value, old_meta, problems)
    new_trie = _annotations(new_value, new_meta, problems)
    states = ignore_set._start()
    if ignore_set._done(states):
        return []

    changes: list[Change] = []
    left_out = 0

    def report(chain: Chain, kind: ChangeKind, old: Any, new: Any) -> None:
        nonlocal left_out
        if len(changes) < max_changes:
            changes.append(Change(render_chain(chain), kind, _fragment(old), _fragment(new)))
        else:
            left_out += 1

    stack: list[_Frame] = [(None, old_value, old_trie, new_value, new_trie, states, 0)]
    while stack:
        chain, a, a_node, b, b_node, states, depth = stack.pop()
        if a is _MISSING:
            report(chain, "added", None, b)
            continue
        if b is _MISSING:
            report(chain, "removed", a, None)
            continue
        a_ann = a_node.ann if a_node is not None else None
        b_ann = b_node.ann if b_node is not None else None
        a_type = a_ann[:2] if a_ann is not None else None
        b_type = b_ann[:2] if b_ann is not None else None
        if a_type != b_type:
            report(chain, "type_changed", a, b)
            continue
        if a_ann != b_ann:
            report(chain, "changed", a, b)
            continue
        a_kind, b_kind = _json_kind(a), _json_kind(b)
        if a_kind != b_kind:
            report(chain, "type_changed", a, b)
            continue
        if depth >= _MAX_DEPTH:
            if not _equal(a, b):
                report(chain, "changed", a, b)
            continue
        children: list[_Frame] = []
        positions: Iterable[tuple[Any, int | str]]
        if a_kind == "object":
            positions = ((k, k if isinstance(k, str) else str(k)) for k in _sorted_keys(a, b))
        elif a_kind == "array":
            positions = ((i, i) for i in range(max(len(a), len(b))))
        else:
            if not _scalars_equal(a, b):
                report(chain, "changed", a, b)
            continue
        for key, segment in positions:
            child_states = ignore_set._advance(states, segment)
            if ignore_set._done(child_states):
                continue
            children.append(
                (
                    (chain, segment),
                    _child(a, key),
                    a_node.children.get(key) if a_node is not None else None,
                    _child(b, key),
                    b_node.children.get(key) if b_node is not None else None,
                    child_states,
                    depth + 1,
                )
            )
        stack.extend(reversed(children))

    if left_out:
        changes.append(Change("$", "more", None, left_out))
    return changes


def _child(container: Any, key: Any) -> Any:
    if isinstance(container, dict):
        return container.get(key, _MISSING)
    return container[key] if key < len(container) else _MISSING


def _sorted_keys(a: dict[Any, Any], b: dict[Any, Any]) -> list[Any]:
    return sorted(a.keys() | b.keys(), key=lambda k: (not isinstance(k, str), str(k)))


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__qualname__


def _scalars_equal(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return _equal(a, b)


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # odd objects, or cycles past the depth guard: count them as different
        return False


def _fragment(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = _json_prefix(value, FRAGMENT_LIMIT + 1)
    if len(text) <= FRAGMENT_LIMIT:
        return value
    return Truncated(text[:_PREVIEW] + "...")


def _json_prefix(value: Any, limit: int) -> str:
    """The first ``limit`` or so characters of ``value``'s JSON, without encoding all of it."""
    encoder = json.JSONEncoder(ensure_ascii=False, default=_safe_repr)
    size = 0
    chunks: list[str] = []
    try:
        for chunk in encoder.iterencode(value):
            chunks.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
    except Exception:  # circular or odd keys: fall back on a repr
        return _safe_repr(value)
    return "".join(chunks)


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__qualname__} object>"


# ---- verdict ------------------------------------------------------------------------------


def verdict(
    *,
    original_error: str | None,
    new_error: str | None,
    changes: Sequence[Change],
    custom: bool | float | None = None,
    min_score: float = 1.0,
) -> Literal["same", "changed", "error", "fixed", "still_error"]:
    """The verdict of one replayed call.

    Errors decide first: ``still_error`` (both raised), ``error`` (only the new call raised),
    ``fixed`` (only the original raised). Otherwise a user ``compare`` hook's answer wins over
    the diff: True is ``same``, False ``changed``, a number is ``same`` when ``>= min_score``
    (NaN never is). Without one, ``same`` when there are no changes.
    """
    if original_error is not None and new_error is not None:
        return "still_error"
    if new_error is not None:
        return "error"
    if original_error is not None:
        return "fixed"
    if custom is not None:
        if isinstance(custom, bool):
            return "same" if custom else "changed"
        return "same" if custom >= min_score else "changed"
    return "changed" if changes else "same"
