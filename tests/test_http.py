"""The HTTP transport against real local servers: timeouts, faults, error mapping, leaks.

Every test runs against aiohttp.web (or a raw TCP server) on 127.0.0.1 and ends by
checking that the session's connector has no connection checked out.
"""

from __future__ import annotations

import asyncio
import json
import math
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing

import aiohttp
import anyio
import pytest
from aiohttp import web
from aiohttp.client_reqrep import ConnectionKey

from majordomo_async._exceptions import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ErrorClass,
    ModelNotFoundError,
    OverloadedError,
    ProviderConnectionError,
    ProviderError,
    ProviderStatusError,
    ProviderTimeoutError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
    StreamTruncatedError,
    classify,
)
from majordomo_async._http import (
    AFTER_END_GRACE,
    HOSTED_TIMEOUTS,
    MAX_ERROR_BODY,
    ON_DEMAND_TIMEOUTS,
    SELF_HOSTED_TIMEOUTS,
    Timeouts,
    iter_body,
    map_transport_errors,
    open_stream,
    request_id_from,
    request_json,
)
from majordomo_async._providers._common import body_summary, json_or_none, status_error
from tests.helpers.servers import (
    abort_connection,
    acquired_connections,
    closed_port_url,
    raw_server,
    serve,
    sleep_forever,
    unaccepting_server,
)

FAST = Timeouts(
    connect=0.5, headers=0.3, generate=0.3, first_token=0.3, reasoning_first_token=0.3, idle=0.2
)
"""Small limits so every fault test finishes well under a second."""


def limits(
    *,
    connect: float | None = 0.5,
    until_headers: float | None = 1.0,
    first_body: float | None = 1.0,
    idle: float | None = 1.0,
) -> Timeouts:
    """Timeouts for one transport phase each: until the headers (a stream's and a
    generate's alike), from the headers to the first body bytes, and after them."""
    return Timeouts(
        connect=connect,
        headers=until_headers,
        generate=until_headers,
        first_token=first_body,
        reasoning_first_token=first_body,
        idle=idle,
    )


def mapper(status: int, headers: Mapping[str, str], body_text: str) -> ProviderError:
    """The error mapper a provider without matchers of its own would pass."""
    return status_error(
        provider="p", model="m", status=status, headers=headers, body_text=body_text
    )


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session that must end every test with no connection checked out."""
    async with aiohttp.ClientSession() as session:
        yield session
        assert acquired_connections(session) == 0


async def post(session: aiohttp.ClientSession, url: str, timeouts: Timeouts = FAST) -> object:
    """`request_json` with the test defaults."""
    decoded, _ = await request_json(
        session,
        "POST",
        url,
        headers={"Authorization": "Bearer sk-secret"},
        json_body={"q": 1},
        provider="p",
        model="m",
        timeouts=timeouts,
        error_mapper=mapper,
    )
    return decoded


async def stream_chunks(
    session: aiohttp.ClientSession, url: str, timeouts: Timeouts = FAST
) -> list[bytes]:
    """Open a stream and read every chunk."""
    response = await open_stream(
        session,
        "POST",
        url,
        headers={},
        json_body={"stream": True},
        provider="p",
        model="m",
        timeouts=timeouts,
        error_mapper=mapper,
    )
    chunks = []
    async with aclosing(iter_body(response, provider="p", model="m", timeouts=timeouts)) as body:
        async for chunk in body:
            chunks.append(chunk)
    return chunks


async def start_stream(request: web.Request) -> web.StreamResponse:
    """Send the headers of a streamed reply at once."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    return response


# --------------------------------------------------------------------------- Timeouts


def test_timeouts_defaults_are_the_hosted_family() -> None:
    """Hosted APIs: 10 s connect, 15 s stream headers, 600 s for a generate's reply,
    first token 30 s (300 s for a model that reasons first), 30 s idle."""
    assert Timeouts() == HOSTED_TIMEOUTS
    assert Timeouts() == Timeouts(
        connect=10.0,
        headers=15.0,
        generate=600.0,
        first_token=30.0,
        reasoning_first_token=300.0,
        idle=30.0,
    )
    assert HOSTED_TIMEOUTS.first_token_for(reasoning=True) == 300.0
    assert HOSTED_TIMEOUTS.first_body == 300.0


def test_only_servers_that_load_models_on_demand_wait_long_for_headers() -> None:
    """Every family but the on-demand loaders has a short headers limit (<= 30 s)."""
    for family in (HOSTED_TIMEOUTS, SELF_HOSTED_TIMEOUTS):
        assert family.headers is not None and family.headers <= 30
    assert ON_DEMAND_TIMEOUTS.headers == 300.0
    # A first token counts from the request: it must outlast the headers limit.
    for family in (HOSTED_TIMEOUTS, SELF_HOSTED_TIMEOUTS, ON_DEMAND_TIMEOUTS):
        assert family.first_token is not None and family.headers is not None
        assert family.first_token > family.headers


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, True, "5"])
def test_timeouts_reject_non_positive(bad: object) -> None:
    """A limit must be a positive finite number or None."""
    with pytest.raises(ConfigurationError, match="headers"):
        Timeouts(headers=bad)  # type: ignore[arg-type]


