"""Tag names of the type sidecar, the readable markers, and the sidecar version.

An annotation in the sidecar is ``["custom", tag]`` or ``["custom", tag, params]``. The ``py:``
tags are the ones in PROTOCOL.md; ``bitfab:`` tags are this SDK's own. The tags below the line
mark values that were not recorded exactly: a reader refuses to rebuild them.
"""

from __future__ import annotations

SIDECAR_VERSION = 1

CUSTOM = "custom"

TUPLE = "py:tuple"
SET = "py:set"
FROZENSET = "py:frozenset"
NAMEDTUPLE = "py:namedtuple"
DATETIME = "py:datetime"
DATE = "py:date"
TIME = "py:time"
UUID = "py:uuid"
DECIMAL = "py:decimal"
BYTES = "py:bytes"
BYTEARRAY = "py:bytearray"
ENUM = "py:enum"
MODEL = "py:model"
DATACLASS = "py:dataclass"

FLOAT = "bitfab:float"  # NaN / Infinity / -Infinity, readable as those strings
INT = "bitfab:int"  # an int too long for decimal text, readable as hex
DICT = "bitfab:dict"  # non-str keys: readable list of [key, value] pairs
ORDEREDDICT = "bitfab:ordereddict"  # params {"pairs": true} when its keys are not all str
TIMEDELTA = "bitfab:timedelta"  # readable total seconds: int, float, or exact decimal string

# ---- not exactly restorable ----
UNSERIALIZABLE = "bitfab:unserializable"
GENERATOR = "bitfab:generator"
TRUNCATED = "bitfab:truncated"
CYCLE = "bitfab:cycle"
DEPTH = "bitfab:depth"
REDACTED = "bitfab:redacted"
INEXACT = "bitfab:inexact"  # a subclass of a builtin encoded as its base type

LOSSY_TAGS = frozenset({UNSERIALIZABLE, GENERATOR, TRUNCATED, CYCLE, DEPTH, REDACTED, INEXACT})

CYCLE_MARKER = "<cycle>"
DEPTH_MARKER = "<max depth>"
