"""Cancel a service's model call when its HTTP client disconnects (ASGI: Starlette, FastAPI).

An ASGI server does not cancel a request's task when its client goes away: it only says
so on the request's `receive` channel, as an `http.disconnect` message, and nobody reads
that channel while an endpoint awaits a model. Starlette listens for it only while a
`StreamingResponse` is being sent. So without help, a call whose client left runs on for
nobody: a hung target holds the request (and the server's shutdown) until a time limit
ends it, and a failing target is retried, and benched, for nobody.

`cancel_on_disconnect(request)` listens on `receive` in a task of its own while the block
runs, and cancels the block when `http.disconnect` arrives. The cancellation reaches the
provider's read, which closes the upstream connection; a cancelled call is never counted
against a target's health. The block then raises `ClientDisconnectedError`.

```python
@app.post("/ask")
async def ask(body: Prompt, request: Request) -> Answer:
    async with cancel_on_disconnect(request):
        response = await model.generate(body.prompt)
    return Answer(text=response.text)
```

Reading `receive` takes messages off the channel, so the helper makes sure it only ever
reads the end of a request: given a Starlette `Request` (anything with `receive` and an
async `body()`), it reads the body first, which the request keeps (`await request.body()`
or `request.json()` still return it). FastAPI has read it already for an endpoint with a
body parameter. Given a bare `receive` callable, the body must have been read: a message
carrying body bytes is a programming error (the body would be lost), raised as
`RuntimeError`. Only `anyio` is used: no web framework is imported.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeAlias

import anyio

from ._exceptions import MajordomoError
from ._hooks import logger

__all__ = ["ClientDisconnectedError", "cancel_on_disconnect"]

Receive: TypeAlias = Callable[[], Awaitable[Mapping[str, Any]]]
"""An ASGI `receive` callable (Starlette's `request.receive`)."""


class _HasReceive(Protocol):
    """A request object exposing its ASGI `receive` channel (Starlette's `Request`)."""

    @property
    def receive(self) -> Receive:
        """The request's ASGI `receive` callable."""
        ...


class ClientDisconnectedError(MajordomoError):
    """The HTTP client disconnected, so `cancel_on_disconnect` cancelled the call.

    Not a failure of any target: nothing was counted against their health. Nobody is
    left to read a reply, so a service only needs to end the request quietly (the
    FastAPI example answers 499, "client closed request", which the server drops).
    """


@asynccontextmanager
async def cancel_on_disconnect(request: _HasReceive | Receive) -> AsyncIterator[None]:
    """Run the block; cancel it if the HTTP client disconnects meanwhile.

    Args:
        request: the Starlette/FastAPI `Request`, or a bare ASGI `receive` callable
            (once the request body has been read).

    Raises:
        ClientDisconnectedError: the client disconnected, and the block was cancelled.
        RuntimeError: with a bare `receive`, the request body had not been read yet.

    The block's own exceptions propagate unchanged (never wrapped in an exception
    group), and so does a cancellation from outside. A block that completes is not
    undone: if the client left just as it finished, the block's result stands and no
    error is raised (a reply is then sent to nobody, which ASGI servers ignore).
    """
    receive = await _receive_of(request)
    watch = _Watch()
    failure: Exception | None = None
    completed = False
    async with anyio.create_task_group() as group:
        group.start_soon(watch.run, receive, group.cancel_scope)
        try:
            yield
            completed = True
        except Exception as exc:
            # Re-raised below, outside the task group: raised inside it, it would come
            # out wrapped in an ExceptionGroup (and a `ChainExhaustedError` is one).
            failure = exc
        finally:
            group.cancel_scope.cancel()  # stop listening
    if failure is not None:
        raise failure
    if watch.error is not None:
        raise watch.error
    if not completed:
        # Only the listener cancels the block (a cancellation from outside does not
        # stop at this task group): the client is gone.
        raise ClientDisconnectedError("the client disconnected; its call was cancelled")


async def _receive_of(request: _HasReceive | Receive) -> Receive:
    """The `receive` callable of `request`, after reading a Starlette request's body."""
    receive: Receive | None = getattr(request, "receive", None)
    if receive is None:
        if not callable(request):
            raise TypeError(
                "cancel_on_disconnect() takes a Starlette/FastAPI Request or an ASGI "
                f"receive callable, not {type(request).__name__}"
            )
        return request
    body = getattr(request, "body", None)
    if callable(body):
        # Read (and keep on the request) whatever body is left, so that listening on
        # `receive` can never take a piece of it; a no-op once the body was read.
        await body()
    return receive


class _Watch:
    """The listener: reads `receive` until `http.disconnect`, then cancels the block."""

    __slots__ = ("disconnected", "error")

    def __init__(self) -> None:
        self.disconnected = False
        self.error: Exception | None = None

    async def run(self, receive: Receive, scope: anyio.CancelScope) -> None:
        try:
            while True:
                message = await receive()
                kind = message.get("type")
                if kind == "http.disconnect":
                    self.disconnected = True
                    logger.debug("the HTTP client disconnected: cancelling its call")
                    break
                if kind == "http.request" and (message.get("body") or message.get("more_body")):
                    self.error = RuntimeError(
                        "cancel_on_disconnect() read part of the request body from a bare "
                        "`receive`: read the body first, or pass the Request itself"
                    )
                    break
                # An empty, final `http.request` (a request with no body, once read):
                # nothing is lost; what comes next is the disconnect.
        except Exception as exc:
            # A broken channel: stop the block and say why, rather than let it run on
            # silently unwatched.
            self.error = exc
        scope.cancel()
