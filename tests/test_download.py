"""Downloading image URLs for inline-only targets, against a real local server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from majordomo_async import ImageDownloadError, ImagePart, Message, Registry, Request
from majordomo_async._download import download_image, safe_url, sniff_image_type, standalone_fetch
from tests.helpers.scripted import ScriptedModel
from tests.helpers.servers import acquired_connections, serve, sleep_forever

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
JPEG = b"\xff\xd8\xff\xe0" + bytes(32)


async def png(_: web.Request) -> web.Response:
    return web.Response(body=PNG, content_type="image/png")


async def mislabelled_png(_: web.Request) -> web.Response:
    return web.Response(body=PNG, content_type="application/octet-stream")


async def labelled_only(_: web.Request) -> web.Response:
    return web.Response(body=b"RIFF....AVIF-ish", content_type="image/avif")


async def html(_: web.Request) -> web.Response:
    return web.Response(text="<html>login</html>", content_type="text/html")


async def missing(_: web.Request) -> web.Response:
    return web.Response(status=404, text="nope")


async def huge_declared(_: web.Request) -> web.Response:
    return web.Response(body=PNG * 100, content_type="image/png")


async def huge_chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "image/png"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    for _ in range(100):
        await response.write(PNG)
    await response.write_eof()
    return response


async def stalls(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "image/png"})
    await response.prepare(request)
    await response.write(PNG[:8])
    await sleep_forever()
    return response


async def redirect(_: web.Request) -> web.Response:
    raise web.HTTPFound("/png")


async def empty(_: web.Request) -> web.Response:
    return web.Response(body=b"", content_type="image/png")


ROUTES = {
    "/png": png,
    "/mislabelled": mislabelled_png,
    "/labelled": labelled_only,
    "/html": html,
    "/missing": missing,
    "/huge": huge_declared,
    "/huge-chunked": huge_chunked,
    "/stalls": stalls,
    "/redirect": redirect,
    "/empty": empty,
}


@pytest.fixture
async def base() -> AsyncIterator[str]:
    async with serve(ROUTES) as url:
        yield url


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
        assert acquired_connections(session) == 0


async def fetch(session: aiohttp.ClientSession, url: str, max_bytes: int = 10_000) -> ImagePart:
    return await download_image(url, session, max_bytes=max_bytes, time_limit=5.0)


@pytest.mark.parametrize(
    ("path", "mime_type"),
    [("/png", "image/png"), ("/mislabelled", "image/png"), ("/labelled", "image/avif")],
)
async def test_download_types_the_image(
    base: str, session: aiohttp.ClientSession, path: str, mime_type: str
) -> None:
    image = await fetch(session, base + path)
    assert image.mime_type == mime_type
    assert image.data is not None and len(image.data) > 8


async def test_redirect_is_followed(base: str, session: aiohttp.ClientSession) -> None:
    assert (await fetch(session, base + "/redirect")).data == PNG


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ("/html", "did not return an image \\(Content-Type text/html\\)"),
        ("/missing", "HTTP 404"),
        ("/huge", "larger than the download limit of 1000 bytes"),
        ("/huge-chunked", "larger than the download limit"),
        ("/empty", "is empty"),
    ],
)
async def test_download_failures_are_typed(
    base: str, session: aiohttp.ClientSession, path: str, match: str
) -> None:
    with pytest.raises(ImageDownloadError, match=match):
        await fetch(session, f"{base}{path}?token=SECRET", max_bytes=1000)


async def test_errors_never_show_the_query(base: str, session: aiohttp.ClientSession) -> None:
    with pytest.raises(ImageDownloadError) as info:
        await fetch(session, base + "/missing?X-Amz-Signature=SECRET")
    assert "SECRET" not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.status == 404


async def test_stalled_download_times_out(base: str, session: aiohttp.ClientSession) -> None:
    with pytest.raises(ImageDownloadError, match="timed out"):
        await download_image(base + "/stalls", session, max_bytes=10_000, time_limit=0.2)


async def test_refused_connection_is_typed(session: aiohttp.ClientSession) -> None:
    from tests.helpers.servers import closed_port_url

    with pytest.raises(ImageDownloadError, match="could not download"):
        await fetch(session, closed_port_url() + "/png")


async def test_only_http_urls_are_fetched(session: aiohttp.ClientSession) -> None:
    with pytest.raises(ImageDownloadError, match="only http"):
        await fetch(session, "file:///etc/passwd")


async def test_standalone_fetch_closes_its_session(base: str) -> None:
    image = await standalone_fetch(base + "/png", 10_000, 5.0)
    assert image.data == PNG


def test_safe_url_drops_credentials() -> None:
    assert safe_url("https://user:pw@cdn.example:8443/a/b.png?sig=1#x") == (
        "https://cdn.example:8443/a/b.png?…"
    )
    assert safe_url("http://[::1") == "<malformed URL>"


@pytest.mark.parametrize(
    ("data", "mime_type"),
    [
        (PNG, "image/png"),
        (JPEG, "image/jpeg"),
        (b"GIF89a....", "image/gif"),
        (b"RIFF\0\0\0\0WEBPVP8 ", "image/webp"),
        (b"\0\0\0\x18ftypheic\0\0", "image/heic"),
        (b"\0\0\0\x18ftypmif1\0\0", "image/heif"),
        (b"<html>", None),
    ],
)
def test_sniff(data: bytes, mime_type: str | None) -> None:
    assert sniff_image_type(data) == mime_type


class ScriptedProvider:
    """A provider whose models are `ScriptedModel`s (they record what they were sent)."""

    name = "local"

    def __init__(self) -> None:
        self.models: dict[str, ScriptedModel] = {}

    def model(self, model_id: str) -> ScriptedModel:
        return self.models.setdefault(model_id, ScriptedModel(f"local/{model_id}"))


async def test_registry_chain_downloads_with_its_session(base: str) -> None:
    """End to end: a target that takes only inline images gets the downloaded bytes."""
    provider = ScriptedProvider()
    async with Registry(env={}, capabilities={"local/*": {"image_urls": False}}) as registry:
        registry.register_provider(provider)
        chain = registry.parse("local/vision")
        request = Request([Message.user("describe", ImagePart.from_url(base + "/png"))])
        response = await chain.generate(request)
        assert response.model == "local/vision"
        [sent] = provider.models["vision"].requests
        assert sent.messages[0].parts[1] == ImagePart.from_bytes(PNG, "image/png")
        assert acquired_connections(registry._http.get()) == 0
