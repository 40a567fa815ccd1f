"""The walk that turns one value into readable JSON and a sidecar node.

``Encoder.value`` returns ``(readable, node)``: ``node`` is None when nothing at or below the
value needs annotating, a list ``[annotation]`` / ``[annotation, {children}]`` when the value
itself is annotated, or a dict ``{path: node}`` when only its descendants are (a parent folds
that dict into its own children, so paths of plain containers read ``"a.0.b"``).

The walk is built for the caller's thread:

- exact-type dispatch through a dict first, subclass checks only for what is left;
- plain scalars inside containers are handled inline, without a call or an allocation;
- positions are a chain of tuples, rendered to a ``$`` path only when a problem is reported;
- nodes are built bottom-up, so an exception unwinding from deep inside (a user ``__eq__``, a
  RecursionError) leaves no half-written sidecar behind.

No exception escapes ``value`` except KeyboardInterrupt and SystemExit: whatever a user object
raises turns it into a placeholder.
"""

from __future__ import annotations

import collections
import datetime as dt
import uuid
from collections.abc import Callable, Collection, Iterable
from decimal import Decimal
from itertools import islice
from typing import Any

from bitfab.codec import tags
from bitfab.codec.binary import encode_bytes, encode_memoryview
from bitfab.codec.nodes import CUSTOM, Node, attach, type_name, wrap
from bitfab.codec.objects import encode_other
from bitfab.codec.paths import Chain, escape_key, render_chain
from bitfab.codec.redact import (
    _PREFIX_FIRST_CHARS,
    _SECRET_PREFIXES,
    REDACTED,
    Redactor,
    env_secret_values,
)

__all__ = ["Encoder", "Node"]

_Handler = Callable[["Encoder", Any, int, Chain], "tuple[Any, Node]"]

# The inline checks in seq() and str_keyed() compare ints with literal 30-bit bounds: CPython
# 3.11 specializes comparisons of one-digit ints only, and a 64-bit bound costs several times
# more per item. Bigger ints go through int_().
_I64 = 1 << 63
_MAX_DECIMAL_INT_BITS = 13_000  # ~3,900 digits, under CPython's int-to-str limit of 4,300
_MAX_PROBLEMS = 50
_INT_SIZE = 8
# Value types a flat dict may hold for the fast copy (floats need a finiteness check: walked).
_FLAT_KINDS = frozenset({str, int, bool, type(None)})
_FLOAT_SIZE = 20
_SMALL_SIZE = 5
_EMPTY: frozenset[str] = frozenset()


