"""Encoding bytes, bytearray and memoryview: UTF-8 text when they are valid UTF-8, else hex.

Only the prefix that fits the byte budget is ever copied, so a 1 GB buffer costs about the
budget in memory. A memoryview is recorded as bytes (its decoded type), with a problem saying
so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bitfab.codec import tags
from bitfab.codec.nodes import CUSTOM, Node
from bitfab.codec.paths import Chain, render_chain

if TYPE_CHECKING:
    from bitfab.codec.walker import Encoder

__all__ = ["emit_bytes", "encode_bytes", "encode_memoryview"]


def encode_bytes(enc: Encoder, v: bytes | bytearray, depth: int, chain: Chain) -> tuple[Any, Node]:
    """An exact bytes or bytearray."""
    tag, kind = (tags.BYTES, "bytes") if type(v) is bytes else (tags.BYTEARRAY, "bytearray")
    n = len(v)
    room = enc.rem - 2
    return emit_bytes(enc, v if n <= room else v[: max(room, 0)], n, tag, kind, chain)


def encode_memoryview(enc: Encoder, v: memoryview, depth: int, chain: Chain) -> tuple[Any, Node]:
    """A memoryview, as the bytes it shows."""
    n = v.nbytes
    room = max(enc.rem - 2, 0)
    try:
        flat = v.cast("B") if (v.ndim != 1 or v.format != "B") else v
        data = flat[:room].tobytes() if n > room else flat.tobytes()
    except (TypeError, ValueError):
        if n > room:  # not contiguous: a prefix cannot be taken without copying it all
            return enc.placeholder(memoryview, chain)
        data = v.tobytes()
    enc.problem(f"memoryview encoded as bytes at {render_chain(chain)}")
    return emit_bytes(enc, data, n, tags.BYTES, "memoryview", chain)


def emit_bytes(
    enc: Encoder, data: bytes | bytearray, total: int, tag: str, kind: str, chain: Chain
) -> tuple[Any, Node]:
    """Readable text of ``data``: all of a value of ``total`` bytes, or the prefix that fits."""
    room = enc.rem - 2
    if len(data) == total:
        try:
            text = data.decode("utf-8")
            enc.rem -= total + 2
            return text, [[CUSTOM, tag, {"encoding": "utf-8"}]]
        except UnicodeDecodeError:
            if 2 * total <= room:
                enc.rem -= 2 * total + 2
                return data.hex(), [[CUSTOM, tag, {"encoding": "hex"}]]
    room = max(room, 0)
    head = data[:room]
    encoding = "utf-8"
    try:
        text = _utf8_prefix(head)
    except UnicodeDecodeError:
        text = head[: room // 2].hex()
        encoding = "hex"
    enc.rem -= len(text) + 2
    enc.problem(f"truncated {kind} at {render_chain(chain)}")
    params = {"size": total, "kind": kind, "encoding": encoding}
    return text, [[CUSTOM, tags.TRUNCATED, params]]


def _utf8_prefix(head: bytes | bytearray) -> str:
    """Decode a prefix of UTF-8 bytes, dropping a character cut in half at its end."""
    for cut in range(4):
        try:
            return bytes(head[: len(head) - cut]).decode("utf-8")
        except UnicodeDecodeError as error:
            if error.start < len(head) - 4:
                raise
    raise UnicodeDecodeError("utf-8", bytes(head), 0, len(head), "not UTF-8")
