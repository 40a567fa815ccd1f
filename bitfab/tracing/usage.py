"""LLM usage read off return values by duck typing, so no provider SDK becomes a dependency.

A value "looks like" an LLM response when it has both a ``model`` and a ``usage`` (attribute or
mapping key). The usage fields understood are OpenAI's chat (``prompt_tokens``,
``completion_tokens``, ``prompt_tokens_details.cached_tokens``), OpenAI's responses
(``input_tokens``, ``output_tokens``, ``input_tokens_details``), and Anthropic's
(``input_tokens``, ``output_tokens``, ``cache_read_input_tokens``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["usage_from_response"]

_SKIP = (type(None), bool, int, float, str, bytes, list, tuple, set, frozenset)


def _get(obj: Any, name: str) -> Any:
    try:
        if isinstance(obj, Mapping):
            return obj.get(name)
        return getattr(obj, name, None)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # the user's object misbehaving is not bitfab's error
        return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def usage_from_response(value: Any) -> dict[str, Any] | None:
    """The usage record of an OpenAI- or Anthropic-shaped response, or ``None``."""
    if isinstance(value, _SKIP):
        return None
    model = _get(value, "model")
    usage = _get(value, "usage")
    if not isinstance(model, str) or usage is None:
        return None
    record: dict[str, Any] = {"model": model}
    input_tokens = _int(_get(usage, "prompt_tokens"))
    if input_tokens is None:
        input_tokens = _int(_get(usage, "input_tokens"))
    output_tokens = _int(_get(usage, "completion_tokens"))
    if output_tokens is None:
        output_tokens = _int(_get(usage, "output_tokens"))
    cached = _int(_get(usage, "cache_read_input_tokens"))
    if cached is None:
        for details_name in ("prompt_tokens_details", "input_tokens_details"):
            details = _get(usage, details_name)
            if details is not None:
                cached = _int(_get(details, "cached_tokens"))
                if cached is not None:
                    break
    reasoning = None
    for details_name in ("completion_tokens_details", "output_tokens_details"):
        details = _get(usage, details_name)
        if details is not None:
            reasoning = _int(_get(details, "reasoning_tokens"))
            if reasoning is not None:
                break
    if input_tokens is not None:
        record["inputTokens"] = input_tokens
    if output_tokens is not None:
        record["outputTokens"] = output_tokens
    if cached is not None:
        record["cachedInputTokens"] = cached
    if reasoning is not None:
        record["reasoningTokens"] = reasoning
    if input_tokens is None and output_tokens is None:
        return None
    provider = "anthropic" if _get(value, "stop_reason") is not None else None
    if provider is None and (_get(value, "choices") is not None or _get(value, "object")):
        provider = "openai"
    if provider is not None:
        record["provider"] = provider
    return record
