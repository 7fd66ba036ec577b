"""anyio's primitives on asyncio, without its per-call event-loop lookup.

The library runs on asyncio (its HTTP providers do; the fake provider also runs on
trio). anyio's module-level helpers
(`anyio.CancelScope()`, `anyio.current_time()`, `anyio.lowlevel.checkpoint_if_cancelled()`)
ask sniffio which event loop is running on every call, about 1.3 µs each (timeit on the
benchmark machine: a deadline scope 4.6 µs instead of 1.7 µs, the checkpoint 2.5 µs instead
of 1.25 µs). The hot paths call the asyncio backend's own methods instead: the same cancel
scopes, deadlines and checkpoint, found once.

Finding the backend uses an anyio internal. Off asyncio (trio), or should a future anyio
move that internal, the public helpers serve instead: slower, never wrong. The lookup is
lazy, so importing the library does not import anyio's backend.

Nor does it import asyncio (about 30 ms of `import majordomo_async`): no asyncio loop can
run before asyncio is imported, so `running_loop()` looks for the module only until it
appears in `sys.modules`.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, Protocol

import anyio
import anyio.lowlevel

if TYPE_CHECKING:
    from asyncio import AbstractEventLoop

__all__ = ["Primitives", "primitives", "running_loop"]


class Primitives(Protocol):
    """The anyio primitives the hot paths use (anyio's `AsyncBackend` has them all)."""

    def create_cancel_scope(
        self, *, deadline: float = ..., shield: bool = ...
    ) -> anyio.CancelScope:
        """`anyio.CancelScope(deadline=..., shield=...)`."""
        ...

    def current_time(self) -> float:
        """`anyio.current_time()`."""
        ...

    def checkpoint_if_cancelled(self) -> Awaitable[None]:
        """`anyio.lowlevel.checkpoint_if_cancelled()`."""
        ...


class _Public:
    """The public helpers, for an anyio whose internals moved."""

    @staticmethod
    def create_cancel_scope(
        *, deadline: float = float("inf"), shield: bool = False
    ) -> anyio.CancelScope:
        return anyio.CancelScope(deadline=deadline, shield=shield)

    @staticmethod
    def current_time() -> float:
        return anyio.current_time()

    @staticmethod
    def checkpoint_if_cancelled() -> Awaitable[None]:
        return anyio.lowlevel.checkpoint_if_cancelled()


_PUBLIC: Final = _Public()
_found: Primitives | None = None
_get_running_loop: Callable[[], AbstractEventLoop | None] | None = None
"""asyncio's own `_get_running_loop`, once asyncio was imported (by anyone)."""


def running_loop() -> AbstractEventLoop | None:
    """The running asyncio event loop, or None: none runs here (or trio does)."""
    global _get_running_loop
    get = _get_running_loop
    if get is None:
        asyncio = sys.modules.get("asyncio")
        events = getattr(asyncio, "events", None)  # None: never (fully) imported
        if events is None:  # so no asyncio loop can be running
            return None
        get = _get_running_loop = events._get_running_loop
    return get()


def _find() -> Primitives:
    try:
        from anyio._core._eventloop import get_async_backend

        backend: Primitives = get_async_backend("asyncio")
    except (ImportError, AttributeError, TypeError):
        return _PUBLIC
    return backend


def primitives() -> Primitives:
    """anyio's primitives for the running loop: asyncio's backend, found on first use,
    or the public helpers when no asyncio loop runs (trio)."""
    global _found
    get = _get_running_loop  # `running_loop()` inlined: this runs on every call
    if (running_loop() if get is None else get()) is None:
        return _PUBLIC
    if _found is None:
        _found = _find()
    return _found
