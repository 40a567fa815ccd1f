"""Redaction of secrets before anything leaves the process (RELIABILITY.md C13)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

from bitfab.codec import (
    DEFAULT_REDACTOR,
    Encoded,
    Redactor,
    decode_value,
    encode_call,
    encode_value,
)
from bitfab.codec.redact import _reset_env_secret_values, split_words
from bitfab.exceptions import ReplayDecodeError

REDACTED_NODE = [["custom", "bitfab:redacted"]]
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"


@pytest.fixture(autouse=True)
def fresh_env_secrets() -> Iterator[None]:
    _reset_env_secret_values()
    yield
    _reset_env_secret_values()


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "api_key",
        "apiKey",
        "APIKey",
        "apikey",
        "X-Api-Key",
        "OPENAI_API_KEY",
        "Authorization",
        "set-cookie",
        "Cookie",
        "accessToken",
        "access_key",
        "clientSecret",
        "client_secret",
        "private_key",
        "privateKey",
        "sessionid",
        "session_id",
        "sessionId",
        "bearer",
        "credentials",
        "auth",
        "db.password",
        "user password",
        "token_count",
        "AWS_SECRET_ACCESS_KEY",
    ],
)
def test_secret_names_are_recognised(name: str) -> None:
    """Names with a secret word, or two words joining into one, are secret."""
    assert DEFAULT_REDACTOR.name_is_secret(name)


@pytest.mark.parametrize(
    "name",
    [
        "max_tokens",
        "input_tokens",
        "outputTokens",
        "tokens",
        "tokenizer",
        "author",
        "authority",
        "key",
        "keys",
        "name",
        "passage",
        "secretary",
        "sessions",
        "api",
        "monkey",
        "",
    ],
)
def test_ordinary_names_are_not_secret(name: str) -> None:
    """Names that merely contain a secret word's letters, or its plural, are not secret."""
    assert not DEFAULT_REDACTOR.name_is_secret(name)


def test_names_split_into_words() -> None:
    """Names split on separators and camelCase boundaries, acronyms kept together."""
    assert [
        split_words(name)
        for name in ["OPENAI_API_KEY", "XMLHttpRequest", "accessToken", "x-api.key now", "a1B"]
    ] == [
        ["openai", "api", "key"],
        ["xml", "http", "request"],
        ["access", "token"],
        ["x", "api", "key", "now"],
        ["a1", "b"],
    ]


def test_arguments_are_redacted_by_parameter_and_keyword_name() -> None:
    """A secret passed positionally or by keyword is redacted by its name; others stay."""
    encoded = encode_call(
        ("bob", "hunter2"),
        {"api_key": "k-123", "max_tokens": 5},
        param_names=("user", "password"),
        redactor=DEFAULT_REDACTOR,
    )
    assert encoded._replace(size=0) == Encoded(
        ["bob", "[REDACTED]", {"api_key": "[REDACTED]", "max_tokens": 5}],
        {
            "v": 1,
            "kwarg_names": ["api_key", "max_tokens"],
            "values": {"1": REDACTED_NODE, "2.api_key": REDACTED_NODE},
        },
        ("redacted at $[1]", "redacted at $[2].api_key"),
        0,
    )


def test_scalar_fast_path_still_redacts() -> None:
    """Plain scalar arguments under a secret parameter name are redacted too."""
    encoded = encode_call(("hunter2", 3), {}, param_names=("pwd", "n"), redactor=DEFAULT_REDACTOR)
    assert encoded._replace(size=0) == Encoded(
        ["[REDACTED]", 3], {"v": 1, "values": {"0": REDACTED_NODE}}, ("redacted at $[0]",), 0
    )


def test_nested_headers_are_redacted() -> None:
    """Secret keys are redacted at any depth, including in dicts with non-str keys."""
    value = {
        "request": {
            "headers": {"Authorization": "Bearer abc", "X-Api-Key": "abc", "Accept": "json"},
            "mixed": {1: "one", "password": "p"},
        }
    }
    encoded = encode_value(value, redactor=DEFAULT_REDACTOR)
    assert encoded.value == {
        "request": {
            "headers": {"Authorization": "[REDACTED]", "X-Api-Key": "[REDACTED]", "Accept": "json"},
            "mixed": [[1, "one"], ["password", "[REDACTED]"]],
        }
    }
    assert encoded.problems == (
        "redacted at $.request.headers.Authorization",
        'redacted at $.request.headers["X-Api-Key"]',
        "redacted at $.request.mixed[1][1]",
    )