def test_timeouts_accept_none() -> None:
    """None disables a limit."""
    none = Timeouts(
        connect=None,
        headers=None,
        generate=None,
        first_token=None,
        reasoning_first_token=None,
        idle=None,
    )
    assert none.idle is None and none.first_body is None


# --------------------------------------------------------------------------- success paths


async def test_request_json_round_trip(session: aiohttp.ClientSession) -> None:
    """The body is compact JSON with its content type; the reply and headers come back."""
    seen: dict[str, object] = {}

    async def echo(request: web.Request) -> web.Response:
        seen["body"] = await request.read()
        seen["type"] = request.headers["Content-Type"]
        return web.json_response({"ok": True}, headers={"X-Request-Id": "req-1"})

    async with serve({"/v1/chat": echo}) as base:
        decoded, headers = await request_json(
            session,
            "POST",
            base + "/v1/chat",
            headers={"Authorization": "Bearer sk-secret"},
            json_body={"model": "m", "text": "héllo"},
            provider="p",
            model="m",
            timeouts=FAST,
            error_mapper=mapper,
        )
    assert decoded == {"ok": True}
    assert seen["body"] == '{"model":"m","text":"héllo"}'.encode()
    assert seen["type"] == "application/json"
    assert request_id_from(headers, ["request-id", "x-request-id"]) == "req-1"


@pytest.mark.parametrize(
    "own",
    [
        {"Content-Type": "application/json"},
        {"content-type": "application/vnd.custom+json"},
        {"CONTENT-TYPE": "text/plain"},
    ],
)
async def test_a_callers_content_type_is_the_only_one_sent(
    session: aiohttp.ClientSession, own: dict[str, str]
) -> None:
    """Headers that name a content type, in any spelling, are sent with that one alone
    (never a second `Content-Type` beside it), and are not changed in place."""
    seen: list[str] = []

    async def echo(request: web.Request) -> web.Response:
        seen.extend(request.headers.getall("Content-Type"))
        return web.json_response({"ok": True})

    headers = {"Authorization": "Bearer sk-secret", **own}
    before = dict(headers)
    async with serve({"/v1/chat": echo}) as base:
        await request_json(
            session,
            "POST",
            base + "/v1/chat",
            headers=headers,
            json_body={"model": "m"},
            provider="p",
            model="m",
            timeouts=FAST,
            error_mapper=mapper,
        )
    assert seen == list(own.values())
    assert headers == before


async def test_get_sends_no_body(session: aiohttp.ClientSession) -> None:
    """Without json_body nothing is sent and no content type is set."""
    seen: dict[str, object] = {}

    async def models(request: web.Request) -> web.Response:
        seen["body"] = await request.read()
        seen["type"] = request.headers.get("Content-Type")
        return web.json_response({"data": []})

    async with serve({"/models": models}) as base:
        decoded, _ = await request_json(
            session,
            "GET",
            base + "/models",
            headers={},
            provider="p",
            model="m",
            timeouts=FAST,
            error_mapper=mapper,
        )
    assert decoded == {"data": []}
    assert seen == {"body": b"", "type": None}


async def test_stream_read_to_the_end_pools_the_connection(
    session: aiohttp.ClientSession,
) -> None:
    """A fully read stream yields every chunk and returns its connection to the pool."""

    async def sse(request: web.Request) -> web.StreamResponse:
        response = await start_stream(request)
        for i in range(3):
            await response.write(f"data: {i}\n\n".encode())
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response

    async with serve({"/s": sse}) as base:
        chunks = await stream_chunks(session, base + "/s")
        again = await stream_chunks(session, base + "/s")
    assert b"".join(chunks) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert b"".join(again) == b"".join(chunks)


async def test_idle_shorter_than_the_first_limits_lets_a_model_think(
    session: aiohttp.ClientSession,
) -> None:
    """Slow headers and a slow first byte within their limits pass though each exceeds
    idle; later gaps don't."""
    timeouts = limits(until_headers=0.6, first_body=0.6, idle=0.1)

    async def thinker(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.15)  # headers: longer than idle
        response = await start_stream(request)
        await asyncio.sleep(0.15)  # first token: longer than idle again
        await response.write(b"data: a\n\n")
        await asyncio.sleep(0.02)
        await response.write(b"data: b\n\n")
        await asyncio.sleep(0.4)  # a stall after the first event: idle applies
        await response.write(b"data: never\n\n")
        return response

    async with serve({"/s": thinker}) as base:
        response = await open_stream(
            session,
            "POST",
            base + "/s",
            headers={},
            json_body={},
            provider="p",
            model="m",
            timeouts=timeouts,
            error_mapper=mapper,
        )
        received = []
        started = time.monotonic()
        with pytest.raises(ProviderTimeoutError, match="idle") as info:
            async with aclosing(
                iter_body(response, provider="p", model="m", timeouts=timeouts)
            ) as body:
                async for chunk in body:
                    received.append(chunk)
                    started = time.monotonic()
    assert b"".join(received) == b"data: a\n\ndata: b\n\n"
    assert isinstance(info.value.__cause__, aiohttp.SocketTimeoutError)
    assert time.monotonic() - started < 0.35  # idle fired, not the first body's limit
    assert info.value.limit == "idle"


# --------------------------------------------------------------------------- connection faults


