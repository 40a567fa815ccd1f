"""Reading one field of a body or a query string, with a 422 that names the field.

Each function returns the value in the expected type or the default when the field is absent,
and raises :class:`~bitfab.server.errors.ApiError` (422, with the field's path) otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from bitfab.server.body import type_name
from bitfab.server.errors import ApiError, FieldError

__all__ = [
    "body_bool",
    "body_int",
    "body_object",
    "body_str",
    "body_str_list",
    "query_bool",
    "query_int",
    "query_str",
]

_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")
INT64_MAX = 2**63 - 1


def _invalid(path: str, message: str) -> ApiError:
    return ApiError.invalid(FieldError(path, message))


def body_str(
    body: Mapping[str, Any], name: str, *, max_chars: int, required: bool = False
) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise _invalid(f"body.{name}", "is required")
        return None
    if not isinstance(value, str) or (required and not value):
        raise _invalid(f"body.{name}", f"must be a non-empty string, got {type_name(value)}")
    if len(value) > max_chars:
        raise _invalid(f"body.{name}", f"is longer than {max_chars} characters")
    return value


def body_int(body: Mapping[str, Any], name: str, *, minimum: int, maximum: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"body.{name}", f"must be an integer, got {type_name(value)}")
    if not minimum <= value <= maximum:
        raise _invalid(f"body.{name}", f"must be between {minimum} and {maximum}")
    return value


def body_bool(body: Mapping[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _invalid(f"body.{name}", f"must be a boolean, got {type_name(value)}")
    return value


def body_object(body: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid(f"body.{name}", f"must be an object, got {type_name(value)}")
    return value


def body_str_list(
    body: Mapping[str, Any], name: str, *, max_items: int, max_chars: int
) -> list[str] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list):
        raise _invalid(f"body.{name}", f"must be an array of strings, got {type_name(value)}")
    if len(value) > max_items:
        raise _invalid(f"body.{name}", f"has more than {max_items} items")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item or len(item) > max_chars:
            raise _invalid(
                f"body.{name}[{index}]", f"must be a non-empty string of at most {max_chars} chars"
            )
    return value


def query_str(request: Request, name: str, *, max_chars: int) -> str | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    if len(value) > max_chars:
        raise _invalid(f"query.{name}", f"is longer than {max_chars} characters")
    return value


def query_bool(request: Request, name: str, default: bool) -> bool:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise _invalid(f"query.{name}", "must be true or false")


def query_int(
    request: Request, name: str, *, default: int | None, minimum: int, maximum: int
) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    text = value.strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isascii() or not digits.isdigit() or len(digits) > 19:
        raise _invalid(f"query.{name}", "must be an integer")
    number = int(text)
    if not minimum <= number <= maximum:
        raise _invalid(f"query.{name}", f"must be between {minimum} and {maximum}")
    return number
