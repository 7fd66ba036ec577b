"""Real local HTTP servers for transport and fault tests (aiohttp.web on 127.0.0.1).

`serve(routes)` starts an `aiohttp.web.AppRunner` + `TCPSite` on an ephemeral port and
yields its base URL ("http://127.0.0.1:PORT"); leaving the block stops the server.
`closed_port_url()` gives a URL nothing listens on (connection refused).

`local_server(http)` is the server provider tests share: its routes are set by the test
(`server.routes[path] = handler`), it records every request, and when the test leaves it
without an error it asserts that `http`'s session has no connection checked out. `play()`
writes a body in N-byte pieces; `respond()` answers at once.

Fault handlers misbehave on purpose: they abort the TCP connection before the headers,
in the middle of a body, stall after the headers, or lie about the Content-Length.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Literal

import anyio
import attrs
from aiohttp import web

from majordomo_async import HTTPSessionHolder

__all__ = [
    "Handler",
    "LocalServer",
    "Recorded",
    "abort_connection",
    "acquired_connections",
    "closed_port_url",
    "local_server",
    "play",
    "raw_server",
    "respond",
    "serve",
    "serve_app",
    "sleep_forever",
    "unaccepting_server",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Handlers that stall forever are cancelled this long after the test leaves `serve()`.
_SHUTDOWN_TIMEOUT = 0.05


@asynccontextmanager
async def serve(routes: Mapping[str, Handler]) -> AsyncIterator[str]:
    """Serve `routes` ({path: handler}, any method) on 127.0.0.1; yield the base URL."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    async with serve_app(app, shutdown_timeout=_SHUTDOWN_TIMEOUT) as url:
        yield url


@asynccontextmanager
async def serve_app(app: web.Application, **runner_options: Any) -> AsyncIterator[str]:
    """Serve `app` on 127.0.0.1 (a free port); yield the base URL.

    `runner_options` go to `web.AppRunner` (`shutdown_timeout`, `handler_cancellation`).
    """
    runner = web.AppRunner(app, access_log=None, **runner_options)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def closed_port_url() -> str:
    """A base URL on a port that was just bound and closed: connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@contextmanager
def unaccepting_server() -> Iterator[str]:
    """A base URL whose listener never accepts and whose backlog is full.

    Linux drops further SYNs once the accept queue is full, so a connect attempt hangs
    until the client's connect timeout fires: a real connect timeout on 127.0.0.1.
    """
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(4):  # fill the accept queue (backlog 0 still queues one or two)
            filler = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        yield f"http://127.0.0.1:{port}"


@asynccontextmanager
async def raw_server(reply: bytes) -> AsyncIterator[str]:
    """A TCP server that answers any request with `reply` (raw bytes), then closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(reply)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


def abort_connection(request: web.Request) -> None:
    """Drop the TCP connection at once (RST where the OS allows), mid-anything."""
    transport = request.transport
    assert transport is not None
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # SO_LINGER with a zero timeout turns close() into a reset rather than a FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def acquired_connections(session: object) -> int:
    """How many connections `session`'s connector has handed out and not got back.

    aiohttp has no public counter: `BaseConnector._acquired` is the set of protocols
    currently checked out (aiohttp 3.10 - 3.14). Zero after a call means nothing leaked.
    """
    connector = getattr(session, "connector", None)
    assert connector is not None, "the session has no connector (closed?)"
    acquired = connector._acquired
    return len(acquired)


async def sleep_forever() -> None:
    """Stall a handler until the server shuts down and cancels it."""
    await anyio.sleep_forever()


# --------------------------------------------------------------------------- provider tests


@attrs.frozen
class Recorded:
    """One request a `LocalServer` received."""

    method: str
    path: str
    """The path, without the query."""
    query: str
    """The query string, without the "?"."""
    headers: Mapping[str, str]
    body: bytes
    peer: Any
    """The client's (host, port): the same for two requests on one connection."""

    def json(self) -> Any:
        """The body, decoded as JSON (None for an empty body)."""
        return json.loads(self.body) if self.body else None


@attrs.define(eq=False)
class LocalServer:
    """A running local server whose routes the test sets; see `local_server()`."""

    url: str
    """The base URL, "http://127.0.0.1:PORT"."""
    routes: dict[str, Handler] = attrs.Factory(dict)
    """Handlers by exact path (any method); set them in the test."""
    handler: Handler | None = None
    """Answers every path that `routes` does not name."""
    requests: list[Recorded] = attrs.Factory(list)
    """Every request received, in order."""

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """Record `request`, then hand it to its route, the fallback handler, or 404."""
        transport = request.transport
        self.requests.append(
            Recorded(
                request.method,
                request.path,
                request.query_string,
                dict(request.headers),
                await request.read(),
                transport.get_extra_info("peername") if transport is not None else None,
            )
        )
        handler = self.routes.get(request.path, self.handler)
        if handler is None:
            return web.Response(status=404, text=f"no route for {request.path} in this test")
        return await handler(request)


@asynccontextmanager
async def local_server(http: HTTPSessionHolder | None = None) -> AsyncIterator[LocalServer]:
    """A `LocalServer` on 127.0.0.1 for one test; stopped when the block ends.

    When the block ends without an error, `http`'s session (if it has one) must have no
    connection checked out: every stream was closed, every body read or dropped.
    """
    server = LocalServer("")
    async with serve({"/{path:.*}": server.dispatch}) as url:
        server.url = url
        yield server
        if http is not None and not http.closed:
            leaked = acquired_connections(http.get())
            assert leaked == 0, f"{leaked} connection(s) left checked out by the test"


def play(
    body: bytes,
    *,
    chunk: int = 7,
    status: int = 200,
    content_type: str = "text/event-stream",
    headers: Mapping[str, str] | None = None,
    end: Literal["eof", "stall", "close"] = "eof",
    end_after: float = 0.0,
) -> Handler:
    """A handler that writes `body` in `chunk`-byte pieces, letting the loop run between.

    Args:
        body: the whole response body.
        chunk: bytes per write (each write may reach the client as its own chunk).
        status: the response status.
        content_type: the Content-Type header.
        headers: more response headers.
        end: after the body, "eof" ends it properly (after `end_after` seconds),
            "stall" writes nothing more until the server stops, "close" closes the
            connection without the chunked terminator (a cut body).
        end_after: with "eof", seconds to wait before ending the body.
    """

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            status=status, headers={"Content-Type": content_type, **(headers or {})}
        )
        await response.prepare(request)
        for start in range(0, len(body), chunk):
            await response.write(body[start : start + chunk])
            await asyncio.sleep(0)
        if end == "stall":
            await sleep_forever()
        elif end == "close":
            assert request.transport is not None
            request.transport.close()  # sends what was written, then FIN: no terminator
        else:
            await anyio.sleep(end_after)
            await response.write_eof()
        return response

    return handler


def respond(
    status: int,
    body: Any = b"",
    *,
    content_type: str = "application/json",
    headers: Mapping[str, str] | None = None,
) -> Handler:
    """A handler that answers `status` with `body` at once.

    `body` is sent as is (bytes), UTF-8 encoded (str), or as JSON (anything else).
    """
    if isinstance(body, str):
        data = body.encode()
    elif isinstance(body, bytes):
        data = body
    else:
        data = json.dumps(body).encode()

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            status=status, body=data, headers={"Content-Type": content_type, **(headers or {})}
        )

    return handler
