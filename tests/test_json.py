"""The lean JSON decoder agrees with `json.loads` on every input: value or error."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from majordomo_async import _json as fast_json

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
WHITESPACE = st.text(alphabet=" \t\r\n", max_size=3)


def outcome(decode: Any, data: Any) -> tuple[str, Any]:
    """What decoding `data` gives: ("value", v) or ("error", type, message)."""
    try:
        value = decode(data)
    except (ValueError, RecursionError) as exc:
        return ("error", (type(exc), str(exc)))
    return ("value", json.dumps(value, sort_keys=True))  # NaN-safe, order-insensitive


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES, before=WHITESPACE, after=WHITESPACE)
def test_documents_decode_as_the_stdlib_decodes_them(value: Any, before: str, after: str) -> None:
    text = before + json.dumps(value) + after
    assert outcome(fast_json.loads, text) == outcome(json.loads, text)
    data = text.encode()
    assert outcome(fast_json.loads_bytes, data) == outcome(json.loads, data)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=40))
def test_arbitrary_text_gives_the_same_value_or_error(text: str) -> None:
    assert outcome(fast_json.loads, text) == outcome(json.loads, text)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=40))
def test_arbitrary_bytes_give_the_same_value_or_error(data: bytes) -> None:
    assert outcome(fast_json.loads_bytes, data) == outcome(json.loads, data)


@pytest.mark.parametrize(
    "data",
    [
        b'\xef\xbb\xbf{"a": 1}',  # UTF-8 BOM: json.loads(bytes) accepts it
        '{"a": 1}'.encode("utf-16"),
        b'{"a": "\\ud800"}',  # a lone surrogate, escaped
        b'{"a": 1} x',  # trailing garbage
        b'{"a": NaN}',
        b"",
    ],
)
def test_encodings_and_edge_cases_match(data: bytes) -> None:
    assert outcome(fast_json.loads_bytes, data) == outcome(json.loads, data)


def test_nan_and_infinity_are_accepted_as_json_loads_accepts_them() -> None:
    assert math.isnan(fast_json.loads("NaN"))
    assert fast_json.loads("-Infinity") == -math.inf


def test_absurd_nesting_raises_recursion_error_like_the_stdlib() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(RecursionError):
        json.loads(deep)
    with pytest.raises(RecursionError):
        fast_json.loads(deep)