async def test_connection_refused(session: aiohttp.ClientSession) -> None:
    """A closed port is a ProviderConnectionError naming host:port, from ClientConnectorError."""
    url = closed_port_url()
    with pytest.raises(ProviderConnectionError) as info:
        await post(session, url + "/v1/chat")
    error = info.value
    assert not isinstance(error, ProviderTimeoutError)
    assert type(error.__cause__) is aiohttp.ClientConnectorError
    assert url.removeprefix("http://") in str(error)
    assert "refused" in str(error)
    assert classify(error) is ErrorClass.TRANSIENT


async def test_connect_timeout(session: aiohttp.ClientSession) -> None:
    """A listener that never accepts hits the connect limit: ConnectionTimeoutError."""
    with unaccepting_server() as url:
        started = time.monotonic()
        with pytest.raises(ProviderTimeoutError, match="connect timeout") as info:
            await post(session, url + "/x", limits(connect=0.15))
    assert time.monotonic() - started < 0.6
    assert type(info.value.__cause__) is aiohttp.ConnectionTimeoutError
    assert info.value.limit == "connect"


async def test_reset_before_headers(session: aiohttp.ClientSession) -> None:
    """An RST before the headers is a ProviderConnectionError (aiohttp: ClientOSError)."""

    async def reset(request: web.Request) -> web.Response:
        abort_connection(request)
        await sleep_forever()
        raise AssertionError("unreachable")

    async with serve({"/x": reset}) as base:
        with pytest.raises(ProviderConnectionError, match="connection") as info:
            await post(session, base + "/x")
    assert type(info.value.__cause__) is aiohttp.ClientOSError
    assert classify(info.value) is ErrorClass.TRANSIENT


async def test_close_before_headers(session: aiohttp.ClientSession) -> None:
    """A clean close before the headers is ServerDisconnectedError -> ProviderConnectionError."""

    async def close(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.close()
        await sleep_forever()
        raise AssertionError("unreachable")

    async with serve({"/x": close}) as base:
        with pytest.raises(ProviderConnectionError, match="closed the connection") as info:
            await post(session, base + "/x")
    assert type(info.value.__cause__) is aiohttp.ServerDisconnectedError


async def test_reset_mid_stream(session: aiohttp.ClientSession) -> None:
    """An RST mid-stream, after chunks were read, is a StreamTruncatedError (ClientPayloadError)."""

    async def cut(request: web.Request) -> web.StreamResponse:
        response = await start_stream(request)
        await response.write(b"data: 1\n\n")
        await asyncio.sleep(0.05)
        abort_connection(request)
        await sleep_forever()
        return response

    async with serve({"/s": cut}) as base:
        response = await open_stream(
            session,
            "POST",
            base + "/s",
            headers={},
            json_body={},
            provider="p",
            model="m",
            timeouts=FAST,
            error_mapper=mapper,
        )
        received = []
        with pytest.raises(StreamTruncatedError) as info:
            async for chunk in iter_body(response, provider="p", model="m", timeouts=FAST):
                received.append(chunk)
    assert received == [b"data: 1\n\n"]
    assert type(info.value.__cause__) is aiohttp.ClientPayloadError
    assert response.closed


async def test_body_shorter_than_content_length(session: aiohttp.ClientSession) -> None:
    """A body cut short of its Content-Length is a StreamTruncatedError (ClientPayloadError)."""

    async def short(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "Content-Length": "100"}
        )
        await response.prepare(request)
        await response.write(b'{"partial": ')
        await asyncio.sleep(0.02)
        assert request.transport is not None
        request.transport.close()
        await sleep_forever()
        return response

    async with serve({"/x": short}) as base:
        with pytest.raises(StreamTruncatedError, match="ended early") as info:
            await post(session, base + "/x")
    assert type(info.value.__cause__) is aiohttp.ClientPayloadError
    assert classify(info.value) is ErrorClass.TRANSIENT


async def test_garbage_instead_of_http(session: aiohttp.ClientSession) -> None:
    """A reply that is not HTTP is a ProviderConnectionError (aiohttp: ClientResponseError)."""
    async with raw_server(b"SSH-2.0-OpenSSH_9.6\r\n\r\n") as base:
        expected = "invalid HTTP response: Bad status"
        with pytest.raises(ProviderConnectionError, match=expected) as info:
            await post(session, base + "/x")
    # aiohttp's error is kept as the cause, with the request headers (the key) scrubbed.
    assert isinstance(info.value.__cause__, aiohttp.ClientResponseError)
    assert not info.value.__cause__.request_info.headers


# --------------------------------------------------------------------------- timeouts


async def test_a_slow_generate_reply_hits_the_generate_limit(
    session: aiohttp.ClientSession,
) -> None:
    """A reply later than `generate`: ProviderTimeoutError(limit="generate"); the
    stream headers limit does not apply to a generate."""

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({})

    timeouts = Timeouts(connect=0.5, headers=0.05, generate=0.2, idle=1.0)
    async with serve({"/x": slow}) as base:
        started = time.monotonic()
        with pytest.raises(ProviderTimeoutError, match="generate timeout") as info:
            await post(session, base + "/x", timeouts)
    assert 0.15 < time.monotonic() - started < 0.5
    assert classify(info.value) is ErrorClass.TRANSIENT
    assert info.value.limit == "generate"