@pytest.mark.parametrize(
    "text",
    [
        "sk-proj-abcdefghijklmnopqrstuvwxyz",
        "sk_live_0123456789abcdef",
        "ghp_0123456789abcdefghij",
        "github_pat_11ABCDEFG0123456789",
        "xoxb-1234-5678-abcdefgh",
        "AKIAIOSFODNN7EXAMPLE",
        "AIzaSyA-0123456789abcdef",
        "glpat-0123456789abcdef",
        JWT,
    ],
)
def test_credential_shaped_strings_are_redacted(text: str) -> None:
    """Strings with a known credential prefix, or shaped like a JWT, are redacted anywhere."""
    encoded = encode_value({"note": text, "list": [text]}, redactor=DEFAULT_REDACTOR)
    assert encoded.value == {"note": "[REDACTED]", "list": ["[REDACTED]"]}
    assert encode_call((text,), {}, redactor=DEFAULT_REDACTOR).value == ["[REDACTED]"]


@pytest.mark.parametrize(
    "text",
    ["sk-short", "eyJ-not-a-jwt-at-all-really", "eyJa.b.c.d-too-many-dots", "skeleton key text"],
)
def test_ordinary_strings_are_kept(text: str) -> None:
    """Short prefixed strings and 'eyJ' strings without a JWT's shape are not redacted."""
    assert encode_value([text], redactor=DEFAULT_REDACTOR).value == [text]


def test_environment_secret_values_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The value of an environment variable with a secret name is redacted wherever it appears."""
    monkeypatch.setenv("MY_SERVICE_TOKEN", "s3cr3t-value-123")
    monkeypatch.setenv("MY_GREETING", "hello-world-123")
    value = {"a": "s3cr3t-value-123", "b": ["hello-world-123", "s3cr3t-value-123"]}
    encoded = encode_value(value, redactor=DEFAULT_REDACTOR)
    assert encoded.value == {"a": "[REDACTED]", "b": ["hello-world-123", "[REDACTED]"]}
    call = encode_call(("s3cr3t-value-123",), {}, redactor=DEFAULT_REDACTOR)
    assert call.value == ["[REDACTED]"]


def test_value_patterns_can_be_turned_off() -> None:
    """With value_patterns=False only names are checked."""
    redactor = Redactor(value_patterns=False)
    encoded = encode_value({"note": JWT, "token": "t"}, redactor=redactor)
    assert encoded.value == {"note": JWT, "token": "[REDACTED]"}


def test_without_a_redactor_nothing_is_redacted() -> None:
    """Redaction is opt-in per call: no redactor, no redaction."""
    value = {"password": "p", "note": JWT}
    assert encode_value(value) == Encoded(value, None, (), encode_value(value).size)


def test_fields_of_user_classes_are_redacted_by_name() -> None:
    """Dataclass and namedtuple fields with secret names are redacted like dict keys."""

    @dataclasses.dataclass
    class Login:
        user: str
        password: str

    class Creds(NamedTuple):
        user: str
        api_key: str

    encoded = encode_value([Login("bob", "p"), Creds("bob", "k")], redactor=DEFAULT_REDACTOR)
    assert encoded.value == [{"user": "bob", "password": "[REDACTED]"}, ["bob", "[REDACTED]"]]
    assert encoded.problems == ("redacted at $[0].password", "redacted at $[1][1]")


def test_extra_names_extend_the_list() -> None:
    """Extra names match like built-in ones, whatever their spelling."""
    redactor = Redactor(extra_names=["ssn", "card_number"])
    assert [
        redactor.name_is_secret(name) for name in ["user_ssn", "cardNumber", "CARD-NUMBER", "card"]
    ] == [True, True, True, False]


def test_redacted_values_are_not_replayable() -> None:
    """A redacted value cannot be decoded back into anything."""
    encoded = encode_call((), {"password": "p"}, redactor=DEFAULT_REDACTOR)
    with pytest.raises(ReplayDecodeError) as caught:
        decode_value(encoded.value, encoded.meta)
    assert caught.value.path == "$[0].password"
    assert "bitfab:redacted" in caught.value.reason


def test_name_cache_is_bounded() -> None:
    """The verdict cache is cleared before it grows past its bound."""
    redactor = Redactor()
    for i in range(10_000):
        redactor.name_is_secret(f"field_{i}")
    cache: Any = redactor._name_cache
    assert 0 < len(cache) <= 4096
