"""The session holder: lazy, owned or borrowed, closed once."""

from __future__ import annotations

import aiohttp
import pytest

from majordomo_async import ConfigurationError, HTTPSessionHolder


async def test_owned_session_lifecycle() -> None:
    """Created on first get(), reused, closed by aclose(), never reopened."""
    holder = HTTPSessionHolder()
    session = holder.get()

    assert holder.get() is session
    assert not holder.closed
    await holder.aclose()
    await holder.aclose()

    assert session.closed and holder.closed
    with pytest.raises(ConfigurationError):
        holder.get()


async def test_unused_holder_closes_without_a_session() -> None:
    """Closing a holder that never made a session is fine (no I/O at construction)."""
    holder = HTTPSessionHolder()

    await holder.aclose()

    assert holder.closed


async def test_borrowed_session_is_not_closed() -> None:
    """A caller's session stays open after the holder closes."""
    async with aiohttp.ClientSession() as session:
        holder = HTTPSessionHolder(session)
        assert holder.get() is session
        await holder.aclose()
        assert not session.closed
