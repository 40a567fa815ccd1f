"""The flat-dict fast path gives exactly what the full walk gives, secrets included."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitfab.codec import Redactor, encode_value
from bitfab.codec.walker import Encoder

plain = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.text(max_size=40),
    st.sampled_from(["sk-live-0123456789abcdef0123", "ghp_0123456789abcdefghij", "short"]),
)
names = st.one_of(
    st.text(min_size=1, max_size=12),
    st.sampled_from(["password", "api_key", "max_tokens", "Authorization", "user", "token"]),
)


def _walked(value: Any, redactor: Redactor) -> Any:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Encoder, "flat_dict", lambda self, v: None)
        return encode_value(value, redactor=redactor)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(names, plain, max_size=12))
def test_fast_path_equals_the_walk(value: dict[str, Any]) -> None:
    """Encoding a flat dict twice (the second time its keys are known) equals the full walk."""
    redactor = Redactor()
    first = encode_value(value, redactor=redactor)
    second = encode_value(value, redactor=redactor)
    walked = _walked(value, redactor)
    assert first == second == walked


def test_fast_path_is_taken_for_known_safe_keys() -> None:
    """Once its keys are known not to be secret, a flat dict is copied without the walk."""
    redactor = Redactor()
    value = {"user": "ann", "n": 3, "ok": True, "note": None}
    encode_value(value, redactor=redactor)
    encoder = Encoder(10_000, 32, 10_000, redactor)
    copied = encoder.flat_dict(value)
    assert copied == value and copied is not value


@pytest.mark.parametrize(
    "value",
    [
        {"user": "sk-live-0123456789abcdef0123"},
        {"user": 2**40},
        {"user": 1.5},
        {"user": ["a"]},
        {1: "a"},
    ],
)
def test_fast_path_declines_what_needs_the_walk(value: dict[Any, Any]) -> None:
    """Secret-looking values, big ints, floats, containers and non-str keys take the full walk."""
    redactor = Redactor()
    encode_value(value, redactor=redactor)
    assert Encoder(10_000, 32, 10_000, redactor).flat_dict(value) is None
