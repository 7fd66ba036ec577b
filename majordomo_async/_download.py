"""Downloading an image URL for a target that only takes inline image data."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from ._exceptions import ImageDownloadError
from ._messages import ImagePart

if TYPE_CHECKING:
    import aiohttp

    from ._context import HTTPSessionHolder

__all__ = [
    "ImageFetcher",
    "download_image",
    "safe_url",
    "session_fetcher",
    "sniff_image_type",
    "standalone_fetch",
]

ImageFetcher = Callable[[str, int, float], Awaitable[ImagePart]]
"""`fetch(url, max_bytes, time_limit)`: the image at `url` as an inline `ImagePart`.
Raises `ImageDownloadError` (with no provider or model: the chain adds the target's)."""

_CHUNK: Final = 64 * 1024
_MAX_REDIRECTS: Final = 5


def safe_url(url: str) -> str:
    """`url` without user info, query or fragment: signed URLs carry credentials there."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<malformed URL>"
    suffix = "?…" if parts.query else ""
    return f"{parts.scheme}://{host}{port}{parts.path}{suffix}"


def sniff_image_type(data: bytes) -> str | None:
    """The MIME type of `data` from its magic bytes, for the formats providers accept."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"heic", b"heix", b"heim", b"heis"):
            return "image/heic"
        if brand in (b"mif1", b"msf1", b"heif"):
            return "image/heif"
    return None


def session_fetcher(http: HTTPSessionHolder) -> ImageFetcher:
    """A fetcher that downloads with the Registry's shared session."""

    async def fetch(url: str, max_bytes: int, time_limit: float) -> ImagePart:
        return await download_image(url, http.get(), max_bytes=max_bytes, time_limit=time_limit)

    return fetch


async def standalone_fetch(url: str, max_bytes: int, time_limit: float) -> ImagePart:
    """A fetcher for chains built without a Registry: one short-lived session per download."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        return await download_image(url, session, max_bytes=max_bytes, time_limit=time_limit)


async def download_image(
    url: str, session: aiohttp.ClientSession, *, max_bytes: int, time_limit: float
) -> ImagePart:
    """GET `url` (http or https) and return its bytes as an inline `ImagePart`.

    At most `max_bytes` are read and the whole download takes at most `time_limit` seconds.
    The MIME type comes from Content-Type when it names an image, else from the magic
    bytes. Errors never show the URL's query string or user info.

    Raises:
        ImageDownloadError: bad scheme, HTTP error, too large, not an image, or a
            network failure or timeout.
    """
    import aiohttp

    shown = safe_url(url)
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        raise ImageDownloadError(f"cannot download {shown}: only http(s) image URLs are fetched")
    try:
        async with session.get(
            url,
            timeout=aiohttp.ClientTimeout(total=time_limit),
            max_redirects=_MAX_REDIRECTS,
            headers={"Accept": "image/*"},
        ) as response:
            if response.status >= 400:
                raise ImageDownloadError(
                    f"could not download the image at {shown}: HTTP {response.status}",
                    status=response.status,
                )
            declared = response.content_length
            if declared is not None and declared > max_bytes:
                raise _too_large(shown, max_bytes)
            data = bytearray()
            async for chunk in response.content.iter_chunked(_CHUNK):
                data += chunk
                if len(data) > max_bytes:
                    raise _too_large(shown, max_bytes)
            content_type = response.content_type.lower()
    except ImageDownloadError:
        raise
    except (TimeoutError, aiohttp.ClientError) as exc:
        # `from None`: aiohttp's messages and request info repeat the full URL.
        what = "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
        raise ImageDownloadError(f"could not download the image at {shown}: {what}") from None
    if not data:
        raise ImageDownloadError(f"the image at {shown} is empty")
    mime_type = sniff_image_type(bytes(data[:16]))
    if mime_type is None and content_type.startswith("image/"):
        mime_type = content_type
    if mime_type is None:
        raise ImageDownloadError(
            f"the URL {shown} did not return an image (Content-Type {content_type or 'none'})"
        )
    return ImagePart.from_bytes(bytes(data), mime_type)


def _too_large(shown: str, max_bytes: int) -> ImageDownloadError:
    return ImageDownloadError(
        f"the image at {shown} is larger than the download limit of {max_bytes} bytes "
        "(ChainConfig.image_download_max_bytes)"
    )
