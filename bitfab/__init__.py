"""bitfab: record calls of production functions and replay them through new code.

Example::

    import bitfab

    @bitfab.trace(key="triage")
    def triage(ticket: Ticket) -> Verdict: ...

    triage(ticket)                 # recorded into .bitfab/bitfab.db, in the background
    run = triage.replay(limit=50)  # later, after a code change
    print(run)

Module-level functions are bound methods of one default :class:`Bitfab` instance.
"""

from __future__ import annotations

from bitfab._version import __version__
from bitfab.client import Bitfab
from bitfab.config import Config
from bitfab.exceptions import (
    BitfabError,
    ConfigError,
    NotReplayableError,
    RegistryError,
    ReplayDecodeError,
    ReplayError,
)
from bitfab.export.exporter import ExportStats
from bitfab.tracing.decorator import TracedFunction
from bitfab.tracing.registry import FunctionInfo
from bitfab.tracing.span import NoopSpan, Span

__all__ = [
    "Bitfab",
    "BitfabError",
    "Config",
    "ConfigError",
    "ExportStats",
    "FunctionInfo",
    "NoopSpan",
    "NotReplayableError",
    "RegistryError",
    "ReplayDecodeError",
    "ReplayError",
    "Span",
    "TracedFunction",
    "__version__",
    "configure",
    "current_span",
    "flush",
    "functions",
    "is_replaying",
    "register_type",
    "replay",
    "shutdown",
    "stats",
    "trace",
]

_default = Bitfab()

trace = _default.trace
configure = _default.configure
flush = _default.flush
shutdown = _default.shutdown
stats = _default.stats
functions = _default.functions
current_span = _default.current_span
is_replaying = _default.is_replaying
register_type = _default.register_type
replay = _default.replay


def default_instance() -> Bitfab:
    """The instance behind the module-level functions."""
    return _default
