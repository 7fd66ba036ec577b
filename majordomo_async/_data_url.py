"""`data:` URLs (RFC 2397) in image parts: one reading for every provider and the fitter.

`data:[<MIME type>][;<parameter>...][;base64],<data>`. With `;base64` (any case) the data
is base64 text, which may itself be percent-encoded; without it the data is the bytes,
percent-encoded. Providers that take inline images want base64 text, so both forms come
out as base64 here. Each caller turns `DataURLError` into its own error type.
"""

from __future__ import annotations

import base64
import binascii
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

__all__ = ["DataURL", "DataURLError", "is_data_url", "parse_data_url", "size_of_data_url"]


class DataURLError(ValueError):
    """A `data:` URL that cannot be read; the message completes "the image data: URL ..."."""


class DataURL(NamedTuple):
    """What a `data:` URL holds."""

    mime_type: str | None
    """The declared MIME type in lower case, or None when the URL names none."""
    base64: str
    """The bytes as standard base64 text."""


def is_data_url(url: str) -> bool:
    """Whether `url` is a `data:` URL (the scheme matches in any case)."""
    return url[:5].lower() == "data:"


def _split(url: str) -> tuple[str | None, bool, str]:
    """`(MIME type or None, whether the data is base64, the data as written)`."""
    header, comma, payload = url[5:].partition(",")
    if not comma:
        raise DataURLError("has no ',' before its data")
    fields = header.split(";")
    mime_type = fields[0].strip().lower() or None
    is_base64 = any(field.strip().lower() == "base64" for field in fields[1:])
    return mime_type, is_base64, payload


def parse_data_url(url: str) -> DataURL:
    """The MIME type and the base64 text of a `data:` URL.

    Raises:
        DataURLError: there is no ',' before the data, or the URL says base64 and its data
            is not valid base64.
    """
    mime_type, is_base64, payload = _split(url)
    data = unquote_to_bytes(payload)
    if not is_base64:
        return DataURL(mime_type, base64.b64encode(data).decode("ascii"))
    # Excess padding ("QUJD=") is dropped rather than judged: Python 3.13's strict
    # decoder rejects it where 3.11 and 3.12 accepted it, and no provider needs it.
    # Missing padding stays an error, on every version.
    core = data.rstrip(b"=")
    needed = -len(core) % 4
    if len(data) - len(core) < needed:
        raise DataURLError("says base64 but its data is not valid base64 (padding is missing)")
    canonical = core + b"=" * needed
    try:
        base64.b64decode(canonical, validate=True)
    except (binascii.Error, ValueError):
        raise DataURLError("says base64 but its data is not valid base64") from None
    return DataURL(mime_type, canonical.decode("ascii"))  # validated: plain base64 text


def size_of_data_url(url: str) -> tuple[str | None, int]:
    """The MIME type and the size in bytes of a `data:` URL's data, without decoding it
    (for size limits: an image of many megabytes is not decoded just to be measured).

    Raises:
        DataURLError: there is no ',' before the data.
    """
    mime_type, is_base64, payload = _split(url)
    if is_base64:
        payload = payload.strip()
        padding = len(payload) - len(payload.rstrip("="))
        return mime_type, max(len(payload) * 3 // 4 - padding, 0)
    return mime_type, len(unquote_to_bytes(payload))
