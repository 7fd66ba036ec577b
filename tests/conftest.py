"""Shared fixtures: a manual clock, a registry that is always closed, an HTTP session
holder with a local server that checks for leaked connections, and the Redis server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from majordomo_async import HTTPSessionHolder, ManualClock, Registry

from .helpers.redis_server import RedisServer, required, unavailable
from .helpers.servers import LocalServer, local_server


@pytest.fixture
def clock() -> ManualClock:
    """A clock that moves only when told (sleeps jump it forward)."""
    return ManualClock()


@pytest.fixture
async def registry(clock: ManualClock) -> AsyncIterator[Registry]:
    """A registry on the manual clock with an empty environment, closed afterwards."""
    async with Registry(clock=clock, env={}) as registry:
        yield registry


@pytest.fixture
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail the test if it leaves a task running behind it."""
    yield
    current = asyncio.current_task()
    leftovers = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
    assert not leftovers, f"tasks left running: {leftovers}"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port, for the whole session.

    Skipped when redis-server or redis-py is missing, unless MAJORDOMO_REQUIRE_REDIS=1
    (CI), which makes that a failure.
    """
    reason = unavailable()
    if reason is not None:
        if required():
            pytest.fail(f"{reason}, and MAJORDOMO_REQUIRE_REDIS is set")
        pytest.skip(reason)
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def http() -> AsyncIterator[HTTPSessionHolder]:
    """A session holder, closed after the test (the `server` fixture checks for leaks)."""
    holder = HTTPSessionHolder()
    yield holder
    await holder.aclose()


@pytest.fixture
async def server(http: HTTPSessionHolder) -> AsyncIterator[LocalServer]:
    """A local server for the test; it must leave no connection of `http` checked out."""
    async with local_server(http) as server:
        yield server