async def test_a_silent_stream_request_hits_the_headers_limit(
    session: aiohttp.ClientSession,
) -> None:
    """A server that accepts a stream request and sends no headers fails after `headers`
    (not after the long generate limit)."""

    async def silent(request: web.Request) -> web.Response:
        await sleep_forever()
        raise AssertionError("unreachable")

    timeouts = Timeouts(connect=0.5, headers=0.2, generate=5.0, idle=1.0)
    async with serve({"/s": silent}) as base:
        started = time.monotonic()
        with pytest.raises(ProviderTimeoutError, match="headers timeout") as info:
            await stream_chunks(session, base + "/s", timeouts)
    assert 0.15 < time.monotonic() - started < 0.5
    assert info.value.limit == "headers"
    assert classify(info.value) is ErrorClass.TRANSIENT


@pytest.mark.parametrize("streaming", [False, True], ids=["generate", "stream"])
async def test_an_error_reply_whose_body_stalls_hits_the_idle_limit_and_drops_it(
    session: aiohttp.ClientSession, streaming: bool
) -> None:
    """A 503 whose headers arrive but whose body stops half-way: the silence after the
    headers is the idle limit (not the headers or generate limit, which ended with the
    headers), and the half-read connection is closed, not returned to the pool."""

    async def stalled(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=503, headers={"Content-Length": "100"})
        await response.prepare(request)
        await response.write(b'{"error": {"message": "over')
        await sleep_forever()
        return response

    timeouts = Timeouts(connect=0.5, headers=5.0, generate=5.0, first_token=5.0, idle=0.2)
    async with serve({"/e": stalled}) as base:
        started = time.monotonic()
        with pytest.raises(ProviderTimeoutError, match="idle timeout") as info:
            if streaming:
                await stream_chunks(session, base + "/e", timeouts)
            else:
                await post(session, base + "/e", timeouts)
        elapsed = time.monotonic() - started
        connector = session.connector
        assert connector is not None
        in_use = sum(len(held) for held in connector._acquired_per_host.values())
    assert 0.15 < elapsed < 3  # the 0.2 s idle limit, not the 5 s ones
    assert info.value.limit == "idle"
    assert in_use == 0


async def test_headers_then_silence_hits_the_first_body_limit(
    session: aiohttp.ClientSession,
) -> None:
    """A stream that sends headers and then nothing times out on its first event."""

    async def mute(request: web.Request) -> web.StreamResponse:
        response = await start_stream(request)
        await sleep_forever()
        return response

    timeouts = limits(until_headers=0.1, first_body=0.25)
    async with serve({"/s": mute}) as base:
        started = time.monotonic()
        with pytest.raises(ProviderTimeoutError, match=r"first token timeout.*body") as info:
            await stream_chunks(session, base + "/s", timeouts)
    assert 0.2 < time.monotonic() - started < 0.6  # the first body's limit, not `headers`
    assert info.value.limit == "first_token"


async def test_stream_stall_hits_idle(session: aiohttp.ClientSession) -> None:
    """A stream that stops talking mid-body raises ProviderTimeoutError (SocketTimeoutError)."""

    async def stall(request: web.Request) -> web.StreamResponse:
        response = await start_stream(request)
        await response.write(b"data: 1\n\n")
        await sleep_forever()
        return response

    async with serve({"/s": stall}) as base:
        with pytest.raises(ProviderTimeoutError, match="idle") as info:
            await stream_chunks(session, base + "/s")
    assert type(info.value.__cause__) is aiohttp.SocketTimeoutError


async def test_non_stream_body_stall_hits_idle(session: aiohttp.ClientSession) -> None:
    """A JSON body that stops half way is bounded by idle too."""

    async def stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"a":')
        await sleep_forever()
        return response

    async with serve({"/x": stall}) as base:
        with pytest.raises(ProviderTimeoutError, match="idle"):
            await post(session, base + "/x")


# --------------------------------------------------------------------------- status errors


async def test_503_retry_after_seconds(session: aiohttp.ClientSession) -> None:
    """503 with Retry-After: 2 is OverloadedError(retry_after=2.0)."""

    async def busy(request: web.Request) -> web.Response:
        return web.Response(status=503, text="busy", headers={"Retry-After": "2"})

    async with serve({"/x": busy}) as base:
        with pytest.raises(OverloadedError) as info:
            await post(session, base + "/x")
    assert info.value.retry_after == 2.0
    assert info.value.status == 503
    assert str(info.value) == "503: busy (retry after 2 s)"


async def test_429_retry_after_ms(session: aiohttp.ClientSession) -> None:
    """429 with retry-after-ms: 1500 is RateLimitError(retry_after=1.5)."""

    async def limited(request: web.Request) -> web.Response:
        return web.json_response(
            {"error": {"message": "slow down"}},
            status=429,
            headers={"retry-after-ms": "1500", "Retry-After": "9"},
        )

    async with serve({"/x": limited}) as base:
        with pytest.raises(RateLimitError) as info:
            await post(session, base + "/x")
    assert info.value.retry_after == 1.5


