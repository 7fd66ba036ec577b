"""A client that disconnects cancels its upstream call, whenever it leaves.

An ASGI server (uvicorn) does not cancel an endpoint whose client left; it only puts an
`http.disconnect` message on the request's `receive` channel. `cancel_on_disconnect`
listens there while a call is awaited, and Starlette does so while a `StreamingResponse`
is sent. aiohttp, run with `handler_cancellation=True`, cancels the handler itself.

Every test here runs the real thing: the apps under uvicorn or aiohttp on 127.0.0.1, a
real client that sends its request and hangs up (a raw socket closed as `curl
--max-time` closes it, or an aiohttp response closed mid-stream), and, as the provider,
a local OpenAI-compatible server that records each request and notices when the app's
connection to it closes (aiohttp cancels its handler then). A test asserts that:

- the upstream connection closes within `BOUND` seconds of the client leaving;
- the app's request ended (it is not left running for nobody), and nothing was counted
  against any target's health (`registry.health.snapshot()` is empty), with exactly one
  upstream request (no retry, no failover for nobody);
- the server then shuts down within `BOUND` seconds, though it would wait `GRACE`
  seconds for a request left running, so a regression shows as the whole grace period;
- nothing was logged at ERROR.

The last tests check the helper's contract on a scripted `receive` channel, under
asyncio and trio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal

import aiohttp
import anyio
import pytest
import trio
from aiohttp import web
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.background import BackgroundTask

from examples import aiohttp_app, fastapi_app
from majordomo_async import (
    ChainExhaustedError,
    ClientDisconnectedError,
    Registry,
    TargetFailure,
    TextDelta,
    cancel_on_disconnect,
)

from .helpers.servers import serve_app
from .helpers.uvicorn_server import uvicorn_server

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")

BOUND = 2.0
"""Seconds for anything to follow a disconnect: the upstream connection closing, the
app's request ending, the server stopping. Generous on a loaded 2-core machine; the
failures it catches take `GRACE` seconds or forever."""

GRACE = 10
"""Seconds a stopping server waits for requests still running before it cancels them."""

Kind = Literal["fastapi", "aiohttp"]
Behaviour = Literal["hang", "two_tokens_then_hang", "answer"]

HEAD, BACKUP = "gpt-head", "gpt-backup"
SPEC = f"up/{HEAD},up/{BACKUP}"
"""Two targets on the one upstream: a failover for nobody would show as a request of the
backup (and a failure recorded against the head)."""


# --------------------------------------------------------------------------- the upstream


class Exchange:
    """One request the upstream received."""

    def __init__(self, body: Any) -> None:
        self.body = body
        self.closed = asyncio.Event()
        """Set when the app's connection closed while the reply was unfinished."""
        self.finished = False
        """The whole reply was sent."""

    @property
    def model(self) -> str:
        """The model the request named."""
        return str(self.body["model"])


class Upstream:
    """An OpenAI-compatible chat server: each model gets a `Behaviour`, every request is
    recorded, and a request whose client hangs up is marked `closed`.

    It runs with handler cancellation, so a handler that waits (silent) still notices
    its connection closing: aiohttp cancels it then.
    """

    def __init__(self, behaviours: Mapping[str, Behaviour]) -> None:
        self.behaviours = dict(behaviours)
        self.exchanges: list[Exchange] = []
        self._arrivals: asyncio.Queue[Exchange] = asyncio.Queue()

    async def arrival(self) -> Exchange:
        """The next request to arrive (within `BOUND`)."""
        with anyio.fail_after(BOUND):
            return await self._arrivals.get()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        """Serve on 127.0.0.1; yield the DSN of a provider pointed here."""
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        async with serve_app(app, handler_cancellation=True, shutdown_timeout=0.05) as url:
            yield "openai+" + url + "/v1"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        exchange = Exchange(await request.json())
        self.exchanges.append(exchange)
        self._arrivals.put_nowait(exchange)
        behaviour = self.behaviours.get(exchange.model, "answer")
        reply: web.StreamResponse
        try:
            if behaviour == "hang":
                await anyio.sleep_forever()  # no headers, ever
            if not exchange.body.get("stream"):
                reply = web.json_response(_completion(exchange.model, "Hello there"))
            else:
                reply = await self._stream(request, exchange.model, behaviour)
        except asyncio.CancelledError:
            exchange.closed.set()  # the connection closed while the handler waited
            raise
        except ConnectionResetError:
            exchange.closed.set()  # the connection closed under a write
            return web.Response()
        exchange.finished = True
        return reply

    async def _stream(
        self, request: web.Request, model: str, behaviour: Behaviour
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(_chunk(model, {"role": "assistant", "content": ""}))
        for token in ("one ", "two "):
            await response.write(_chunk(model, {"content": token}))
        if behaviour == "two_tokens_then_hang":
            await anyio.sleep_forever()
        await response.write(_chunk(model, {}, finish="stop"))
        await response.write(_sse({"id": "c", "model": model, "choices": [], "usage": USAGE}))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


USAGE = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}


