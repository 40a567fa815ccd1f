"""API keys of the server: minted once, shown once, kept only as a SHA-256 hash.

A key is ``bfk_`` followed by 32 random bytes in URL-safe base64. The store keeps its hash,
an id to name it by (``bitfab keys revoke ID``), a name for people, a scope, and when it was
created, last used and revoked. The secret itself is never stored and never logged::

    key, secret = new_api_key(name="ci", scope="ingest")
    store.create_api_key(key)
    print(secret)  # the only time it is seen

Scopes: ``ingest`` may record (the recording endpoints), ``read`` may read and replay (the
read API and the replay endpoints), ``all`` may do both.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

from bitfab.store.records import utc_now_iso

__all__ = [
    "KEY_PREFIX",
    "SCOPES",
    "ApiKey",
    "Scope",
    "check_scope",
    "hash_secret",
    "new_api_key",
    "scope_allows",
]

KEY_PREFIX = "bfk_"
Scope = Literal["ingest", "read", "all"]
SCOPES: tuple[Scope, ...] = ("ingest", "read", "all")
MAX_NAME_CHARS = 200


@dataclass(frozen=True, kw_only=True)
class ApiKey:
    """One API key as the store keeps it: everything but the secret."""

    id: str
    name: str | None
    scope: str
    key_hash: str
    """Hex SHA-256 of the whole secret (``bfk_...``)."""
    created_at: str
    revoked_at: str | None = None
    last_used_at: str | None = None
    """Updated at most about once a minute, so it is approximate."""

    @property
    def active(self) -> bool:
        """Not revoked."""
        return self.revoked_at is None


def hash_secret(secret: str) -> str:
    """The hex SHA-256 of a key's secret, as stored."""
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


def check_scope(scope: str) -> Scope:
    """``scope`` if it is one of :data:`SCOPES`; ``ValueError`` naming them otherwise."""
    for known in SCOPES:
        if scope == known:
            return known
    raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")


def scope_allows(scope: str, needed: Scope) -> bool:
    """Whether a key of ``scope`` may use an endpoint that needs ``needed``."""
    return scope == "all" or scope == needed


def new_api_key(
    *, name: str | None = None, scope: str = "all", created_at: str | None = None
) -> tuple[ApiKey, str]:
    """A fresh key and its secret. Store the key; show the secret once.

    Raises:
        ValueError: for an unknown scope or a name longer than 200 characters.
    """
    checked = check_scope(scope)
    if name is not None and len(name) > MAX_NAME_CHARS:
        raise ValueError(f"a key name has at most {MAX_NAME_CHARS} characters")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        id=secrets.token_hex(6),
        name=name or None,
        scope=checked,
        key_hash=hash_secret(secret),
        created_at=created_at or utc_now_iso(),
    )
    return key, secret