async def test_502_html_page_is_one_line(session: aiohttp.ClientSession) -> None:
    """A proxy's HTML 502 page becomes ServerError "HTML error page (502 Bad Gateway)"."""
    page = (
        "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
        "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )

    async def gateway(request: web.Request) -> web.Response:
        return web.Response(status=502, text=page, content_type="text/html")

    async with serve({"/x": gateway}) as base:
        with pytest.raises(ServerError) as info:
            await post(session, base + "/x")
    assert info.value.message == "HTML error page (502 Bad Gateway)"
    assert "\n" not in str(info.value)


async def test_404_without_model_marker_hints_base_url(session: aiohttp.ClientSession) -> None:
    """A bare 404 is a wrong endpoint: BadRequestError pointing at the base URL."""

    async def missing(request: web.Request) -> web.Response:
        return web.json_response({"detail": "Not Found"}, status=404)

    async with serve({"/v1/chat": missing}) as base:
        with pytest.raises(BadRequestError, match="base URL") as info:
            await post(session, base + "/v1/v1/chat")
    assert not isinstance(info.value, ModelNotFoundError)
    assert info.value.status == 404
    assert classify(info.value) is ErrorClass.PERMANENT


async def test_500_with_should_retry_false(session: aiohttp.ClientSession) -> None:
    """x-should-retry: false on a 500 makes the ServerError permanent."""

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="nope", headers={"x-should-retry": "false"})

    async with serve({"/x": broken}) as base:
        with pytest.raises(ServerError) as info:
            await post(session, base + "/x")
    assert info.value.should_retry is False
    assert classify(info.value) is ErrorClass.PERMANENT


async def test_error_body_is_bounded(session: aiohttp.ClientSession) -> None:
    """At most 1 MiB of an error body is read; the rest is dropped with the connection."""
    seen: list[int] = []

    def measuring(status: int, headers: Mapping[str, str], body_text: str) -> ProviderError:
        seen.append(len(body_text))
        return mapper(status, headers, body_text)

    async def huge(request: web.Request) -> web.Response:
        return web.Response(status=500, body=b"x" * (4 * MAX_ERROR_BODY))

    async with serve({"/x": huge}) as base:
        with pytest.raises(ServerError) as info:
            await request_json(
                session,
                "POST",
                base + "/x",
                headers={},
                json_body={},
                provider="p",
                model="m",
                timeouts=FAST,
                error_mapper=measuring,
            )
    assert seen == [MAX_ERROR_BODY]
    assert len(info.value.message) <= 300


async def test_stream_error_status_is_mapped(session: aiohttp.ClientSession) -> None:
    """open_stream reads an error status's body, closes it, and raises the mapped error."""

    async def denied(request: web.Request) -> web.Response:
        return web.json_response({"error": "bad key"}, status=401)

    async with serve({"/s": denied}) as base:
        with pytest.raises(AuthenticationError, match="bad key"):
            await stream_chunks(session, base + "/s")


async def test_redirect_is_not_followed(session: aiohttp.ClientSession) -> None:
    """A 307 is reported, not followed: credentials never travel to another host."""
    hits: list[str] = []

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/elsewhere?token=abc")

    async def elsewhere(request: web.Request) -> web.Response:
        hits.append(request.headers.get("Authorization", ""))
        return web.json_response({})

    async with serve({"/x": moved, "/elsewhere": elsewhere}) as base:
        with pytest.raises(ProviderStatusError, match="redirected to /elsewhere;") as info:
            await post(session, base + "/x")
    assert hits == []
    assert info.value.status == 307
    assert "token" not in str(info.value)


# --------------------------------------------------------------------------- bad replies


async def test_invalid_json_on_200(session: aiohttp.ClientSession) -> None:
    """A 200 whose body is not JSON is ResponseFormatError quoting its start."""

    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html>maintenance</html>" + "x" * 1000)

    async with serve({"/x": html}) as base:
        with pytest.raises(ResponseFormatError, match="<html>maintenance") as info:
            await post(session, base + "/x")
    assert isinstance(info.value.__cause__, json.JSONDecodeError)
    assert len(info.value.message) < 300


async def test_empty_body_on_200(session: aiohttp.ClientSession) -> None:
    """An empty 200 body is a ResponseFormatError, not a bare JSONDecodeError."""

    async def empty(request: web.Request) -> web.Response:
        return web.Response(status=200)

    async with serve({"/x": empty}) as base:
        with pytest.raises(ResponseFormatError, match="empty"):
            await post(session, base + "/x")


async def test_json_after_keep_alive_blank_lines(session: aiohttp.ClientSession) -> None:
    """Blank keep-alive lines before the JSON (DeepSeek) decode fine."""

    async def patient(request: web.Request) -> web.Response:
        return web.Response(text='\n\n\n{"ok": 1}', content_type="application/json")

    async with serve({"/x": patient}) as base:
        assert await post(session, base + "/x") == {"ok": 1}


# --------------------------------------------------------------------------- cancellation


async def test_cancel_during_slow_request(session: aiohttp.ClientSession) -> None:
    """Cancelling while waiting for headers propagates and leaves no connection behind."""

    async def slow(request: web.Request) -> web.Response:
        await sleep_forever()
        raise AssertionError("unreachable")

    async with serve({"/x": slow}) as base:
        with anyio.move_on_after(0.1) as scope:
            await post(session, base + "/x", Timeouts())
        assert scope.cancelled_caught
        assert acquired_connections(session) == 0


