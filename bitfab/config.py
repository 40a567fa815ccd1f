"""Configuration: values given in code win over environment variables, which win over defaults.

A bad value in code raises :class:`~bitfab.exceptions.ConfigError` at once (the developer is
there to see it). A bad value in the environment logs one warning and keeps the default: a typo
in a deployment must never crash the app being traced.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bitfab._internal import logger
from bitfab.exceptions import ConfigError

__all__ = ["Config", "display_url", "insecure_url_problem", "resolve_config"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Config:
    """Resolved settings of one :class:`~bitfab.Bitfab` instance."""

    enabled: bool = True
    db: str | None = None
    """The embedded store: a SQLite path, a ``sqlite:///`` or a ``postgresql://`` URL; ``None``
    means ``.bitfab/bitfab.db`` under the cwd."""
    url: str | None = None
    """Root URL of a bitfab server: spans go there and replay runs against it (remote mode)."""
    api_key: str | None = field(default=None, repr=False)
    allow_insecure_http: bool = False
    """Allow plain ``http://`` to a host other than this machine (the key travels in clear)."""
    max_queue_size: int = 50_000
    max_batch_size: int = 512
    schedule_delay: float = 0.5
    export_timeout: float = 30.0
    shutdown_timeout: float = 2.0
    max_field_bytes: int = 256 * 1024
    max_span_bytes: int = 1024 * 1024
    max_generator_items: int = 1000
    propagate_threads: bool = True
    redact: tuple[str, ...] = ()

    def db_path(self) -> str:
        if self.db:
            return self.db
        return os.path.join(os.getcwd(), ".bitfab", "bitfab.db")


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}")


def _positive_int(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a positive integer")
    number = int(str(value).strip()) if isinstance(value, str) else value
    if not isinstance(number, int) or number <= 0:
        raise ValueError("expected a positive integer")
    return number


def _positive_float(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a positive number")
    number = float(value.strip()) if isinstance(value, str) else value
    if not isinstance(number, (int, float)) or not number > 0 or number != number:
        raise ValueError("expected a positive number")
    return float(number)


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _parse_bool(value)
    raise ValueError("expected true or false")


def _opt_str(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value.strip() or None


def _url(value: object) -> str | None:
    text = _opt_str(value)
    if text is None:
        return None
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    parts.port  # noqa: B018 - raises ValueError for a port out of range
    if parts.query or parts.fragment:
        raise ValueError("expected the server's root URL, without a query or fragment")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials don't go in the URL: pass the key as api_key")
    return text.rstrip("/")


def _api_key(value: object) -> str | None:
    text = _opt_str(value)
    if text is not None and not all(33 <= ord(char) <= 126 for char in text):
        # It goes into an HTTP header: printable ASCII only (the message never shows the key).
        raise ValueError("expected printable ASCII without spaces")
    return text


def display_url(url: str) -> str:
    """``url`` without any ``user:password@`` part, for messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return parts._replace(netloc=netloc).geturl()


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def insecure_url_problem(url: str, *, allow_insecure_http: bool) -> str | None:
    """Why ``url`` must not be used (plain http to another machine), or None when it is fine."""
    parts = urlsplit(url)
    if parts.scheme != "http" or allow_insecure_http or _is_loopback(parts.hostname or ""):
        return None
    return (
        f"refusing to send the API key in clear text to {display_url(url)}: use https://, "
        "or allow it with allow_insecure_http=True / BITFAB_ALLOW_INSECURE_HTTP=1"
    )


def _names(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, Iterable):
        names = tuple(value)
        if all(isinstance(name, str) for name in names):
            return names
    raise ValueError("expected a list of names")


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "enabled": _bool,
    "db": _opt_str,
    "url": _url,
    "api_key": _api_key,
    "allow_insecure_http": _bool,
    "max_queue_size": _positive_int,
    "max_batch_size": _positive_int,
    "schedule_delay": _positive_float,
    "export_timeout": _positive_float,
    "shutdown_timeout": _positive_float,
    "max_field_bytes": _positive_int,
    "max_span_bytes": _positive_int,
    "max_generator_items": _positive_int,
    "propagate_threads": _bool,
    "redact": _names,
}

ENV_NAMES: dict[str, str] = {name: f"BITFAB_{name.upper()}" for name in _PARSERS}


def resolve_config(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    base: Config | None = None,
) -> Config:
    """Build a :class:`Config` from ``base`` (or the defaults), the environment, then ``overrides``."""
    values: dict[str, Any] = dataclasses.asdict(base or Config())
    env = os.environ if environ is None else environ
    if base is None:
        for name, env_name in ENV_NAMES.items():
            raw = env.get(env_name)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[name] = _PARSERS[name](raw)
            except (ValueError, TypeError) as exc:
                logger.warning(
                    "bitfab: ignoring %s=%s (%s); using the default %r",
                    env_name,
                    _shown(name, raw),
                    exc,
                    values[name],
                )
    for name, value in (overrides or {}).items():
        if name not in _PARSERS:
            known = ", ".join(sorted(_PARSERS))
            raise ConfigError(f"unknown setting {name!r}; known settings: {known}")
        try:
            values[name] = _PARSERS[name](value)
        except (ValueError, TypeError) as exc:
            shown = _shown(name, value)
            raise ConfigError(f"invalid value for {name}: {shown} ({exc})") from None
    if values["max_batch_size"] > values["max_queue_size"]:
        values["max_batch_size"] = values["max_queue_size"]
    if values["url"] is not None:
        _check_url(values, url_in_code="url" in (overrides or {}))
    return Config(**values)


def _shown(name: str, value: object) -> str:
    """A setting's value for an error message: never the key, nor a password in a URL."""
    if name == "api_key":
        return "***"
    if name == "url" and isinstance(value, str):
        try:
            return repr(display_url(value.strip()))
        except ValueError:
            return "***"
    return repr(value)


def _check_url(values: dict[str, Any], *, url_in_code: bool) -> None:
    # The operator's opt-in in the environment also covers a URL given in code: the fail-fast
    # check in Bitfab() and configure() resolves the code's values without the environment.
    allowed = values["allow_insecure_http"] or _env_flag("BITFAB_ALLOW_INSECURE_HTTP")
    problem = insecure_url_problem(values["url"], allow_insecure_http=allowed)
    if problem is None:
        return
    if url_in_code:
        raise ConfigError(problem)
    logger.warning("bitfab: %s; recording is disabled", problem)
    values["enabled"] = False


def _env_flag(name: str) -> bool:
    try:
        return _parse_bool(os.environ.get(name) or "false")
    except ValueError:
        return False
