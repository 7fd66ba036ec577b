"""`_backend.primitives()`: anyio's asyncio backend found once, the public helpers off
asyncio or when anyio's internals move, with the same semantics either way."""

from __future__ import annotations

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
