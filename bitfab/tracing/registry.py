"""The registry of traced functions: what ``bitfab.functions()`` lists and replay looks keys up in."""

from __future__ import annotations

import functools
import inspect
import threading
from dataclasses import dataclass, field
from typing import Any

from bitfab.exceptions import RegistryError

__all__ = ["FunctionInfo", "Registry"]


@dataclass(frozen=True)
class FunctionInfo:
    """One traced function as declared in code."""

    key: str
    name: str
    qualname: str
    module: str
    file: str | None
    line: int | None
    signature: str
    span_type: str
    mock_on_replay: bool
    kind: str
    """``function``, ``async``, ``generator`` or ``async_generator``."""
    traced: Any = field(default=None, repr=False, compare=False)
    """The decorated object (for replay)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "qualname": self.qualname,
            "module": self.module,
            "file": self.file,
            "line": self.line,
            "signature": self.signature,
            "span_type": self.span_type,
            "mock_on_replay": self.mock_on_replay,
            "kind": self.kind,
        }


def describe(
    func: Any, *, key: str, name: str, span_type: str, mock_on_replay: bool, kind: str
) -> FunctionInfo:
    target = inspect.unwrap(func) if callable(func) else func
    target = getattr(target, "__func__", target)
    try:
        signature = str(inspect.signature(target))
    except (TypeError, ValueError):
        signature = "(...)"
    while isinstance(target, functools.partial):
        target = target.func
    if not (inspect.isroutine(target) or inspect.isclass(target)):
        target = type(target)  # a callable object: name it by its class
    code = getattr(target, "__code__", None)
    try:
        file = inspect.getsourcefile(target) if code is not None else None
    except TypeError:
        file = None
    return FunctionInfo(
        key=key,
        name=name,
        qualname=getattr(target, "__qualname__", repr(target)),
        module=getattr(target, "__module__", None) or "",
        file=file or (code.co_filename if code is not None else None),
        line=code.co_firstlineno if code is not None else None,
        signature=signature,
        span_type=span_type,
        mock_on_replay=mock_on_replay,
        kind=kind,
    )


class Registry:
    """Traced functions by key. A key names one function; re-decorating the same one replaces it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, FunctionInfo] = {}

    def add(self, info: FunctionInfo) -> None:
        with self._lock:
            known = self._by_key.get(info.key)
            if known is not None and (known.module, known.qualname) != (info.module, info.qualname):
                raise RegistryError(
                    f"key {info.key!r} is already used by {known.module}.{known.qualname} "
                    f"({known.file}:{known.line}); {info.module}.{info.qualname} needs its own key",
                    key=info.key,
                )
            self._by_key[info.key] = info

    def get(self, key: str) -> FunctionInfo:
        with self._lock:
            info = self._by_key.get(key)
            if info is None:
                known = ", ".join(sorted(self._by_key)) or "none"
                raise RegistryError(
                    f"no traced function has key {key!r}; known keys: {known}", key=key
                )
            return info

    def all(self) -> list[FunctionInfo]:
        with self._lock:
            return sorted(self._by_key.values(), key=lambda info: info.key)

    def remove(self, key: str) -> None:
        with self._lock:
            self._by_key.pop(key, None)
