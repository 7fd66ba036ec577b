"""Event loops: a Registry belongs to the asyncio loop that first used it.

aiohttp binds a session's connections, futures and timers to one loop. A Registry used
from a second `asyncio.run()`, from a thread running its own loop, or under trio gets a
clear `ConfigurationError` before any I/O, and nothing leaks: no unclosed session, no
socket, no "Task exception was never retrieved".
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import aiohttp
import anyio
import anyio.to_thread
import pytest
from aiohttp import web

from majordomo_async import ConfigurationError, HTTPSessionHolder, Registry

from .helpers.servers import serve


async def _reply(request: web.Request) -> web.Response:
    """A minimal OpenAI chat completion: "hello"."""
    body = await request.json()
    return web.json_response(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hello"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    )


@pytest.fixture
def dsn() -> Iterator[str]:
    """An OpenAI-compatible server on its own loop in a thread, so that it outlives the
    test's loops; yields its DSN."""
    started: concurrent.futures.Future[tuple[str, asyncio.AbstractEventLoop, asyncio.Event]]
    started = concurrent.futures.Future()

    async def run() -> None:
        async with serve({"/v1/chat/completions": _reply}) as url:
            stop = asyncio.Event()
            started.set_result((url, asyncio.get_running_loop(), stop))
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(run(),))
    thread.start()
    url, loop, stop = started.result(timeout=10)
    try:
        yield f"openai+http://sk-test@{url.removeprefix('http://')}/v1"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)


def garbage_warnings() -> list[str]:
    """The warnings garbage collection emits now: unclosed sessions, connectors, sockets."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    return [f"{warning.category.__name__}: {warning.message}" for warning in caught]


@pytest.fixture
def no_garbage_warnings() -> Iterator[None]:
    """Fail the test if what it dropped warns when collected."""
    gc.collect()  # earlier tests' garbage is not this test's
    yield
    assert garbage_warnings() == []


# --------------------------------------------------------------------------- asyncio.run twice


def _ask_twice(dsn: str) -> ConfigurationError:
    registry = Registry(env={"LLM_LOCAL": dsn})  # outside any loop: no I/O at construction
    model = registry.parse("local/m")

    async def ask() -> str:
        return (await model.generate("hi")).text

    assert asyncio.run(ask()) == "hello"
    with pytest.raises(ConfigurationError) as caught:
        asyncio.run(ask())
    asyncio.run(registry.aclose())  # closing from yet another loop is fine
    return caught.value


@pytest.mark.usefixtures("no_garbage_warnings")
def test_a_second_asyncio_run_gets_a_clear_error(dsn: str) -> None:
    """The second loop gets a ConfigurationError that says what to do, and nothing leaks."""
    error = _ask_twice(dsn)

    message = str(error)
    assert "another event loop" in message
    assert "one Registry per event loop" in message
    assert "lifespan" in message
    assert "sk-test" not in message


def _use_and_forget(dsn: str) -> None:
    registry = Registry(env={"LLM_LOCAL": dsn})
    assert asyncio.run(registry.parse("local/m").generate("hi")).text == "hello"
    # No aclose(): asyncio.run() ended with the registry open.


@pytest.mark.usefixtures("no_garbage_warnings")
def test_a_registry_left_open_closes_its_session_when_its_loop_ends(dsn: str) -> None:
    """asyncio.run() ending closes the session and its pooled connection, in that loop."""
    _use_and_forget(dsn)


async def test_a_dropped_holder_closes_its_session_in_its_loop() -> None:
    """A holder garbage-collected while its loop runs closes its session there."""
    holder = HTTPSessionHolder()
    session = holder.get()

    del holder
    gc.collect()
    for _ in range(20):
        if session.closed:
            break
        await asyncio.sleep(0)

    assert session.closed


# --------------------------------------------------------------------------- threads


async def test_a_thread_with_its_own_loop_gets_a_clear_error(dsn: str) -> None:
    """From another thread's loop: the error, before any I/O; the owner loop is unharmed."""
    async with Registry(env={"LLM_LOCAL": dsn}) as registry:
        model = registry.parse("local/m")
        assert (await model.generate("hi")).text == "hello"

        def in_a_thread() -> BaseException | None:
            try:
                asyncio.run(model.generate("hi"))
            except Exception as exc:
                return exc
            return None

        error = await anyio.to_thread.run_sync(in_a_thread)

        assert isinstance(error, ConfigurationError), repr(error)
        assert "one Registry per event loop" in str(error)
        assert (await model.generate("again")).text == "hello"


async def test_aclose_from_another_loop_closes_the_session_in_its_own(dsn: str) -> None:
    """A registry whose loop runs in another thread is closed there (aiohttp is not
    thread-safe), awaited from here."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever)
    thread.start()
    try:
        registry = Registry(env={"LLM_LOCAL": dsn})
        call = registry.parse("local/m").generate("hi")
        assert asyncio.run_coroutine_threadsafe(call, loop).result(timeout=10).text == "hello"
        session: aiohttp.ClientSession = registry._http._session  # type: ignore[assignment]

        await registry.aclose()

        assert session.closed
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


async def _bind(holder: HTTPSessionHolder) -> None:
    holder.get()


def test_aclose_refuses_a_stopped_loop_and_works_in_it() -> None:
    """A stopped (not closed) loop cannot close its session for us: say so, stay open."""
    loop = asyncio.new_event_loop()
    try:
        holder = HTTPSessionHolder()
        loop.run_until_complete(_bind(holder))

        with pytest.raises(ConfigurationError, match="stopped"):
            asyncio.run(holder.aclose())
        assert not holder.closed

        loop.run_until_complete(holder.aclose())
        assert holder.closed
    finally:
        loop.close()


# --------------------------------------------------------------------------- borrowed sessions


async def _new_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


@pytest.mark.usefixtures("no_garbage_warnings")
def test_a_borrowed_session_of_another_loop_gets_a_clear_error(dsn: str) -> None:
    """Registry(session=...) with a session made in another loop: the same clear error."""
    session = asyncio.run(_new_session())

    async def ask() -> Any:
        async with Registry(env={"LLM_LOCAL": dsn}, session=session) as registry:
            return await registry.parse("local/m").generate("hi")

    try:
        with pytest.raises(ConfigurationError, match=r"Registry\(session=\.\.\.\)") as caught:
            asyncio.run(ask())
    finally:
        asyncio.run(session.close())
    assert "one Registry per event loop" in str(caught.value)


# --------------------------------------------------------------------------- trio


def test_under_trio_fake_works_and_http_providers_need_asyncio() -> None:
    """anyio on trio: the built-in fake provider answers; HTTP providers say they need
    asyncio, at the call."""
    pytest.importorskip("trio")

    async def main() -> None:
        env = {"LLM_LOCAL": "openai+http://sk-test@127.0.0.1:9/v1"}
        async with Registry(env=env) as registry:
            assert (await registry.parse("fake/echo").generate("hi")).text == "hi"
            async with await registry.parse("fake/echo").stream("hi there") as stream:
                async for _ in stream:
                    pass
            assert stream.response.text == "hi there"

            model = registry.parse("local/m")  # parsing needs no loop at all
            with pytest.raises(ConfigurationError, match="need asyncio") as caught:
                await model.generate("hi")
            assert "sk-test" not in str(caught.value)

    anyio.run(main, backend="trio")