def _completion(model: str, text: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": text}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    return {
        "id": "c",
        "object": "chat.completion",
        "model": model,
        "choices": [choice],
        "usage": USAGE,
    }


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return _sse({"id": "c", "model": model, "choices": [choice]})


def _sse(data: Any) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


# --------------------------------------------------------------------------- the apps


class Requests:
    """Knows when every HTTP request an app received has ended (its handler returned,
    raised or was cancelled): an ASGI wrapper, or an aiohttp middleware."""

    def __init__(self) -> None:
        self.running = 0
        self.idle = asyncio.Event()
        self.idle.set()

    async def ended(self) -> None:
        """Wait (within `BOUND`) until no request is running."""
        with anyio.fail_after(BOUND):
            await self.idle.wait()

    @contextlib.contextmanager
    def _one(self) -> Iterator[None]:
        self.running += 1
        self.idle.clear()
        try:
            yield
        finally:
            self.running -= 1
            if not self.running:
                self.idle.set()

    def asgi(self, app: Any) -> Callable[..., Awaitable[None]]:
        """`app` wrapped: its HTTP requests are counted."""

        async def tracked(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)  # the lifespan
                return
            with self._one():
                await app(scope, receive, send)

        return tracked

    @web.middleware
    async def aiohttp(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """The aiohttp middleware counting requests."""
        with self._one():
            response: web.StreamResponse = await handler(request)
            return response


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The process environment, without any `LLM_<NAME>` DSN or spec from outside."""
    for name in list(os.environ):
        if name.startswith("LLM_") or name == fastapi_app.SPEC_VARIABLE:
            monkeypatch.delenv(name)
    return monkeypatch


class Served:
    """A running app: its base URL, its requests, and the time its server took to stop
    (set when the `serving()` block has ended)."""

    def __init__(self, url: str, requests: Requests) -> None:
        self.url = url
        self.requests = requests
        self.shutdown: float | None = None


@asynccontextmanager
async def serving(kind: Kind, asgi_app: Any = None) -> AsyncIterator[Served]:
    """Serve the example app of `kind` (or `asgi_app` under uvicorn) as it is deployed."""
    requests = Requests()
    if kind == "fastapi":
        app = asgi_app if asgi_app is not None else fastapi_app.create_app()
        server = uvicorn_server(requests.asgi(app), shutdown_timeout=GRACE)
    else:
        aiohttp_example = aiohttp_app.create_app()
        aiohttp_example.middlewares.insert(0, requests.aiohttp)
        server = serve_app(aiohttp_example, handler_cancellation=True, shutdown_timeout=GRACE)
    async with server as url:
        served = Served(url, requests)
        yield served
        stopping = time.monotonic()
    served.shutdown = time.monotonic() - stopping


async def post_and_leave(url: str, path: str, payload: Any, upstream: Upstream) -> Exchange:
    """POST `payload`, wait until the upstream has the app's request, then hang up
    without reading anything (as `curl --max-time` does); the upstream's exchange."""
    host, _, port = url.removeprefix("http://").partition(":")
    body = json.dumps(payload).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    _, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(head + body)
        await writer.drain()
        return await upstream.arrival()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def health_targets(url: str) -> Any:
    """The app's `/health` targets (the registry's `health.snapshot()`, as JSON)."""
    async with aiohttp.ClientSession(url) as http, http.get("/health") as reply:
        assert reply.status == 200
        return (await reply.json())["targets"]


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every ERROR record (a server's "Exception in ASGI application", say)."""
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


async def closed_in_time(exchange: Exchange) -> None:
    """The app's connection to the upstream closes within `BOUND`."""
    with anyio.fail_after(BOUND):
        await exchange.closed.wait()


# --------------------------------------------------------------------------- the example apps


@pytest.mark.parametrize("kind", ["fastapi", "aiohttp"])
@pytest.mark.parametrize("path", ["/ask", "/stream"])
async def test_a_client_that_leaves_before_the_answer_cancels_the_call(
    kind: Kind, path: str, environment: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The head target hangs; the client gives up before any token. The call is
    cancelled at once: no failover, no failure counted, and the server stops promptly."""
    upstream = Upstream({HEAD: "hang"})
    async with upstream.running() as dsn:
        environment.setenv("LLM_UP", dsn)
        environment.setenv(fastapi_app.SPEC_VARIABLE, SPEC)
        async with serving(kind) as app:
            exchange = await post_and_leave(app.url, path, {"prompt": "Hello"}, upstream)
            await closed_in_time(exchange)
            await app.requests.ended()
            assert await health_targets(app.url) == {}
        assert app.shutdown is not None and app.shutdown < BOUND

    assert [exchange.model for exchange in upstream.exchanges] == [HEAD]
    assert exchange.body.get("stream", False) is (path == "/stream")
    assert errors_logged(caplog) == []


@pytest.mark.parametrize("kind", ["fastapi", "aiohttp"])
async def test_a_client_that_leaves_mid_stream_closes_the_upstream_stream(
    kind: Kind, environment: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The client reads two tokens and hangs up while the upstream is silent: the
    upstream stream is closed at once, and nothing is counted or restarted."""
    upstream = Upstream({HEAD: "two_tokens_then_hang"})
    async with upstream.running() as dsn:
        environment.setenv("LLM_UP", dsn)
        environment.setenv(fastapi_app.SPEC_VARIABLE, SPEC)
        async with serving(kind) as app:
            timeout = aiohttp.ClientTimeout(total=10, sock_read=BOUND)
            async with (
                aiohttp.ClientSession(app.url, timeout=timeout) as http,
                http.post("/stream", json={"prompt": "Count"}) as reply,
            ):
                assert reply.status == 200
                assert await read_texts(reply, 2) == ["one ", "two "]
                reply.close()  # hang up, as a browser tab that closes
            (exchange,) = upstream.exchanges
            await closed_in_time(exchange)
            await app.requests.ended()
            assert await health_targets(app.url) == {}
        assert app.shutdown is not None and app.shutdown < BOUND

    assert [exchange.model for exchange in upstream.exchanges] == [HEAD]
    assert not exchange.finished
    assert errors_logged(caplog) == []


async def read_texts(reply: aiohttp.ClientResponse, count: int) -> list[str]:
    """The texts of the next `count` text events of an SSE reply."""
    texts: list[str] = []
    while len(texts) < count:
        raw = await reply.content.readline()
        assert raw, f"the body ended after {texts}"
        line = raw.decode().rstrip("\r\n")
        if line.startswith("data: "):
            texts.append(json.loads(line.removeprefix("data: "))["text"])
    return texts


# --------------------------------------------------------------------------- the helper in an app


class Prompt(BaseModel):
    """A request body."""

    prompt: str


def helper_app(registry: Registry, log: list[str], *, middleware: bool = False) -> FastAPI:
    """A FastAPI app whose registry belongs to the test, so the test reads its health
    directly; `log` records how the endpoints ended. `middleware`: with an
    `@app.middleware("http")` function, whose `BaseHTTPMiddleware` wraps `receive`."""
    app = FastAPI()
    if middleware:

        @app.middleware("http")
        async def passing(request: Request, call_next: Any) -> Any:
            return await call_next(request)

    @app.exception_handler(ClientDisconnectedError)
    async def gone(request: Request, exc: ClientDisconnectedError) -> JSONResponse:
        log.append("client disconnected")
        return JSONResponse({"error": "client_disconnected"}, status_code=499)

    @app.post("/ask")
    async def ask(body: Prompt, request: Request) -> dict[str, str]:
        async with cancel_on_disconnect(request):
            response = await registry.parse(SPEC).generate(body.prompt)
        log.append("answered")
        return {"text": response.text, "model": response.model}

    @app.post("/echo")
    async def echo(request: Request) -> Any:
        # No body parameter: FastAPI has not read the body when the endpoint starts.
        async with cancel_on_disconnect(request):
            await anyio.lowlevel.checkpoint()
        return {"body": await request.json()}

    @app.get("/ping")
    async def ping(request: Request) -> dict[str, str]:
        async with cancel_on_disconnect(request):
            await anyio.lowlevel.checkpoint()
        return {"pong": "yes"}

    @app.post("/late-stream/{generator}")
    async def late_stream(generator: str, body: Prompt, request: Request) -> StreamingResponse:
        """The client leaves after the stream opened, before the response starts."""
        opened = await registry.parse(SPEC).stream(body.prompt)
        with contextlib.suppress(ClientDisconnectedError):
            async with cancel_on_disconnect(request):
                await anyio.sleep_forever()  # until the client has left

        async def events() -> AsyncIterator[str]:
            log.append("generator started")
            async with opened:
                async for event in opened:
                    if isinstance(event, TextDelta):
                        yield f"data: {event.text}\n\n"

        async def never_opens() -> AsyncIterator[str]:
            # Stands for a generator cancelled before it reached its `async with`.
            log.append("generator started")
            await anyio.sleep_forever()
            yield ""

        return StreamingResponse(
            events() if generator == "events" else never_opens(),
            media_type="text/event-stream",
            background=BackgroundTask(opened.aclose),
        )

    return app


class HelperService:
    """`helper_app` running: the app, its upstream, its registry, and its endpoints' log."""

    def __init__(self, app: Served, upstream: Upstream, registry: Registry, log: list[str]):
        self.app = app
        self.upstream = upstream
        self.registry = registry
        self.log = log


@asynccontextmanager
async def helper_service(
    behaviours: Mapping[str, Behaviour], *, middleware: bool = False
) -> AsyncIterator[HelperService]:
    """The upstream, a registry on it (owned by the test) and `helper_app` under uvicorn."""
    upstream = Upstream(behaviours)
    log: list[str] = []
    async with (
        upstream.running() as dsn,
        Registry(env={"LLM_UP": dsn}) as registry,
        serving("fastapi", helper_app(registry, log, middleware=middleware)) as app,
    ):
        yield HelperService(app, upstream, registry, log)
    assert app.shutdown is not None and app.shutdown < BOUND


@pytest.mark.parametrize("middleware", [False, True], ids=["plain", "base_http_middleware"])
async def test_the_helper_cancels_a_call_and_counts_nothing(
    middleware: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The endpoint's `cancel_on_disconnect` block is cancelled when the client leaves:
    the upstream connection closes, the block raises `ClientDisconnectedError`, and the
    registry's health has nothing to say. Also behind Starlette's `BaseHTTPMiddleware`."""
    async with helper_service({HEAD: "hang"}, middleware=middleware) as service:
        url = service.app.url
        exchange = await post_and_leave(url, "/ask", {"prompt": "Hello"}, service.upstream)
        await closed_in_time(exchange)
        await service.app.requests.ended()
        assert await service.registry.health.snapshot() == {}
        assert service.log == ["client disconnected"]

    assert [exchange.model for exchange in service.upstream.exchanges] == [HEAD]
    assert errors_logged(caplog) == []


@pytest.mark.parametrize("generator", ["events", "never_opens"])
async def test_a_stream_whose_client_left_before_the_response_is_closed(
    generator: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that leaves between the opening of the stream and the start of the
    response. Starlette sees the disconnect at once and cancels the response; whether
    its event generator got to its `async with` ("events") or not ("never_opens", as
    when it is cancelled before its first step), the upstream stream is closed:
    `BackgroundTask(opened.aclose)` runs after the cancelled response."""
    async with helper_service({HEAD: "two_tokens_then_hang"}) as service:
        path = f"/late-stream/{generator}"
        exchange = await post_and_leave(service.app.url, path, {"prompt": "Hi"}, service.upstream)
        await closed_in_time(exchange)
        await service.app.requests.ended()
        assert await service.registry.health.snapshot() == {}

    # Starlette may cancel the generator before its first step.
    assert service.log in ([], ["generator started"])
    assert [exchange.model for exchange in service.upstream.exchanges] == [HEAD]
    assert errors_logged(caplog) == []


async def test_a_call_that_completes_is_answered() -> None:
    """With the client still there, the block completes and the answer goes out."""
    async with (
        helper_service({}) as service,
        aiohttp.ClientSession(service.app.url) as http,
        http.post("/ask", json={"prompt": "Hello"}) as reply,
    ):
        assert reply.status == 200
        assert await reply.json() == {"text": "Hello there", "model": f"up/{HEAD}"}
        assert service.log == ["answered"]


async def test_the_request_body_stays_readable() -> None:
    """Listening on `receive` takes nothing from the body: given the `Request`, the
    helper reads it first and the request keeps it. A GET with no body works too."""
    payload = {"text": "x" * 100_000}  # more than one `http.request` message
    async with (
        helper_service({}) as service,
        aiohttp.ClientSession(service.app.url) as http,
    ):
        async with http.post("/echo", json=payload) as reply:
            assert reply.status == 200
            assert await reply.json() == {"body": payload}
        async with http.get("/ping") as reply:
            assert reply.status == 200
            assert await reply.json() == {"pong": "yes"}


# --------------------------------------------------------------------------- the contract


class Channel:
    """A scripted ASGI `receive` channel: `put()` a message for the listener to read."""

    def __init__(self, *messages: Mapping[str, Any]) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[Mapping[str, Any]](16)
        for message in messages:
            self.put(message)

    def put(self, message: Mapping[str, Any]) -> None:
        """Queue `message`."""
        self._send.send_nowait(message)

    async def receive(self) -> Mapping[str, Any]:
        """The ASGI `receive` callable."""
        return await self._receive.receive()


@contextlib.contextmanager
def channel(*messages: Mapping[str, Any]) -> Iterator[Channel]:
    """A `Channel` holding `messages`, closed after the block."""
    scripted = Channel(*messages)
    with scripted._send, scripted._receive:
        yield scripted


DISCONNECT = {"type": "http.disconnect"}
END_OF_BODY = {"type": "http.request", "body": b"", "more_body": False}


async def test_a_disconnect_cancels_the_block_and_raises() -> None:
    reached: list[str] = []
    with channel(END_OF_BODY) as asgi, pytest.raises(ClientDisconnectedError):
        async with cancel_on_disconnect(asgi.receive):
            reached.append("started")
            asgi.put(DISCONNECT)
            await anyio.sleep_forever()
    assert reached == ["started"]


async def test_a_disconnect_before_the_block_cancels_it_at_its_first_await() -> None:
    with channel(DISCONNECT) as asgi, pytest.raises(ClientDisconnectedError):
        async with cancel_on_disconnect(asgi.receive):
            await anyio.sleep_forever()


async def test_a_block_that_completes_stops_listening() -> None:
    with channel() as asgi:
        async with cancel_on_disconnect(asgi.receive):
            await anyio.lowlevel.checkpoint()
        # The listener is gone (`no_leaked_tasks` checks it): the next message stays.
        asgi.put(DISCONNECT)
        assert await asgi.receive() == DISCONNECT


async def test_the_blocks_own_errors_propagate_unwrapped() -> None:
    """Not wrapped in an exception group by the task group inside (a
    `ChainExhaustedError`, itself an exception group, stays what it is)."""
    error = ChainExhaustedError([TargetFailure("p/m", TimeoutError("no answer"))])
    with channel() as asgi, pytest.raises(ChainExhaustedError) as caught:
        async with cancel_on_disconnect(asgi.receive):
            raise error
    assert caught.value is error


async def test_a_cancellation_from_outside_is_not_a_disconnect() -> None:
    with channel() as asgi, anyio.move_on_after(0) as scope:
        async with cancel_on_disconnect(asgi.receive):
            await anyio.sleep_forever()
    assert scope.cancelled_caught


async def test_a_bare_receive_with_an_unread_body_is_an_error() -> None:
    """The listener would have taken part of the body: say so, loudly."""
    part = {"type": "http.request", "body": b'{"prompt"', "more_body": True}
    with channel(part) as asgi, pytest.raises(RuntimeError, match="read the body first"):
        async with cancel_on_disconnect(asgi.receive):
            await anyio.sleep_forever()


async def test_a_broken_receive_channel_is_raised() -> None:
    async def broken() -> Mapping[str, Any]:
        raise RuntimeError("Receive channel has not been made available")

    with pytest.raises(RuntimeError, match="not been made available"):
        async with cancel_on_disconnect(broken):
            await anyio.sleep_forever()


async def test_anything_else_is_refused() -> None:
    with pytest.raises(TypeError, match="receive callable"):
        async with cancel_on_disconnect(object()):  # type: ignore[arg-type]
            pass


def test_it_works_under_trio() -> None:
    async def main() -> None:
        with channel(END_OF_BODY) as asgi, pytest.raises(ClientDisconnectedError):
            async with cancel_on_disconnect(asgi.receive):
                asgi.put(DISCONNECT)
                await trio.sleep_forever()

    anyio.run(main, backend="trio")