class Encoder:
    """State of one encode call: the remaining byte budget, problems, and the path in progress."""

    __slots__ = (
        "active",
        "envv",
        "extra_problems",
        "max_depth",
        "max_items",
        "name_cache",
        "problems",
        "redactor",
        "rem",
        "safe_keys",
        "vp",
    )

    def __init__(
        self, budget: int, max_depth: int, max_items: int, redactor: Redactor | None
    ) -> None:
        self.rem = budget
        self.max_depth = max_depth
        self.max_items = max_items
        self.problems: list[str] = []
        self.extra_problems = 0
        self.active: set[int] = set()
        self.redactor = redactor
        if redactor is None:
            self.name_cache: dict[str, bool] | None = None
            self.safe_keys: set[str] | None = None
            self.vp = False
            self.envv = _EMPTY
        else:
            self.name_cache = redactor._name_cache
            self.safe_keys = redactor._safe_key_names
            self.vp = redactor.value_patterns
            self.envv = env_secret_values() if self.vp else _EMPTY

    # ---- bookkeeping -------------------------------------------------------------------------

    def problem(self, message: str) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(message)
        else:
            self.extra_problems += 1

    def problem_tuple(self) -> tuple[str, ...]:
        if self.extra_problems:
            return (*self.problems, f"... and {self.extra_problems} more problems")
        return tuple(self.problems)

    def name_is_secret(self, name: str) -> bool:
        redactor = self.redactor
        return redactor is not None and redactor.name_is_secret(name)

    def marker(self, text: str, tag: str, what: str, chain: Chain) -> tuple[str, Node]:
        self.problem(f"{what} at {render_chain(chain)}")
        self.rem -= len(text) + 2
        return text, [[CUSTOM, tag]]

    def redacted(self, chain: Chain) -> tuple[str, Node]:
        return self.marker(REDACTED, tags.REDACTED, "redacted", chain)

    def placeholder(
        self, cls: type, chain: Chain, error: BaseException | None = None
    ) -> tuple[str, Node]:
        name = type_name(cls)
        text = f"<unserializable: {name}>"
        why = f" ({type_name(type(error))} raised)" if error is not None else ""
        self.problem(f"unserializable {name} at {render_chain(chain)}{why}")
        self.rem -= len(text) + 2
        return text, [[CUSTOM, tags.UNSERIALIZABLE, {"type": name}]]

    # ---- dispatch ----------------------------------------------------------------------------

    def value(self, v: Any, depth: int, chain: Chain) -> tuple[Any, Node]:
        t = type(v)
        try:
            handler = _EXACT.get(t)
            if handler is not None:
                return handler(self, v, depth, chain)
            return encode_other(self, v, t, depth, chain)
        except (KeyboardInterrupt, SystemExit):
            raise
        except RecursionError:
            return self.marker(tags.DEPTH_MARKER, tags.DEPTH, "max depth", chain)
        except BaseException as error:
            return self.placeholder(t, chain, error)

    # ---- scalars -----------------------------------------------------------------------------

    def str_(self, v: str, depth: int, chain: Chain) -> tuple[Any, Node]:
        n = len(v)
        if self.vp and n >= 8:
            redactor = self.redactor
            if redactor is not None and redactor.value_is_secret(v):
                return self.redacted(chain)
        rem = self.rem
        if n + 2 <= rem:
            self.rem = rem - n - 2
            return v, None
        keep = rem - 2 if rem > 2 else 0
        self.rem = rem - keep - 2
        self.problem(f"truncated str at {render_chain(chain)}")
        return v[:keep], [[CUSTOM, tags.TRUNCATED, {"size": n, "kind": "str"}]]

    def int_(self, v: int, depth: int, chain: Chain) -> tuple[Any, Node]:
        if -_I64 < v < _I64:
            self.rem -= _INT_SIZE
            return v, None
        bits = v.bit_length()
        size = bits // 3 + 3 if bits <= _MAX_DECIMAL_INT_BITS else bits // 4 + 5
        if size > self.rem:
            self.problem(f"truncated int at {render_chain(chain)}")
            text = f"<int: {bits} bits>"
            self.rem -= len(text) + 2
            return text, [[CUSTOM, tags.TRUNCATED, {"size": bits, "kind": "int"}]]
        self.rem -= size
        if bits <= _MAX_DECIMAL_INT_BITS:
            return v, None
        return hex(v), [[CUSTOM, tags.INT, {"encoding": "hex"}]]

    def float_(self, v: float, depth: int, chain: Chain) -> tuple[Any, Node]:
        self.rem -= _FLOAT_SIZE
        if v - v == 0.0:
            return v, None
        text = "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
        return text, [[CUSTOM, tags.FLOAT]]

    def small(self, v: Any, depth: int, chain: Chain) -> tuple[Any, Node]:
        self.rem -= _SMALL_SIZE
        return v, None

    def text(self, text: str, tag: str, kind: str, chain: Chain) -> tuple[Any, Node]:
        """A value whose readable form is a short text with a plain tag (date, uuid, ...)."""
        n = len(text)
        rem = self.rem
        if n + 2 <= rem:
            self.rem = rem - n - 2
            return text, [[CUSTOM, tag]]
        keep = rem - 2 if rem > 2 else 0
        self.rem = rem - keep - 2
        self.problem(f"truncated {kind} at {render_chain(chain)}")
        return text[:keep], [[CUSTOM, tags.TRUNCATED, {"size": n, "kind": kind}]]

    def datetime_(self, v: dt.datetime, depth: int, chain: Chain) -> tuple[Any, Node]:
        return self.text(v.isoformat(), tags.DATETIME, "datetime", chain)

    def date_(self, v: dt.date, depth: int, chain: Chain) -> tuple[Any, Node]:
        return self.text(v.isoformat(), tags.DATE, "date", chain)

    def time_(self, v: dt.time, depth: int, chain: Chain) -> tuple[Any, Node]:
        return self.text(v.isoformat(), tags.TIME, "time", chain)

    def uuid_(self, v: uuid.UUID, depth: int, chain: Chain) -> tuple[Any, Node]:
        return self.text(str(v), tags.UUID, "uuid", chain)

    def decimal_(self, v: Decimal, depth: int, chain: Chain) -> tuple[Any, Node]:
        return self.text(str(v), tags.DECIMAL, "decimal", chain)

    def timedelta_(self, v: dt.timedelta, depth: int, chain: Chain) -> tuple[Any, Node]:
        seconds = v.days * 86_400 + v.seconds
        micros = v.microseconds
        readable: int | float | str
        if micros == 0:
            readable = seconds
        else:
            total = seconds * 1_000_000 + micros
            if -(10**15) < total < 10**15:
                # At most 15 significant digits: the float's repr gives these digits back.
                readable = total / 1_000_000
            else:
                sign = "-" if total < 0 else ""
                whole, frac = divmod(abs(total), 1_000_000)
                readable = f"{sign}{whole}.{frac:06d}"
        self.rem -= 24
        return readable, [[CUSTOM, tags.TIMEDELTA]]

    # ---- containers --------------------------------------------------------------------------

    def list_(self, v: list[Any], depth: int, chain: Chain) -> tuple[Any, Node]:
        return self.seq(v, v, len(v), depth, chain, None, "list", None)

    def tuple_(self, v: tuple[Any, ...], depth: int, chain: Chain) -> tuple[Any, Node]:
        return self.seq(v, v, len(v), depth, chain, [CUSTOM, tags.TUPLE], "tuple", None)

    def set_(self, v: set[Any] | frozenset[Any], depth: int, chain: Chain) -> tuple[Any, Node]:
        tag, kind = (tags.SET, "set") if isinstance(v, set) else (tags.FROZENSET, "frozenset")
        total = len(v)
        items: Iterable[Any] = v
        if total <= self.max_items:
            try:
                items = sorted(v)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException:  # not sortable: insertion order
                items = v
        return self.seq(v, items, total, depth, chain, [CUSTOM, tag], kind, None)

    def seq(
        self,
        owner: object,
        items: Iterable[Any],
        total: int,
        depth: int,
        chain: Chain,
        annotation: list[Any] | None,
        kind: str,
        redact_at: set[int] | None,
    ) -> tuple[Any, Node]:
        """A list-shaped readable value: list, tuple, set, namedtuple, the arguments of a call."""
        oid = id(owner)
        active = self.active
        if oid in active:
            return self.marker(tags.CYCLE_MARKER, tags.CYCLE, "cycle", chain)
        if depth > self.max_depth:
            return self.marker(tags.DEPTH_MARKER, tags.DEPTH, "max depth", chain)
        active.add(oid)
        try:
            if total > self.max_items:
                items = islice(items, self.max_items)
            vp = self.vp
            envv = self.envv
            prefixes = _SECRET_PREFIXES
            first_chars = _PREFIX_FIRST_CHARS
            out: list[Any] = []
            append = out.append
            children: dict[str, Node] | None = None
            rem = self.rem - 2
            child_depth = depth + 1
            for i, x in enumerate(items):
                if rem <= 0:
                    break
                t = type(x)
                if redact_at is not None and i in redact_at:
                    self.rem = rem
                    r, node = self.redacted((chain, i))
                    rem = self.rem
                    append(r)
                    children = attach(children, str(i), node)
                    continue
                if t is str:
                    n = len(x)
                    if n + 3 < rem and (
                        n < 8
                        or not vp
                        or (
                            (n < 16 or x[0] not in first_chars or not x.startswith(prefixes))
                            and x not in envv
                        )
                    ):
                        append(x)
                        rem -= n + 3
                        continue
                elif t is int:
                    if -1073741823 <= x <= 1073741823:
                        append(x)
                        rem -= _INT_SIZE
                        continue
                elif x is None or t is bool:
                    append(x)
                    rem -= _SMALL_SIZE
                    continue
                elif t is float and x - x == 0.0:
                    append(x)
                    rem -= _FLOAT_SIZE
                    continue
                self.rem = rem - 1
                r, node = self.value(x, child_depth, (chain, i))
                rem = self.rem
                append(r)
                if node is not None:
                    children = attach(children, str(i), node)
            self.rem = rem
            if len(out) < total:
                self.problem(f"truncated {kind} at {render_chain(chain)}")
                params = {"size": total, "kind": kind}
                return out, wrap([CUSTOM, tags.TRUNCATED, params], children)
            if annotation is not None:
                return out, wrap(annotation, children)
            return out, children
        finally:
            active.discard(oid)

    def arguments(self, items: list[Any], redact_at: set[int] | None) -> tuple[Any, Node]:
        """The readable list of a call's arguments: a lean seq() for a list nobody else holds."""
        out: list[Any] = []
        children: dict[str, Node] | None = None
        self.rem -= 2
        for i, x in enumerate(items):
            if self.rem <= 0:
                break
            self.rem -= 1
            if redact_at is not None and i in redact_at:
                r, node = self.redacted((None, i))
            else:
                r, node = self.value(x, 1, (None, i))
            out.append(r)
            if node is not None:
                children = attach(children, str(i), node)
        if len(out) < len(items):
            self.problem("truncated arguments at $")
            params = {"size": len(items), "kind": "arguments"}
            return out, wrap([CUSTOM, tags.TRUNCATED, params], children)
        return out, children

    def dict_(self, v: dict[Any, Any], depth: int, chain: Chain) -> tuple[Any, Node]:
        # mapping() inlined: dicts are the most common container.
        oid = id(v)
        active = self.active
        if oid in active:
            return self.marker(tags.CYCLE_MARKER, tags.CYCLE, "cycle", chain)
        if depth > self.max_depth:
            return self.marker(tags.DEPTH_MARKER, tags.DEPTH, "max depth", chain)
        flat = self.flat_dict(v)
        if flat is not None:
            return flat, None
        rem = self.rem
        count = len(self.problems)
        extra = self.extra_problems
        active.add(oid)
        try:
            items = v.items()
            result = self.str_keyed(items, depth, chain, None, "dict")
            if result is None:  # a key that is not a str: start again as pairs
                self.rem = rem
                self.extra_problems = extra
                del self.problems[count:]
                result = self.pairs(items, depth, chain, [CUSTOM, tags.DICT], "dict")
            return result
        finally:
            active.discard(oid)

    def flat_dict(self, v: dict[Any, Any]) -> dict[str, Any] | None:
        """A copy of a flat dict of plain values under names known not to be secret, made with
        C-level set operations instead of the per-key walk; None when anything needs the walk.
        """
        safe_keys = self.safe_keys
        if safe_keys is None or not 0 < len(v) <= self.max_items or not v.keys() <= safe_keys:
            return None
        values = v.values()
        kinds = set(map(type, values))
        if not kinds <= _FLAT_KINDS:
            return None
        # Charged as the walk charges each entry: key + value + 6 (str), + 12 (int), + 9 (others).
        size = 2 + sum(map(len, v)) + (_SMALL_SIZE + 4) * len(v)
        if str in kinds:
            texts = [x for x in values if type(x) is str]
            if self.vp:
                if not self.envv.isdisjoint(texts):
                    return None
                prefixes = _SECRET_PREFIXES
                for text in texts:
                    if len(text) >= 16 and text.startswith(prefixes):
                        return None
            size += sum(map(len, texts)) + (6 - _SMALL_SIZE - 4) * len(texts)
        if int in kinds:
            numbers = [x for x in values if type(x) is int]
            if max(numbers) > 1073741823 or min(numbers) < -1073741823:
                return None
            size += (_INT_SIZE - _SMALL_SIZE) * len(numbers)
        if size >= self.rem:
            return None
        self.rem -= size
        return dict(v)

    def ordereddict_(
        self, v: collections.OrderedDict[Any, Any], depth: int, chain: Chain
    ) -> tuple[Any, Node]:
        return self.mapping(
            v,
            v.items(),
            depth,
            chain,
            [CUSTOM, tags.ORDEREDDICT],
            [CUSTOM, tags.ORDEREDDICT, {"pairs": True}],
            "ordereddict",
        )

    def mapping(
        self,
        owner: object,
        items: Collection[tuple[Any, Any]],
        depth: int,
        chain: Chain,
        annotation: list[Any] | None,
        pairs_annotation: list[Any],
        kind: str,
    ) -> tuple[Any, Node]:
        """A dict-shaped value: an object when every key is a str, else a list of pairs.

        ``items`` is an items view (it can be iterated twice, and has a length).
        """
        oid = id(owner)
        active = self.active
        if oid in active:
            return self.marker(tags.CYCLE_MARKER, tags.CYCLE, "cycle", chain)
        if depth > self.max_depth:
            return self.marker(tags.DEPTH_MARKER, tags.DEPTH, "max depth", chain)
        rem = self.rem
        count = len(self.problems)
        extra = self.extra_problems
        active.add(oid)
        try:
            result = self.str_keyed(items, depth, chain, annotation, kind)
            if result is None:  # a key that is not a str: start again as pairs
                self.rem = rem
                self.extra_problems = extra
                del self.problems[count:]
                result = self.pairs(items, depth, chain, pairs_annotation, kind)
            return result
        finally:
            active.discard(oid)

    def str_keyed(
        self,
        view: Collection[tuple[Any, Any]],
        depth: int,
        chain: Chain,
        annotation: list[Any] | None,
        kind: str,
    ) -> tuple[Any, Node] | None:
        total = len(view)
        items: Iterable[tuple[Any, Any]] = view
        if total > self.max_items:
            items = islice(items, self.max_items)
        vp = self.vp
        envv = self.envv
        prefixes = _SECRET_PREFIXES
        first_chars = _PREFIX_FIRST_CHARS
        cache = self.name_cache
        out: dict[str, Any] = {}
        children: dict[str, Node] | None = None
        rem = self.rem - 2
        child_depth = depth + 1
        for k, x in items:
            if type(k) is not str:
                return None
            if rem <= 0:
                break
            if cache is not None:
                secret = cache.get(k)
                if secret is None:
                    secret = self.name_is_secret(k)
                if secret:
                    self.rem = rem - len(k) - 4
                    out[k], node = self.redacted((chain, k))
                    rem = self.rem
                    children = attach(children, escape_key(k), node)
                    continue
            # Each branch charges the entry in one go: key, quotes, colon, comma and value.
            t = type(x)
            if t is str:
                n = len(x)
                if n + len(k) + 6 < rem and (
                    n < 8
                    or not vp
                    or (
                        (n < 16 or x[0] not in first_chars or not x.startswith(prefixes))
                        and x not in envv
                    )
                ):
                    out[k] = x
                    rem -= n + len(k) + 6
                    continue
            elif t is int:
                if -1073741823 <= x <= 1073741823:
                    out[k] = x
                    rem -= len(k) + _INT_SIZE + 4
                    continue
            elif x is None or t is bool:
                out[k] = x
                rem -= len(k) + _SMALL_SIZE + 4
                continue
            elif t is float and x - x == 0.0:
                out[k] = x
                rem -= len(k) + _FLOAT_SIZE + 4
                continue
            self.rem = rem - len(k) - 4
            r, node = self.value(x, child_depth, (chain, k))
            rem = self.rem
            out[k] = r
            if node is not None:
                children = attach(children, escape_key(k), node)
        self.rem = rem
        if len(out) < total:
            self.problem(f"truncated {kind} at {render_chain(chain)}")
            return out, wrap([CUSTOM, tags.TRUNCATED, {"size": total, "kind": kind}], children)
        if annotation is not None:
            return out, wrap(annotation, children)
        return out, children

    def pairs(
        self,
        view: Collection[tuple[Any, Any]],
        depth: int,
        chain: Chain,
        annotation: list[Any],
        kind: str,
    ) -> tuple[Any, Node]:
        total = len(view)
        items: Iterable[tuple[Any, Any]] = view
        if total > self.max_items:
            items = islice(items, self.max_items)
        out: list[list[Any]] = []
        children: dict[str, Node] | None = None
        rem = self.rem - 2
        child_depth = depth + 1
        for i, (k, x) in enumerate(items):
            if rem <= 0:
                break
            self.rem = rem - 4
            pair_chain: Chain = (chain, i)
            rk, key_node = self.value(k, child_depth, (pair_chain, 0))
            if type(k) is str and self.name_is_secret(k):
                rx, value_node = self.redacted((pair_chain, 1))
            else:
                rx, value_node = self.value(x, child_depth, (pair_chain, 1))
            rem = self.rem
            out.append([rk, rx])
            if key_node is not None:
                children = attach(children, f"{i}.0", key_node)
            if value_node is not None:
                children = attach(children, f"{i}.1", value_node)
        self.rem = rem
        if len(out) < total:
            self.problem(f"truncated {kind} at {render_chain(chain)}")
            return out, wrap([CUSTOM, tags.TRUNCATED, {"size": total, "kind": kind}], children)
        return out, wrap(annotation, children)


_EXACT: dict[type, _Handler] = {
    str: Encoder.str_,
    int: Encoder.int_,
    float: Encoder.float_,
    bool: Encoder.small,
    type(None): Encoder.small,
    list: Encoder.list_,
    dict: Encoder.dict_,
    tuple: Encoder.tuple_,
    set: Encoder.set_,
    frozenset: Encoder.set_,
    bytes: encode_bytes,
    bytearray: encode_bytes,
    memoryview: encode_memoryview,
    dt.datetime: Encoder.datetime_,
    dt.date: Encoder.date_,
    dt.time: Encoder.time_,
    dt.timedelta: Encoder.timedelta_,
    uuid.UUID: Encoder.uuid_,
    Decimal: Encoder.decimal_,
    collections.OrderedDict: Encoder.ordereddict_,
}
