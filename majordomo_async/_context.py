"""What a provider gets from its Registry: the shared HTTP session, the clock, the env."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, final

import attrs

from ._clock import Clock
from ._exceptions import ConfigurationError

if TYPE_CHECKING:
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
    """

    __slots__ = ("_borrowed", "_closed", "_session")

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self._session = session
        self._borrowed = session is not None
        self._closed = False

    def get(self) -> aiohttp.ClientSession:
        """The session, creating it on first use (must be called inside the event loop)."""
        session = self._session
        if session is not None and not self._closed:
            return session
        if self._closed:
            raise ConfigurationError("the Registry was closed; create a new one")
        import aiohttp  # deferred: the fake provider and pure parsing never need it

        # No total timeout: aiohttp's default 300 s would cut long streams. Providers set
        # their own connect, first-event and idle timeouts per request.
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        self._session = session
        return session

    @property
    def closed(self) -> bool:
        """True once `aclose()` ran."""
        return self._closed

    async def aclose(self) -> None:
        """Close the session if we created it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        session, self._session = self._session, None
        if session is not None and not self._borrowed:
            await session.close()


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
