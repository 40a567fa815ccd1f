"""The exceptions bitfab raises to its users.

Recording never raises into the traced function; these come from configuration, the registry,
decoding recorded data and replay::

    BitfabError
    ├── ConfigError              bad argument to configure() / Bitfab()
    ├── RegistryError            two different functions under one key, unknown key
    ├── CodecError
    │   └── ReplayDecodeError    recorded data cannot be rebuilt exactly (has .path)
    ├── ReplayError              a replay could not start or run (has .key)
    │   ├── NotReplayableError   a recorded call cannot be replayed (has .span_id, .reason)
    │   └── RegressionError      raise_for_regressions() found changed or errored items
    ├── StoreError               the store failed or holds data it cannot read
    └── MissingExtraError        an optional extra is not installed (says what to install)
"""

from __future__ import annotations

__all__ = [
    "BitfabError",
    "CodecError",
    "ConfigError",
    "MissingExtraError",
    "NotReplayableError",
    "RegistryError",
    "RegressionError",
    "ReplayDecodeError",
    "ReplayError",
    "StoreError",
]


class BitfabError(Exception):
    """Base class of every error bitfab raises."""


class ConfigError(BitfabError, ValueError):
    """A configuration value given in code is invalid."""


class RegistryError(BitfabError):
    """A traced-function key is used twice or is unknown."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class CodecError(BitfabError):
    """A value could not be encoded or decoded."""


class ReplayDecodeError(CodecError):
    """Recorded data cannot be rebuilt into the exact values that were recorded."""

    def __init__(self, message: str, *, path: str = "$") -> None:
        super().__init__(f"{message} (at {path})")
        self.reason = message
        self.path = path


class ReplayError(BitfabError):
    """A replay could not be started or carried out."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class NotReplayableError(ReplayError):
    """A recorded call cannot be replayed; ``reason`` says why."""

    def __init__(self, reason: str, *, span_id: str | None = None, key: str | None = None) -> None:
        super().__init__(reason, key=key)
        self.reason = reason
        self.span_id = span_id


class RegressionError(ReplayError):
    """``ReplayResult.raise_for_regressions()`` found items whose verdict is a regression."""


class StoreError(BitfabError):
    """The store failed, or holds data this version cannot read."""


class MissingExtraError(BitfabError, ImportError):
    """An optional dependency group is not installed."""

    def __init__(self, extra: str, feature: str) -> None:
        super().__init__(f"{feature} needs the '{extra}' extra: pip install 'bitfab[{extra}]'")
        self.extra = extra
