"""Shared fixtures: a manual clock, a registry that is always closed, an HTTP session
holder with a local server that checks for leaked connections, and the Redis server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Final

import pytest

from majordomo_async import HTTPSessionHolder, ManualClock, Registry

from .helpers.redis_server import RedisServer, required, unavailable
from .helpers.servers import LocalServer, local_server

SLOW_MODULES: Final = frozenset(
    {
        # Real timers, subprocesses, many real connections, or many generated examples:
        # most of their tests take over ~0.25 s each.
        "test_benchmark_smoke",
        "test_chain_model",
        "test_cli",
        "test_concurrency",
        "test_differential",
        "test_disconnect",
        "test_dsn",
        "test_fault_matrix",
        "test_fuzz",
        "test_gemini_raw_errors",
        "test_json",
        "test_load",
        "test_readme",
        "test_redis_store",
        "test_replay",
        "test_routing_servers",
        "test_secrets",
        "test_spec",
        "test_time_limits",
    }
)
"""Test modules marked `slow`: `pytest -m "not slow"` is the fast inner loop (well under a
minute); CI runs everything. A module is listed here rather than marked in each file, so
that the list stays in one place."""
SLOW_TESTS: Final = (
    "test_sse.py::test_sse_split_anywhere",
    "test_sse.py::test_ndjson_split_anywhere",
    "test_cancellation.py::test_provider_call_cancelled_at_every_await_point",
)
"""Slow tests of otherwise fast modules, by the end of their node ids (without params)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests of `SLOW_MODULES` (and of any `test_redis_*` module) and the
    `SLOW_TESTS` `slow`."""
    for item in items:
        path, _, name = item.nodeid.partition("::")
        module = path.rsplit("/", 1)[-1]
        stem = module.removesuffix(".py")
        test = f"{module}::{name.partition('[')[0]}"
        if stem in SLOW_MODULES or stem.startswith("test_redis") or test in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


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