async def test_cancel_mid_stream(session: aiohttp.ClientSession) -> None:
    """Cancelling a stream mid-body closes its response; the cancellation propagates."""

    async def drip(request: web.Request) -> web.StreamResponse:
        response = await start_stream(request)
        for _ in range(100):
            await response.write(b"data: x\n\n")
            await asyncio.sleep(0.02)
        return response

    async with serve({"/s": drip}) as base:
        received: list[bytes] = []
        with anyio.move_on_after(0.1) as scope:
            response = await open_stream(
                session,
                "POST",
                base + "/s",
                headers={},
                json_body={},
                provider="p",
                model="m",
                timeouts=Timeouts(),
                error_mapper=mapper,
            )
            async with aclosing(
                iter_body(response, provider="p", model="m", timeouts=Timeouts())
            ) as body:
                async for chunk in body:
                    received.append(chunk)
        assert scope.cancelled_caught
        assert received
        assert response.closed
        assert acquired_connections(session) == 0


async def test_breaking_out_of_a_stream_closes_it(session: aiohttp.ClientSession) -> None:
    """A consumer that stops early (and closes the generator) drops the connection."""

    async def endless(request: web.Request) -> web.StreamResponse:
        response = await start_stream(request)
        while True:
            await response.write(b"data: x\n\n")
            await asyncio.sleep(0.01)

    async with serve({"/s": endless}) as base:
        response = await open_stream(
            session,
            "POST",
            base + "/s",
            headers={},
            json_body={},
            provider="p",
            model="m",
            timeouts=FAST,
            error_mapper=mapper,
        )
        async with aclosing(iter_body(response, provider="p", model="m", timeouts=FAST)) as body:
            async for _ in body:
                break
        assert response.closed
        assert acquired_connections(session) == 0


# --------------------------------------------------------------------------- mapping units

_KEY = ConnectionKey("api.example.com", 443, True, True, None, None, None)


