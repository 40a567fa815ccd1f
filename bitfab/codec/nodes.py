"""Building sidecar nodes, shared by the walk over builtins and the one over user classes.

A node is None (nothing to annotate), a list ``[annotation]`` / ``[annotation, {children}]``
(the value itself is annotated), or a dict ``{path: node}`` (only descendants are).
"""

from __future__ import annotations

from typing import Any

from bitfab.codec import tags

__all__ = ["CUSTOM", "Node", "attach", "type_name", "wrap"]

Node = Any  # None | list (annotated) | dict (paths of annotated descendants)
CUSTOM = tags.CUSTOM


def attach(children: dict[str, Node] | None, key: str, node: Node) -> dict[str, Node]:
    """Add a child's node under ``key``, folding a plain container's paths into longer ones."""
    if children is None:
        children = {}
    if type(node) is dict:
        for sub, sub_node in node.items():
            children[f"{key}.{sub}"] = sub_node
    else:
        children[key] = node
    return children


def wrap(annotation: list[Any], children: dict[str, Node] | None) -> list[Any]:
    """The node of an annotated value, with its children if any."""
    return [annotation, children] if children else [annotation]


def type_name(cls: type) -> str:
    """``module.QualName`` of a type, for placeholders and problems."""
    try:
        module = cls.__module__
        qualname = cls.__qualname__
        return f"{module}.{qualname}" if isinstance(module, str) else str(qualname)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:
        return "<unknown type>"
