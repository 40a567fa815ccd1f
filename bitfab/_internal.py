"""Guards around bitfab's own steps: log a failure once and carry on, never break the user's call.

Under bitfab's own test suite (``set_strict(True)``) a failure re-raises, so bugs surface.
"""

from __future__ import annotations

import logging
import threading
from typing import Final

logger: Final = logging.getLogger("bitfab")

_strict = False
_seen: set[str] = set()
_seen_lock = threading.Lock()
_MAX_SEEN = 1024


def set_strict(value: bool) -> bool:
    """Make internal errors raise (bitfab's tests) or log once (production); returns the old value."""
    global _strict
    old, _strict = _strict, value
    return old


def is_strict() -> bool:
    return _strict


def internal_error(where: str, exc: BaseException | None = None) -> None:
    """Report a failure inside bitfab once per place; re-raise it in strict mode."""
    if _strict:
        raise
    with _seen_lock:
        if where in _seen or len(_seen) >= _MAX_SEEN:
            return
        _seen.add(where)
    logger.warning(
        "bitfab: internal error in %s; recording continues without it (reported once)",
        where,
        exc_info=exc if exc is not None else True,
    )


def warn_once(topic: str, message: str, *args: object, exc_info: bool = False) -> None:
    """Log a warning the first time ``topic`` comes up in this process."""
    with _seen_lock:
        if topic in _seen or len(_seen) >= _MAX_SEEN:
            return
        _seen.add(topic)
    logger.warning(message, *args, exc_info=exc_info)


def reset_warnings() -> None:
    """Forget which warnings were given (tests)."""
    with _seen_lock:
        _seen.clear()