@pytest.mark.parametrize(
    "exc",
    [
        aiohttp.ClientConnectorCertificateError(
            _KEY, ssl.SSLCertVerificationError(1, "certificate verify failed")
        ),
        aiohttp.ClientConnectorSSLError(_KEY, ssl.SSLError(1, "wrong version number")),
        aiohttp.ServerFingerprintMismatch(b"a", b"b", "api.example.com", 443),
        ssl.SSLError(1, "bad record mac"),
        aiohttp.InvalidUrlClientError("http:///nohost"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_permanent_transport_errors(exc: Exception) -> None:
    """TLS and URL errors map to ProviderConnectionError that is never retried."""
    with pytest.raises(ProviderConnectionError) as info, map_transport_errors("p", "m"):
        raise exc
    assert info.value.should_retry is False
    assert info.value.__cause__ is exc
    assert classify(info.value) is ErrorClass.PERMANENT


@pytest.mark.parametrize(
    ("exc", "expected", "text"),
    [
        (
            aiohttp.ClientConnectorDNSError(_KEY, OSError(-2, "Name or service not known")),
            ProviderConnectionError,
            "cannot resolve host 'api.example.com'",
        ),
        (
            aiohttp.ClientConnectorError(_KEY, OSError(113, "No route to host")),
            ProviderConnectionError,
            "api.example.com:443 is unreachable",
        ),
        (aiohttp.ConnectionTimeoutError("to host x"), ProviderTimeoutError, "connect timeout"),
        (aiohttp.SocketTimeoutError("read"), ProviderTimeoutError, "idle"),
        (aiohttp.ServerTimeoutError("slow"), ProviderTimeoutError, "read timeout"),
        (TimeoutError(), ProviderTimeoutError, "timed out"),
        (aiohttp.ClientPayloadError("not completed"), StreamTruncatedError, "ended early"),
        (aiohttp.ServerDisconnectedError(), ProviderConnectionError, "closed the connection"),
        (aiohttp.ClientConnectionResetError("reset"), ProviderConnectionError, "reset"),
        (ConnectionResetError(104, "reset"), ProviderConnectionError, "reset"),
        (aiohttp.ClientOSError(32, "Broken pipe"), ProviderConnectionError, "Broken pipe"),
        (aiohttp.ClientConnectionError("Connection closed"), ProviderConnectionError, "closed"),
        (aiohttp.TooManyRedirects(None, ()), ProviderConnectionError, "invalid HTTP"),  # type: ignore[arg-type]
        (BrokenPipeError(32, "Broken pipe"), ProviderConnectionError, "BrokenPipeError"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else "",
)
def test_transient_transport_errors(
    exc: Exception, expected: type[ProviderError], text: str
) -> None:
    """Each transport failure maps to its error type (subclasses before bases), as a cause."""
    with pytest.raises(expected) as info, map_transport_errors("p", "m", timeouts=FAST):
        raise exc
    assert type(info.value) is expected
    assert text in str(info.value)
    assert info.value.__cause__ is exc
    assert (info.value.provider, info.value.model) == ("p", "m")
    assert classify(info.value) is ErrorClass.TRANSIENT


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("Chunk too big"),
        KeyError("x"),
        ServerError("ours already", provider="p", model="m", status=500),
        ProviderTimeoutError("ours already"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_other_errors_pass_through(exc: Exception) -> None:
    """Non-transport errors, and our own errors, propagate unchanged."""
    with pytest.raises(type(exc)) as info, map_transport_errors("p", "m"):
        raise exc
    assert info.value is exc


async def test_cancellation_passes_through() -> None:
    """Cancellation is never caught or translated."""
    with anyio.CancelScope() as scope:
        with map_transport_errors("p", "m"):
            scope.cancel()
            await anyio.sleep(1)
        raise AssertionError("unreachable")
    assert scope.cancelled_caught


def test_urls_in_messages_lose_credentials() -> None:
    """Query strings and user info are scrubbed from quoted aiohttp messages."""
    exc = aiohttp.ClientOSError(
        32, "Can not write request body for https://u:pw@host/v1/x?key=SECRET"
    )
    with pytest.raises(ProviderConnectionError) as info, map_transport_errors("p", "m"):
        raise exc
    assert "SECRET" not in str(info.value)
    assert "pw" not in str(info.value)
    assert "https://host/v1/x" in str(info.value)


# --------------------------------------------------------------------------- status_error units


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, BadRequestError),
        (408, ProviderStatusError),
        (409, ProviderStatusError),
        (413, BadRequestError),
        (422, BadRequestError),
        (429, RateLimitError),
        (500, ServerError),
        (502, ServerError),
        (503, OverloadedError),
        (504, ServerError),
        (529, OverloadedError),
        (402, ProviderStatusError),
    ],
)
def test_status_error_by_status(status: int, expected: type[ProviderStatusError]) -> None:
    """The generic mapping picks the error class by status alone."""
    error = status_error(provider="p", model="m", status=status, headers={}, body_text="x")
    assert type(error) is expected
    assert error.status == status


def test_status_error_kind_and_fields_win() -> None:
    """The provider's kind, message, code and request id are used as given."""
    error = status_error(
        provider="p",
        model="m",
        status=404,
        headers={"X-Should-Retry": "TRUE"},
        body_text="{}",
        message="The model `m` does not exist",
        code="model_not_found",
        request_id="req-9",
        kind=ModelNotFoundError,
    )
    assert type(error) is ModelNotFoundError
    assert error.message == "The model `m` does not exist"
    assert (error.code, error.request_id, error.should_retry) == ("model_not_found", "req-9", True)


def test_status_error_never_quotes_request_headers() -> None:
    """Only the response body is quoted: a credential in the request stays out."""
    error = status_error(
        provider="p", model="m", status=401, headers={}, body_text='{"error":"invalid key"}'
    )
    assert "sk-" not in str(error)
    assert error.message == '{"error":"invalid key"}'


@pytest.mark.parametrize(
    ("headers", "body", "summary"),
    [
        ({}, "", "502 Bad Gateway (empty body)"),
        ({}, "  line one\n\tline\x00two  ", "line one line two"),
        (
            {"Content-Type": "text/html"},
            "<p>no title</p>",
            "HTML error page (503 Service Unavailable)",
        ),
        ({}, "<!DOCTYPE html><title>a &amp;\n b</title>", "HTML error page (a & b)"),
        ({}, "y" * 1000, "y" * 299 + "…"),
        ({}, "nope", "nope"),
    ],
)
def test_body_summary(headers: dict[str, str], body: str, summary: str) -> None:
    """Error bodies become one short printable line; HTML pages a one-line summary."""
    status = 503 if "html" in headers.get("Content-Type", "") else 502
    assert body_summary(status, headers, body) == summary


def test_json_or_none() -> None:
    """json_or_none decodes JSON and returns None for anything else."""
    assert json_or_none('{"a": [1]}') == {"a": [1]}
    assert json_or_none("<html>") is None
    assert json_or_none("[" * 100_000) is None


def test_request_id_from() -> None:
    """The first non-empty header among the names wins; names match case-insensitively."""
    headers = {"Request-Id": " ", "X-Request-ID": "abc"}
    assert request_id_from(headers, ["request-id", "x-request-id"]) == "abc"
    assert request_id_from(headers, ["cf-ray"]) is None


async def test_lone_surrogate_is_sent_escaped(session: aiohttp.ClientSession) -> None:
    """Text with a lone surrogate still serialises (as a JSON escape), not a UnicodeError."""
    seen: list[bytes] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.json_response({})

    async with serve({"/x": echo}) as base:
        await request_json(
            session,
            "POST",
            base + "/x",
            headers={},
            json_body={"text": "a\ud800b"},
            provider="p",
            model="m",
            timeouts=FAST,
            error_mapper=mapper,
        )
    assert seen == [b'{"text":"a\\ud800b"}']


async def test_request_headers_never_reach_the_error(session: aiohttp.ClientSession) -> None:
    """A transport failure after sending an API key header leaves no trace of the key."""
    import traceback

    secret = "sk-never-show-this-0123456789"
    async with raw_server(b"SSH-2.0-OpenSSH_9.6\r\n\r\n") as base:
        with pytest.raises(ProviderConnectionError) as info:
            await request_json(
                session,
                "POST",
                base + "/x",
                headers={"Authorization": f"Bearer {secret}", "x-api-key": secret},
                json_body={},
                provider="p",
                model="m",
                timeouts=FAST,
                error_mapper=lambda status, headers, body: RuntimeError(body),
            )
    rendered = "".join(traceback.format_exception(info.value))
    chained: BaseException | None = info.value
    while chained is not None:  # a logger with %r would show each of these
        rendered += repr(chained) + repr(getattr(chained, "request_info", ""))
        chained = chained.__cause__ or chained.__context__
    assert secret not in rendered


# --------------------------------------------------------------------------- first event and pool
async def opened(
    session: aiohttp.ClientSession, url: str, timeouts: Timeouts
) -> aiohttp.ClientResponse:
    """`open_stream` with the test defaults."""
    return await open_stream(
        session,
        "POST",
        url,
        headers={},
        json_body={},
        provider="p",
        model="m",
        timeouts=timeouts,
        error_mapper=mapper,
    )


async def test_waiting_for_a_pooled_connection_is_not_a_headers_timeout() -> None:
    """The headers limit measures the server, not our pool: a request that queues for
    a connection longer than it still gets its answer."""
    release = asyncio.Event()

    async def slow_stream(request: web.Request) -> web.StreamResponse:
        response = await start_stream(request)
        await response.write(b"data: 1\n\n")
        await release.wait()
        return response

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    timeouts = limits(until_headers=0.1, first_body=0.1, idle=2.0)
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session,
        serve({"/s": slow_stream, "/x": answer}) as base,
    ):
        held = await opened(session, base + "/s", timeouts)
        async with aclosing(iter_body(held, provider="p", model="m", timeouts=timeouts)) as body:
            assert await body.read() == b"data: 1\n\n"
            # The only connection is busy: this request queues for 0.3 s (> the limit).
            asyncio.get_running_loop().call_later(0.3, release.set)
            started = time.monotonic()
            queued = asyncio.create_task(post(session, base + "/x", timeouts))
            assert [chunk async for chunk in body] == []
        assert await queued == {"ok": True}
        assert time.monotonic() - started >= 0.25
        assert acquired_connections(session) == 0


async def test_drain_after_a_complete_body_returns_the_connection_at_once(
    session: aiohttp.ClientSession,
) -> None:
    """When the body's end came with the terminal event, `drain()` waits for nothing."""

    async def whole(request: web.Request) -> web.Response:
        return web.Response(body=b"data: done\n\n", content_type="text/event-stream")

    async with serve({"/s": whole}) as base:
        response = await opened(session, base + "/s", FAST)
        body = iter_body(response, provider="p", model="m", timeouts=FAST)
        assert await body.read() == b"data: done\n\n"
        started = time.monotonic()
        await body.drain()
        assert time.monotonic() - started < AFTER_END_GRACE / 2
        assert acquired_connections(session) == 0
        # Released to the pool, not closed: the next request reuses the connection.
        connector = session.connector
        assert connector is not None
        assert sum(len(idle) for idle in connector._conns.values()) == 1


async def test_drain_closes_a_body_that_stays_open(session: aiohttp.ClientSession) -> None:
    """A body kept open after the terminal event is dropped after the grace."""

    async def lingering(request: web.Request) -> web.StreamResponse:
        response = await start_stream(request)
        await response.write(b"data: done\n\n")
        await sleep_forever()
        return response

    async with serve({"/s": lingering}) as base:
        response = await opened(session, base + "/s", Timeouts())
        body = iter_body(response, provider="p", model="m", timeouts=Timeouts())
        assert await body.read() == b"data: done\n\n"
        started = time.monotonic()
        await body.drain()
        assert AFTER_END_GRACE * 0.9 <= time.monotonic() - started < AFTER_END_GRACE * 5
        assert response.closed


async def test_first_body_limit_shorter_than_idle_does_not_cut_later_gaps(
    session: aiohttp.ClientSession,
) -> None:
    """After the first bytes, gaps are measured against `idle`, however short the
    limits before them are: a pause longer than those mid-stream is fine."""

    async def pausing(request: web.Request) -> web.StreamResponse:
        response = await start_stream(request)
        await response.write(b"data: 1\n\n")
        await asyncio.sleep(0.25)  # > the first body's limit, < idle
        await response.write(b"data: 2\n\n")
        return response

    timeouts = limits(until_headers=0.1, first_body=0.1, idle=1.0)
    async with serve({"/s": pausing}) as base:
        chunks = await stream_chunks(session, base + "/s", timeouts)
    assert b"".join(chunks) == b"data: 1\n\ndata: 2\n\n"


def test_aiohttp_is_loaded_on_first_use_not_on_import() -> None:
    """Importing the library, building a registry and running the fake provider leave
    aiohttp (and multidict) unloaded; building an HTTP provider loads them, before any
    call (which then pays nothing for the import); a program importing aiohttp itself
    afterwards gets the real module."""
    code = """
import asyncio, sys
import majordomo_async

def loaded(name):
    module = sys.modules.get(name)
    return module is not None and type(module).__name__ != "_LazyModule"

async def main():
    async with majordomo_async.Registry(env={}) as registry:
        assert (await registry.parse("fake/echo").generate("hi")).text == "hi"
        assert not loaded("aiohttp") and not loaded("multidict"), "loaded too early"
        registry.load_env({"LLM_LOCAL": "openai+http://sk-test@127.0.0.1:9/v1"})
        registry.parse("local/m")  # the provider is built: nothing is sent
        assert loaded("aiohttp") and loaded("multidict"), "not loaded with the provider"
        try:
            await registry.parse("local/m").generate("hi")  # nothing listens on port 9
        except majordomo_async.ChainExhaustedError:  # refused, after its retry
            pass
        assert loaded("aiohttp") and loaded("multidict")
    import aiohttp
    from aiohttp import web
    assert aiohttp.ClientSession and web.Application

asyncio.run(main())
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
