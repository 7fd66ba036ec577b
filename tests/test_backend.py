"""`_backend.primitives()`: anyio's asyncio backend found once, the public helpers off
asyncio or when anyio's internals move, with the same semantics either way."""

from __future__ import annotations

import subprocess
import sys
import time

import anyio
import anyio._core._eventloop
import pytest

from majordomo_async import MonotonicClock, _backend
from majordomo_async._backend import primitives

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")

REAL = anyio._core._eventloop.get_async_backend


@pytest.fixture(params=["backend", "public"])
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs with anyio's backend found, and with the internal gone."""
    monkeypatch.setattr(_backend, "_found", None)
    if request.param == "public":

        def changed(asynclib_name: str | None = None) -> object:
            if asynclib_name is not None:  # an anyio whose lookup no longer takes a name
                raise TypeError("get_async_backend() takes no arguments")
            return REAL()

        monkeypatch.setattr(anyio._core._eventloop, "get_async_backend", changed)
    return str(request.param)


async def test_on_asyncio_the_backend_is_found_once_or_the_helpers_serve(kind: str) -> None:
    found = primitives()
    assert primitives() is found
    if kind == "backend":
        assert found is REAL("asyncio")
    else:
        assert found is _backend._PUBLIC


def test_without_a_running_asyncio_loop_the_public_helpers_serve() -> None:
    assert primitives() is _backend._PUBLIC


async def test_a_deadline_scope_fires_at_its_deadline(kind: str) -> None:
    clock = MonotonicClock()
    started = time.monotonic()
    with clock.deadline_scope(time.monotonic() + 0.02) as scope:
        await anyio.sleep(5)
    assert scope.cancelled_caught
    assert time.monotonic() - started < 4  # the deadline fired, not the sleep's end


async def test_the_checkpoint_raises_in_a_cancelled_scope_and_passes_otherwise(
    kind: str,
) -> None:
    await primitives().checkpoint_if_cancelled()  # not cancelled: returns
    reached = False
    with anyio.CancelScope() as scope:
        scope.cancel()
        await primitives().checkpoint_if_cancelled()
        reached = True
    assert scope.cancelled_caught and not reached
    with anyio.CancelScope() as outer:
        outer.cancel()
        with anyio.CancelScope(shield=True):
            await primitives().checkpoint_if_cancelled()  # shielded: passes
            reached = True
    assert reached


async def test_running_loop_is_the_loop_asyncio_runs() -> None:
    import asyncio

    assert _backend.running_loop() is asyncio.get_running_loop()


def test_running_loop_is_none_outside_a_loop_and_under_trio() -> None:
    assert _backend.running_loop() is None
    pytest.importorskip("trio")

    async def under_trio() -> object:
        return _backend.running_loop()

    assert anyio.run(under_trio, backend="trio") is None


def test_import_loads_no_asyncio_and_a_loop_finds_it_afterwards() -> None:
    """`import majordomo_async` imports neither asyncio, aiohttp, email.utils nor the
    Redis and OpenTelemetry modules (they cost about 130 ms together); a program that
    then runs asyncio gets the running loop, the session and the lazy public names."""
    code = """
import sys
import majordomo_async
heavy = ["asyncio", "aiohttp", "email.utils", "majordomo_async._redis_store",
         "majordomo_async._otel"]
# aiohttp is there as a lazy module (`_http._lazy`), loaded on its first attribute read.
loaded = [name for name in heavy
          if name in sys.modules and type(sys.modules[name]).__name__ != "_LazyModule"]
assert not loaded, loaded
from majordomo_async import _backend
assert _backend.running_loop() is None
import asyncio

async def main():
    assert _backend.running_loop() is asyncio.get_running_loop()
    async with majordomo_async.Registry(env={}) as registry:
        assert (await registry.parse("fake/echo").generate("hi")).text == "hi"

asyncio.run(main())
assert majordomo_async.RedisHealthStore.__module__ == "majordomo_async"
assert "OpenTelemetryHooks" in dir(majordomo_async)
from majordomo_async import OpenTelemetryHooks, RedisStoreEvent
assert OpenTelemetryHooks.__name__ == "OpenTelemetryHooks" and RedisStoreEvent
try:
    majordomo_async.NoSuchName
except AttributeError as exc:
    assert "NoSuchName" in str(exc)
else:
    raise AssertionError("a missing name must raise AttributeError")
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
