"""Which kind of rebuildable user class a class is: dataclass, enum, namedtuple, pydantic model.

Pydantic is optional: it is never imported here, only found in ``sys.modules`` when the
application has imported it (a pydantic model cannot exist otherwise).
"""

from __future__ import annotations

import dataclasses
import enum
import sys

__all__ = [
    "DATACLASS_KIND",
    "ENUM_KIND",
    "MODEL_KIND",
    "NAMEDTUPLE_KIND",
    "is_model_class",
    "is_namedtuple_class",
    "kind_of",
]

DATACLASS_KIND = "dataclass"
ENUM_KIND = "enum"
NAMEDTUPLE_KIND = "namedtuple"
MODEL_KIND = "model"


def is_model_class(cls: type) -> bool:
    """Whether ``cls`` is a pydantic v2 model class."""
    pydantic = sys.modules.get("pydantic")
    if pydantic is None:
        return False
    base = getattr(pydantic, "BaseModel", None)
    return isinstance(base, type) and issubclass(cls, base)


def is_namedtuple_class(cls: type) -> bool:
    """Whether ``cls`` is a namedtuple class (a tuple subclass with ``_fields``)."""
    return issubclass(cls, tuple) and isinstance(getattr(cls, "_fields", None), tuple)


def kind_of(cls: object) -> str | None:
    """Which of the rebuildable kinds a class is, or None."""
    if not isinstance(cls, type):
        return None
    if issubclass(cls, enum.Enum):
        return ENUM_KIND
    if dataclasses.is_dataclass(cls):
        return DATACLASS_KIND
    if is_model_class(cls):
        return MODEL_KIND
    if is_namedtuple_class(cls):
        return NAMEDTUPLE_KIND
    return None
