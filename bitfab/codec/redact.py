"""Redaction of secrets before a value leaves the process.

A value is redacted when the name it sits under (a dict key, a field, an argument name) looks
secret, or, with ``value_patterns``, when the string itself looks like a credential: a known
key prefix (``sk-``, ``ghp_``, ``AKIA`` ...), a JWT, or the value of an environment variable
whose name looks secret. Verdicts on names are cached, so the check on the hot path is a dict
lookup; the value check is one ``startswith`` with a tuple and one set lookup.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

__all__ = ["DEFAULT_REDACTOR", "REDACTED", "Redactor", "split_words"]

REDACTED = "[REDACTED]"

# Whole words (or adjacent words joined) that make a name secret.
_SECRET_PHRASES = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "apikey",
        "authorization",
        "auth",
        "cookie",
        "credential",
        "credentials",
        "privatekey",
        "sessionid",
        "session",
        "bearer",
        "accesskey",
        "secretkey",
        "clientsecret",
    }
)

# Credential prefixes; "eyJ" (a JWT header) is confirmed by the dot count in is_secret_value.
_SECRET_PREFIXES = (
    "sk-",
    "sk_live_",
    "sk_test_",
    "rk_live_",
    "pk_live_",
    "ghp_",
    "gho_",
    "ghs_",
    "github_pat_",
    "xoxb-",
    "xoxp-",
    "AKIA",
    "AIza",
    "glpat-",
    "eyJ",
)
_PREFIX_FIRST_CHARS = frozenset(prefix[0] for prefix in _SECRET_PREFIXES)
_MIN_PATTERN_LEN = 16
# Environment values shorter than this are too common ("true", "1", "dev") to be taken as secrets.
_MIN_ENV_SECRET_LEN = 8
# Secret-looking names whose values are not secrets.
_ENV_NAME_EXCEPTIONS = frozenset({"PWD", "OLDPWD", "SSH_AUTH_SOCK"})
_MAX_JWT_LEN = 65_536
_NAME_CACHE_MAX = 4096
_SEPARATORS = frozenset("_-. /:")

_env_secret_values: frozenset[str] | None = None
_env_secret_max_len = 0


def split_words(name: str) -> list[str]:
    """Split a name into lowercase words on ``_ - . / :``, spaces and camelCase boundaries.

    ``"OPENAI_API_KEY"`` -> ``["openai", "api", "key"]``, ``"XMLHttpRequest"`` ->
    ``["xml", "http", "request"]``, ``"accessToken"`` -> ``["access", "token"]``.
    """
    words: list[str] = []
    current: list[str] = []
    n = len(name)
    for i, ch in enumerate(name):
        if ch in _SEPARATORS:
            if current:
                words.append("".join(current))
                current = []
            continue
        if ch.isupper() and current:
            prev = name[i - 1]
            next_is_lower = i + 1 < n and name[i + 1].islower()
            if prev.islower() or prev.isdigit() or (prev.isupper() and next_is_lower):
                words.append("".join(current))
                current = []
        current.append(ch)
    if current:
        words.append("".join(current))
    return [w.lower() for w in words]


def _phrases_of(words: Sequence[str], longest: int) -> Iterable[str]:
    count = len(words)
    for start in range(count):
        for stop in range(start + 1, min(count, start + longest) + 1):
            yield "".join(words[start:stop])


def env_secret_values() -> frozenset[str]:
    """Values of environment variables with secret-looking names, computed once per process."""
    global _env_secret_values, _env_secret_max_len
    values = _env_secret_values
    if values is None:
        probe = Redactor(value_patterns=False)
        found = {
            value
            for key, value in os.environ.items()
            if len(value) >= _MIN_ENV_SECRET_LEN
            and key not in _ENV_NAME_EXCEPTIONS
            and probe.name_is_secret(key)
        }
        values = frozenset(found)
        _env_secret_max_len = max((len(v) for v in values), default=0)
        _env_secret_values = values
    return values


def _reset_env_secret_values() -> None:
    """Forget the cached environment secrets (tests change the environment)."""
    global _env_secret_values, _env_secret_max_len
    _env_secret_values = None
    _env_secret_max_len = 0


def is_secret_value(text: str) -> bool:
    """Whether a string looks like a credential by itself (prefix, JWT, or a secret env value)."""
    n = len(text)
    if (
        n >= _MIN_PATTERN_LEN
        and text[0] in _PREFIX_FIRST_CHARS
        and text.startswith(_SECRET_PREFIXES)
    ):
        if not text.startswith("eyJ"):
            return True
        if n <= _MAX_JWT_LEN and text.count(".") == 2:
            return True
    if n >= _MIN_ENV_SECRET_LEN:
        values = env_secret_values()
        if n <= _env_secret_max_len and text in values:
            return True
    return False


class Redactor:
    """Decides which names and values are secrets.

    Example::

        redactor = Redactor(extra_names=["ssn", "card_number"])
        redactor.name_is_secret("X-Api-Key")    # True
        redactor.name_is_secret("max_tokens")   # False

    Args:
        extra_names: more secret names, matched like the built-in ones: a name is secret when
            some run of its words, joined, equals one of them (``card_number`` matches
            ``cardNumber`` and ``CARD-NUMBER``).
        value_patterns: also redact strings that look like credentials by themselves.
    """

    __slots__ = (
        "_longest",
        "_name_cache",
        "_phrases",
        "_safe_key_names",
        "_safe_names",
        "value_patterns",
    )

    def __init__(self, extra_names: Iterable[str] = (), *, value_patterns: bool = True) -> None:
        phrases = set(_SECRET_PHRASES)
        longest = 2
        for extra in extra_names:
            words = split_words(extra)
            if words:
                phrases.add("".join(words))
                longest = max(longest, len(words))
        self._phrases = frozenset(phrases)
        self._longest = longest
        self._name_cache: dict[str, bool] = {}
        # Tuples of argument names none of which is secret: the fast path's one set lookup.
        self._safe_names: set[tuple[str, ...]] = set()
        # Single names found not secret: a dict whose keys are all here skips the per-key check.
        self._safe_key_names: set[str] = set()
        self.value_patterns = value_patterns

    def __repr__(self) -> str:
        return f"Redactor(value_patterns={self.value_patterns})"

    def name_is_secret(self, name: str) -> bool:
        """Whether a key, field or argument name looks like it holds a secret."""
        if type(name) is not str:
            return False
        verdict = self._name_cache.get(name)
        if verdict is None:
            phrases = self._phrases
            verdict = any(
                phrase in phrases for phrase in _phrases_of(split_words(name), self._longest)
            )
            cache = self._name_cache
            if len(cache) >= _NAME_CACHE_MAX:
                cache.clear()
                self._safe_key_names.clear()
            cache[name] = verdict
            if not verdict:
                self._safe_key_names.add(name)
        return verdict

    def any_name_is_secret(self, names: Sequence[str]) -> bool:
        """Whether any of several names is secret (a tuple found safe is remembered)."""
        if type(names) is tuple and names in self._safe_names:
            return False
        verdict = any(self.name_is_secret(name) for name in names)
        if not verdict and type(names) is tuple:
            safe = self._safe_names
            if len(safe) >= _NAME_CACHE_MAX:
                safe.clear()
            safe.add(names)
        return verdict

    def value_is_secret(self, text: str) -> bool:
        """Whether a string looks like a credential (only when ``value_patterns`` is on)."""
        return self.value_patterns and is_secret_value(text)


DEFAULT_REDACTOR = Redactor()
