"""Paths: the sidecar's superjson-style keys and the ``$[0].user.name`` paths in messages.

Two spellings of the same idea:

- sidecar paths join segments with ``.``; a list index is its decimal string; a ``.`` or ``\\``
  inside a dict key is escaped with ``\\``;
- messages (problems, ``ReplayDecodeError.path``) use JSONPath-like ``$``, ``[0]`` for list
  indices, ``.name`` for identifier keys and ``["odd key"]`` for the rest.

While encoding, the position of a value is a chain of ``(parent, segment)`` tuples built only
for values that are not plain scalars, and rendered to text only when a problem needs it.
"""

from __future__ import annotations

import json
from typing import TypeAlias

__all__ = [
    "Chain",
    "escape_key",
    "join_message_path",
    "render_chain",
    "split_path",
]

# (parent chain, segment); the root is None. An int segment is a list index, a str one a key.
Chain: TypeAlias = "tuple[Chain, int | str] | None"


def escape_key(key: str) -> str:
    """Escape a dict key for use as one segment of a sidecar path."""
    if "." in key or "\\" in key:
        return key.replace("\\", "\\\\").replace(".", "\\.")
    return key


def split_path(path: str) -> list[str]:
    """Split a sidecar path into its unescaped segments (``\\x`` stands for ``x``)."""
    if "\\" not in path:
        return path.split(".")
    segments: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in path:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ".":
            segments.append("".join(current))
            current = []
        else:
            current.append(ch)
    if escaped:
        raise ValueError(f"sidecar path {path!r} ends with a lone backslash")
    segments.append("".join(current))
    return segments


def join_message_path(base: str, segment: int | str) -> str:
    """Append one segment to a ``$``-style message path."""
    if isinstance(segment, int):
        return f"{base}[{segment}]"
    if segment.isidentifier():
        return f"{base}.{segment}"
    return f"{base}[{json.dumps(segment)}]"


def render_chain(chain: Chain) -> str:
    """Render an encoding position chain as a ``$``-style message path."""
    segments: list[int | str] = []
    while chain is not None:
        chain, segment = chain
        segments.append(segment)
    path = "$"
    for segment in reversed(segments):
        path = join_message_path(path, segment)
    return path
