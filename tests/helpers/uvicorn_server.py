"""Run an ASGI app with uvicorn on 127.0.0.1, inside the test's event loop.

```python
async with uvicorn_server(app) as base_url:      # "http://127.0.0.1:PORT"
    ...                                           # the app's lifespan has started
# the server has stopped and the lifespan has shut down
```

The socket is bound before the server starts (`server.serve(sockets=[sock])`), so the
port is known without parsing logs. Readiness is an event set by `startup()`, not a
poll of `server.started`; stopping sets `should_exit` and awaits the serving task.

Stopping waits for the requests still running, at most `shutdown_timeout` seconds
(uvicorn's `timeout_graceful_shutdown`), then cancels them. A test that asserts a prompt
shutdown sets it well above its bound, so that a request left hanging shows as the
whole timeout rather than hiding under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

__all__ = ["uvicorn_server"]


class _Server(uvicorn.Server):
    """A uvicorn server that announces readiness and leaves signal handling to pytest."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        except SystemExit as exc:
            # uvicorn exits the process when the lifespan fails to start; in a test
            # that must be an ordinary error, not the end of the test session.
            raise RuntimeError("the app failed to start (see the log)") from exc
        self.ready.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Ctrl-C should stop pytest, not be swallowed by a server inside one test.
        yield


@asynccontextmanager
async def uvicorn_server(app: Any, *, shutdown_timeout: int = 2) -> AsyncIterator[str]:
    """Serve the ASGI `app` on an ephemeral 127.0.0.1 port; yield its base URL.

    `shutdown_timeout`: seconds the shutdown waits for running requests before it
    cancels them.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        http="h11",
        ws="none",
        lifespan="on",
        log_config=None,  # leave the process's logging configuration alone
        access_log=False,
        timeout_graceful_shutdown=shutdown_timeout,
    )
    server = _Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    ready = asyncio.create_task(server.ready.wait())
    try:
        await asyncio.wait({serving, ready}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            await serving  # raises why it stopped
            raise RuntimeError("uvicorn stopped before it was ready")
        yield f"http://127.0.0.1:{port}"
    finally:
        ready.cancel()
        server.should_exit = True
        try:
            await serving
        finally:
            sock.close()
