"""What a provider gets from its Registry: the shared HTTP session, the clock, the env."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from contextlib import suppress
from typing import TYPE_CHECKING, final

import anyio.to_thread
import attrs

from ._backend import running_loop
from ._clock import Clock
from ._exceptions import ConfigurationError

if TYPE_CHECKING:
    import asyncio

    import aiohttp

    from ._dsn import DSN
    from ._protocols import Provider

__all__ = ["EnvLookup", "HTTPSessionHolder", "ProviderContext", "SchemeFactory"]

EnvLookup = Callable[[str], "str | None"]
"""Reads one environment variable (`os.environ.get` by default)."""


@final
class HTTPSessionHolder:
    """Owns one `aiohttp.ClientSession` per Registry, created on first use in the running loop.

    A caller's own session is borrowed: used, never closed. Once closed, a holder stays
    closed (reopening would silently leak a new session past the owner's `aclose()`).

    A session belongs to one asyncio event loop (aiohttp binds its connections, futures
    and timers to it). The holder remembers that loop (a borrowed session's own, or the
    one it created its session in) and refuses a use from any other loop or thread with
    a `ConfigurationError`, before any I/O: one Registry per event loop. Outside asyncio
    (under trio) `get()` raises a `ConfigurationError` too: aiohttp needs asyncio.

    A session the holder created is also closed when its loop ends (`asyncio.run()`
    returning) with the holder still open, so that a Registry left open leaks no
    connection; the holder stays bound to that loop.
    """

    __slots__ = ("_borrowed", "_closed", "_loop", "_session", "_watch")

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self._session = session
        self._borrowed = session is not None
        self._closed = False
        # The loop the session belongs to; None until there is a session (or when a
        # borrowed object does not say, then the loop of its first use).
        self._loop = _loop_of(session)
        self._watch: AsyncGenerator[None, None] | None = None

    def get(self) -> aiohttp.ClientSession:
        """The session, creating it on first use (must be called inside the event loop).

        Raises:
            ConfigurationError: the holder was closed; the session belongs to another event
                loop; or no asyncio event loop is running (trio): aiohttp needs asyncio.
        """
        loop = running_loop()
        if loop is None:
            raise ConfigurationError(_NOT_ASYNCIO)
        session = self._session
        # The hot path (every request): one identity comparison.
        if loop is self._loop and session is not None:
            return session
        return self._first_use(loop)

    def _first_use(self, loop: asyncio.AbstractEventLoop) -> aiohttp.ClientSession:
        """`get()` when the session is missing or not known to belong to `loop`."""
        if self._closed:
            raise ConfigurationError("the Registry was closed; create a new one")
        session = self._session
        if session is not None:
            if self._loop is not None:
                raise ConfigurationError(_BORROWED_ELSEWHERE if self._borrowed else _ELSEWHERE)
            self._loop = loop  # a borrowed object that does not tell its loop: trust it once
            return session
        import aiohttp  # deferred: the fake provider and pure parsing never need it

        # No total timeout: aiohttp's default 300 s would cut long streams. Providers set
        # their own connect, first-event and idle timeouts per request.
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        self._session, self._loop = session, loop
        self._watch = _close_when_the_loop_ends(session)
        return session

    @property
    def closed(self) -> bool:
        """True once `aclose()` ran."""
        return self._closed

    async def aclose(self) -> None:
        """Close the session if we created it. Idempotent.

        Await it in the loop that used the session. From another loop it still closes the
        session: on the session's own loop when that one runs in another thread, here
        when it is closed (then aiohttp touches nothing of it).

        Raises:
            ConfigurationError: the session's loop is neither this one, nor running, nor
                closed (a stopped loop): close the holder in that loop.
        """
        if self._closed:
            return
        session = None if self._borrowed else self._session
        owner = self._loop
        handover = None if session is None or owner is None else _closing_loop(owner)
        self._closed = True
        self._session = self._loop = None
        watch, self._watch = self._watch, None
        if session is None:
            return
        if handover is None:
            await session.close()
        else:
            # aiohttp's transports are not thread-safe: their own loop closes them.
            import asyncio  # imported already: a session exists

            done = asyncio.run_coroutine_threadsafe(session.close(), handover)
            await anyio.to_thread.run_sync(done.result)
        if watch is not None:
            await watch.aclose()  # the session is closed: it finishes without awaiting


_ELSEWHERE = (
    "this Registry's HTTP session belongs to another event loop (a previous asyncio.run(), "
    "or another thread's loop): aiohttp sessions cannot move between loops. Use one "
    "Registry per event loop: create it inside the loop that uses it (e.g. in the "
    "service's lifespan) and close it there"
)
_BORROWED_ELSEWHERE = (
    "the aiohttp.ClientSession given as Registry(session=...) belongs to another event "
    "loop: aiohttp sessions cannot move between loops. Create the session and the "
    "Registry inside the loop that uses them (one Registry per event loop, e.g. in the "
    "service's lifespan)"
)
_NOT_ASYNCIO = (
    "the HTTP providers need asyncio (they use aiohttp), but no asyncio event loop is "
    "running (trio?): run this call under asyncio, e.g. anyio.run(..., backend='asyncio'); "
    "only the built-in 'fake' provider works on other event loops"
)


def _close_when_the_loop_ends(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    """A started async generator that closes `session` when the running loop ends.

    asyncio's only hook at a loop's end: `asyncio.run()` (and `asyncio.Runner`, which
    pytest-asyncio uses) call `loop.shutdown_asyncgens()` before closing the loop, and
    that closes every async generator first iterated in it, in that loop. Started here
    (synchronously, to its `yield`), this one then closes the session there. If the
    holder is garbage-collected first, asyncio's finalizer closes it in the loop too.
    """

    async def watch() -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            if not session.closed:
                await session.close()

    generator = watch()
    with suppress(StopIteration):  # it stops at its `yield`: the awaitable "returns"
        generator.asend(None).send(None)
    return generator


def _loop_of(session: aiohttp.ClientSession | None) -> asyncio.AbstractEventLoop | None:
    """The loop a borrowed session was created in (aiohttp keeps it as `_loop`; its
    public `loop` property is deprecated), or None when the object does not say."""
    import asyncio  # imported already: a loop runs

    loop = getattr(session, "_loop", None)
    return loop if isinstance(loop, asyncio.AbstractEventLoop) else None


def _closing_loop(owner: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop | None:
    """Where a session of loop `owner` must be closed: None for here, or `owner` (running
    in another thread)."""
    running = running_loop()
    if owner is running or owner.is_closed():
        # Here; a closed loop's connector closes without touching the loop.
        return None
    if owner.is_running():
        return owner
    raise ConfigurationError(
        "the Registry's HTTP session belongs to an event loop that is stopped but not "
        "closed: close the Registry in that loop"
    )


@final
@attrs.frozen
class ProviderContext:
    """Handed to every scheme factory: shared resources of the Registry."""

    http: HTTPSessionHolder
    """The Registry's HTTP session (call `http.get()` at request time, not at construction)."""
    clock: Clock
    """The Registry's clock (the fake provider sleeps on it)."""
    env: EnvLookup
    """The Registry's environment lookup (for API keys)."""


SchemeFactory = Callable[[str, "DSN", ProviderContext], "Provider"]
"""Builds a provider from a DSN: `factory(name, dsn, context) -> Provider`.

`name` is the registry name the provider will be registered under ("m1" for `LLM_M1`).
"""
