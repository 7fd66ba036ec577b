"""Real local HTTP servers for transport and fault tests (aiohttp.web on 127.0.0.1).

`serve(routes)` starts an `aiohttp.web.AppRunner` + `TCPSite` on an ephemeral port and
yields its base URL ("http://127.0.0.1:PORT"); leaving the block stops the server.
`closed_port_url()` gives a URL nothing listens on (connection refused).

Fault handlers misbehave on purpose: they abort the TCP connection before the headers,
in the middle of a body, stall after the headers, or lie about the Content-Length.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager

import anyio
from aiohttp import web

__all__ = [
    "Handler",
    "abort_connection",
    "acquired_connections",
    "closed_port_url",
    "raw_server",
    "serve",
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
    runner = web.AppRunner(app, shutdown_timeout=_SHUTDOWN_TIMEOUT, access_log=None)
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
