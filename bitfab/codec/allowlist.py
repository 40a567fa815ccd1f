"""The allow-list of user classes that decoding may rebuild.

Recorded data names classes as ``"module:QualName"``. Decoding never imports or resolves such a
name: it only looks it up here, in a list that the replaying code fills, either explicitly
(``register``) or from the classes named in a traced function's annotations
(``allow_annotations``). Only dataclasses, enums, namedtuples and pydantic models can be listed,
because those are the only user classes the codec knows how to rebuild.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from bitfab.codec.annotations import classes_in_annotations
from bitfab.codec.kinds import kind_of

__all__ = [
    "GLOBAL_TYPES",
    "TypeAllowList",
    "class_name",
]


def class_name(cls: type) -> str:
    """The ``"module:QualName"`` name under which a class is recorded and looked up."""
    return f"{cls.__module__}:{cls.__qualname__}"


class TypeAllowList:
    """The user classes that decoding may rebuild, by their ``"module:QualName"`` name.

    Example::

        types = TypeAllowList()
        types.register(Ticket)                             # or use it as a class decorator
        types.register(Customer, aliases=["crm.old:Client"])  # the name before a rename
        types.allow_annotations(triage)                    # everything triage's annotations name
        decode_value(value, meta, types=types)

    The list lives in code: nothing in recorded data can add to it.
    """

    __slots__ = ("_by_name",)

    def __init__(self, classes: Iterable[type] = ()) -> None:
        self._by_name: dict[str, type] = {}
        for cls in classes:
            self.register(cls)

    def __repr__(self) -> str:
        return f"TypeAllowList({sorted(self._by_name)!r})"

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, cls: object) -> bool:
        return isinstance(cls, type) and self._by_name.get(class_name(cls)) is cls

    def register(self, cls: type, *, aliases: Iterable[str] = ()) -> type:
        """Allow ``cls`` to be rebuilt, also under older names (``aliases``); returns ``cls``.

        Args:
            cls: a dataclass, Enum, namedtuple or pydantic model class.
            aliases: names the class was recorded under before a rename or a move,
                written ``"module:QualName"``.

        Raises:
            TypeError: ``cls`` is not a kind of class the codec can rebuild.
            ValueError: an alias is not written ``"module:QualName"``.
        """
        if kind_of(cls) is None:
            raise TypeError(
                f"{cls!r} cannot be registered: only dataclasses, enums, namedtuples and "
                "pydantic models can be rebuilt from recorded data"
            )
        names = [class_name(cls)]
        for alias in aliases:
            if not isinstance(alias, str) or alias.count(":") != 1 or alias.startswith(":"):
                raise ValueError(f"alias {alias!r} must be written 'module:QualName'")
            names.append(alias)
        for name in names:
            self._by_name[name] = cls
        return cls

    def allow_annotations(self, fn: Callable[..., Any]) -> None:
        """Allow the classes named in ``fn``'s parameter and return annotations.

        Follows dataclass, pydantic and namedtuple fields transitively, and the arguments of
        ``Optional``, ``Union``, ``list``, ``dict``, ``tuple``, ``set``, ``Annotated`` and
        ``Literal``. Names that cannot be resolved are skipped; this never raises.
        """
        home = getattr(fn, "__module__", None)
        for cls in classes_in_annotations(fn):
            if kind_of(cls) is not None:
                self._by_name.setdefault(class_name(cls), cls)
                if home is not None and cls.__module__ == home and home != "__main__":
                    # Recorded while its script ran as ``python shop.py`` (module __main__),
                    # replayed with the script imported as ``shop``: the function's own classes
                    # are the ones it was called with then. A real __main__ class wins.
                    self._by_name.setdefault(f"__main__:{cls.__qualname__}", cls)

    def union(self, other: TypeAllowList) -> TypeAllowList:
        """A new list with the classes of both (``other`` wins where a name is in both)."""
        merged = TypeAllowList()
        merged._by_name.update(self._by_name)
        merged._by_name.update(other._by_name)
        return merged

    def lookup(self, name: str) -> type | None:
        """The class allowed under ``name`` (``"module:QualName"``), or None; never imports."""
        if type(name) is not str:
            return None
        return self._by_name.get(name)


GLOBAL_TYPES = TypeAllowList()
