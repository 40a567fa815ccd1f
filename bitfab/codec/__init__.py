"""The value codec: Python values <-> readable JSON plus a type sidecar.

Recording calls ``encode_call`` / ``encode_value`` on the traced application's thread: they
never raise, bound what they keep, redact secrets, and say in ``Encoded.problems`` what could
not be recorded exactly. Replay calls ``decode_call`` / ``decode_value`` on recorded data,
which it treats as hostile: user classes are rebuilt only through a ``TypeAllowList``.

Example::

    from bitfab.codec import DEFAULT_REDACTOR, TypeAllowList, decode_call, encode_call

    encoded = encode_call((ticket,), {"lang": "en"}, redactor=DEFAULT_REDACTOR)
    types = TypeAllowList()
    types.allow_annotations(triage)
    args, kwargs = decode_call(encoded.value, encoded.meta, types=types)

The sidecar layout is described in PROTOCOL.md ("The type sidecar"); ``bitfab:`` tags are
listed in ``bitfab.codec.tags``.
"""

from __future__ import annotations

from bitfab.codec.allowlist import GLOBAL_TYPES, TypeAllowList, class_name
from bitfab.codec.decode import decode_call, decode_value
from bitfab.codec.encode import DEFAULT_LIMITS, Encoded, Limits, encode_call, encode_value
from bitfab.codec.redact import DEFAULT_REDACTOR, Redactor

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_REDACTOR",
    "GLOBAL_TYPES",
    "Encoded",
    "Limits",
    "Redactor",
    "TypeAllowList",
    "class_name",
    "decode_call",
    "decode_value",
    "encode_call",
    "encode_value",
]
