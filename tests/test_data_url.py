"""`data:` URLs (RFC 2397) as every provider and the request fitter read them."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from majordomo_async._data_url import (
    DataURL,
    DataURLError,
    is_data_url,
    parse_data_url,
    size_of_data_url,
)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))
ENCODED = base64.b64encode(PNG).decode()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"data:image/png;base64,{ENCODED}", DataURL("image/png", ENCODED)),
        (f"data:Image/PNG;BASE64,{ENCODED}", DataURL("image/png", ENCODED)),
        (f"data:image/png;name=x.png;base64,{ENCODED}", DataURL("image/png", ENCODED)),
        (f"data:;base64,{ENCODED}", DataURL(None, ENCODED)),
        ("data:image/gif,%47%49%46", DataURL("image/gif", base64.b64encode(b"GIF").decode())),
        ("data:,", DataURL(None, "")),
        # Percent-escapes inside base64 data are legal too (`=` written as %3D).
        ("data:image/png;base64,QUI%3D", DataURL("image/png", "QUI=")),
        # Excess padding is dropped, on every Python (3.13's decoder rejects it).
        ("data:image/png;base64,QUJD%3D", DataURL("image/png", "QUJD")),
        ("data:image/png;base64,QUI===", DataURL("image/png", "QUI=")),
    ],
)
def test_both_forms_come_out_as_base64(url: str, expected: DataURL) -> None:
    assert parse_data_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("data:image/png", "no ','"),
        ("data:image/png;base64,@@@", "not valid base64"),
        ("data:image/png;base64,QUJ", "not valid base64"),  # bad padding
    ],
)
def test_unreadable_urls_raise_data_url_error(url: str, message: str) -> None:
    with pytest.raises(DataURLError, match=message):
        parse_data_url(url)


@given(data=st.binary(max_size=300), mime=st.sampled_from(["image/png", "image/jpeg", ""]))
def test_size_without_decoding_matches_the_decoded_size(data: bytes, mime: str) -> None:
    """The fitter's cheap measure agrees with decoding, for both forms."""
    as_base64 = f"data:{mime};base64,{base64.b64encode(data).decode()}"
    as_bytes = f"data:{mime}," + "".join(f"%{byte:02X}" for byte in data)
    for url in (as_base64, as_bytes):
        mime_type, size = size_of_data_url(url)
        assert size == len(data) == len(base64.b64decode(parse_data_url(url).base64))
        assert mime_type == (mime or None)


def test_the_scheme_matches_in_any_case() -> None:
    assert is_data_url("data:,x") and is_data_url("DATA:,x")
    assert not is_data_url("https://example.test/data:,x")
