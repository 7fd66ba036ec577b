"""A failed attempt's record (`failed_attempts`, `ChainExhaustedError.failures`) holds
no reference cycle: the reply, the request and the call it failed in are freed by
reference counting, not kept until the cyclic garbage collector runs.

Until this was fixed, each failed attempt's error kept the chain's frames in its
traceback, those frames kept the call, and the call kept the error: with 64 calls in
flight failing over, collecting those cycles cost about a third of the client's CPU.
Real HTTP against a local server, through a registry, as services call it.
"""

from __future__ import annotations

import gc
import json
import traceback
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import aiohttp
import pytest
from aiohttp import web

from majordomo_async import (
    AuthenticationError,
    ChainConfig,
    ChainExhaustedError,
    HealthConfig,
    ManualClock,
    OverloadedError,
    ProviderConnectionError,
    Registry,
    ResponseFormatError,
    Stream,
    StreamTruncatedError,
    TextDelta,
)
from tests.helpers.scripted import ScriptedModel, make_chain
from tests.helpers.servers import LocalServer, closed_port_url, local_server, play, respond

OVERLOADED = {"error": {"message": "overloaded, try later", "type": "server_error", "code": None}}
ANSWER = {
    "id": "chatcmpl-1",
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


async def texts(stream: Stream) -> str:
    """The text of `stream`, read to its end and closed."""
    async with stream:
        return "".join([event.text async for event in stream if isinstance(event, TextDelta)])


def sse(*chunks: object) -> bytes:
    return b"".join(b"data: " + json.dumps(chunk).encode() + b"\n\n" for chunk in chunks) + (
        b"data: [DONE]\n\n"
    )


STREAM = sse(
    {"id": "c1", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "h"}}]},
    {"id": "c1", "choices": [{"index": 0, "delta": {"content": "i"}, "finish_reason": "stop"}]},
)


FIRST_EVENT = STREAM[: STREAM.index(b"\n\n") + 2]
REJECTED = {
    "error": {
        "message": "Incorrect API key",
        "type": "invalid_request_error",
        "code": "invalid_api_key",
    }
}


@contextmanager
def cyclic_garbage() -> Iterator[list[object]]:
    """The objects made inside the block that only the cyclic collector frees."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    found: list[object] = []
    try:
        yield found
        gc.collect()
        found.extend(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


async def garbage_of(call: Callable[[], Awaitable[object]]) -> list[object]:
    """The cyclic garbage of three `call()`s, after one to warm up (the session, the
    chain cache, lazy imports)."""
    await call()
    with cyclic_garbage() as garbage:
        for _ in range(3):
            await call()
    return garbage


def ours(objects: list[object]) -> list[str]:
    """The library's objects, its frames and client responses among `objects` (the local
    server's own objects in the same loop do not count)."""
    names = []
    for obj in objects:
        if isinstance(obj, types.FrameType):
            if "majordomo_async" in obj.f_code.co_filename:
                names.append(f"frame of {obj.f_code.co_name}")
        elif type(obj).__module__.startswith("majordomo_async") or isinstance(
            obj, aiohttp.ClientResponse
        ):
            names.append(type(obj).__name__)
    return names


def chain_parts(objects: list[object]) -> list[str]:
    """The chain's calls, records and frames among `objects`."""
    names = []
    for obj in objects:
        if isinstance(obj, types.FrameType):
            if "/majordomo_async/_chain/" in obj.f_code.co_filename:
                names.append(f"frame of {obj.f_code.co_name}")
        elif type(obj).__name__ in ("_Call", "TargetFailure", "StreamVerdict"):
            names.append(type(obj).__name__)
    return names


@pytest.fixture
async def site() -> AsyncIterator[LocalServer]:
    """`/down/v1` answers 503 to everything; `/up/v1` answers (JSON, or SSE when asked)."""

    async def up(request: web.Request) -> web.StreamResponse:
        if (await request.json()).get("stream"):
            return await play(STREAM)(request)
        return await respond(200, ANSWER)(request)

    async with local_server() as server:
        server.routes["/down/v1/chat/completions"] = respond(503, OVERLOADED)
        server.routes["/up/v1/chat/completions"] = up
        # Content, then the connection drops without the body's end: a mid-stream failure.
        server.routes["/auth/v1/chat/completions"] = respond(401, REJECTED)
        server.routes["/garbled/v1/chat/completions"] = play(b"data: {not json\n\n")
        # One content event, then the body ends cleanly without the terminal chunk.
        server.routes["/short/v1/chat/completions"] = play(FIRST_EVENT)
        server.routes["/cut/v1/chat/completions"] = play(
            STREAM[: STREAM.index(b"\n\n") + 10], end="close"
        )
        yield server


def registry_for(site: LocalServer, mid_stream: Literal["raise", "restart"] = "raise") -> Registry:
    host = site.url.removeprefix("http://")
    return Registry(
        env={
            "LLM_DOWN": f"openai+http://sk-secret-down@{host}/down/v1",
            "LLM_UP": f"openai+http://sk-secret-up@{host}/up/v1",
            "LLM_CUT": f"openai+http://sk-secret-cut@{host}/cut/v1",
            "LLM_AUTH": f"openai+http://sk-secret-auth@{host}/auth/v1",
            "LLM_GARBLED": f"openai+http://sk-secret-garbled@{host}/garbled/v1",
            "LLM_SHORT": f"openai+http://sk-secret-short@{host}/short/v1",
        },
        # The head is attempted on every call (never benched) and never retried.
        health=HealthConfig(failure_threshold=1_000_000),
        chain=ChainConfig(transient_retries=-1, mid_stream=mid_stream),
    )


async def test_calls_that_answered_at_once_leave_no_cycle(site: LocalServer) -> None:
    """The usual path, for comparison: nothing of a call waits for the collector."""
    async with registry_for(site) as registry:
        chain = registry.parse("up/m")

        async def call() -> None:
            assert (await chain.generate("hi")).text == "hi"
            assert await texts(await chain.stream("hi")) == "hi"

        assert ours(await garbage_of(call)) == []


@pytest.mark.parametrize("mode", ["generate", "stream"])
async def test_a_call_that_failed_over_leaves_no_cycle(site: LocalServer, mode: str) -> None:
    async with registry_for(site) as registry:
        chain = registry.parse("down/m,up/m")

        async def call() -> None:
            if mode == "generate":
                response = await chain.generate("hi")
                assert response.text == "hi"
            else:
                stream = await chain.stream("hi")
                assert await texts(stream) == "hi"
                response = stream.response
            assert [f.key for f in response.failed_attempts] == ["down/m"]

        assert ours(await garbage_of(call)) == []


async def test_a_stream_restarted_mid_way_leaves_no_cycle(site: LocalServer) -> None:
    """`mid_stream="restart"`: the failure after content is recorded by the stream's
    relay, whose frames hold the call as the loop's do."""
    async with registry_for(site, mid_stream="restart") as registry:
        chain = registry.parse("cut/m,up/m")

        async def read() -> None:
            stream = await chain.stream("hi")
            assert await texts(stream) == "hhi"  # "h" from the head, then the restart
            assert [f.key for f in stream.response.failed_attempts] == ["cut/m"]

        garbage = await garbage_of(read)
    # aiohttp makes a cycle of its own when a connection drops mid-body (the reader keeps
    # the payload error, whose traceback keeps the reader's frames), and the dead stream
    # hangs from it; raw aiohttp has it too. The call and the chain's frames must not.
    assert chain_parts(garbage) == []


async def test_an_exhausted_chain_leaves_no_cycle(site: LocalServer) -> None:
    async with registry_for(site) as registry:
        chain = registry.parse("down/m,down/n")

        async def call() -> None:
            with pytest.raises(ChainExhaustedError) as info:
                await chain.generate("hi")
            # `info` holds the error, whose traceback holds this frame: a cycle of the
            # test's own, unless the frame lets go of it.
            failures, info = info.value.failures, None  # type: ignore[assignment]
            assert [f.key for f in failures] == ["down/m", "down/n"]

        assert ours(await garbage_of(call)) == []


async def test_a_recorded_error_keeps_what_failed_not_its_frames(site: LocalServer) -> None:
    """A recorded provider error says what failed by its type and fields; its traceback,
    and those of the errors it was raised from, are dropped (from Python 3.12 any frame
    of it would hold its callers, the call among them)."""
    async with registry_for(site) as registry:
        response = await registry.parse("down/m,up/m").generate("hi")
    error = response.failed_attempts[0].error
    assert isinstance(error, OverloadedError)
    assert (error.provider, error.model, error.status) == ("down", "m", 503)
    assert error.message == "overloaded, try later"
    assert error.__traceback__ is None
    assert str(response.failed_attempts[0]) == "down/m: OverloadedError: " + str(error)


async def test_a_bug_recorded_on_the_way_keeps_its_traceback() -> None:
    """A bug (here a `KeyError` in a model) is recorded only when the chain is told to
    advance past it; whoever debugs it needs to see where it was raised."""
    clock = ManualClock()
    head = ScriptedModel("a/m", [KeyError("choices")], clock=clock)
    tail = ScriptedModel("b/m", ["ok"], clock=clock)
    chain = make_chain(head, tail, clock=clock, config=ChainConfig(advance_on_permanent=True))
    response = await chain.generate("hi")
    error = response.failed_attempts[0].error
    assert isinstance(error, KeyError)
    frames = [frame.name for frame in traceback.extract_tb(error.__traceback__)]
    assert "generate" in frames  # the scripted model's, where it was raised


@pytest.mark.parametrize("mode", ["generate", "stream"])
async def test_a_permanent_error_raised_to_the_caller_leaves_no_cycle(
    site: LocalServer, mode: str
) -> None:
    """Rule 6: a rejected key is raised at once, past the healthy tail."""
    async with registry_for(site) as registry:
        chain = registry.parse("auth/m,up/m")

        async def call() -> None:
            with pytest.raises(AuthenticationError):
                await (chain.generate("hi") if mode == "generate" else chain.stream("hi"))

        assert ours(await garbage_of(call)) == []


async def test_a_stream_garbled_before_content_fails_over_with_no_cycle(
    site: LocalServer,
) -> None:
    async with registry_for(site) as registry:
        chain = registry.parse("garbled/m,up/m")

        async def read() -> None:
            stream = await chain.stream("hi")
            assert await texts(stream) == "hi"
            failed = stream.response.failed_attempts
            assert [type(f.error) for f in failed] == [ResponseFormatError]

        assert ours(await garbage_of(read)) == []


async def test_a_stream_cut_short_after_content_leaves_no_cycle(site: LocalServer) -> None:
    """The body ends cleanly after content but without the terminal chunk: the consumer
    gets `StreamTruncatedError` (mid-stream failures are raised by default)."""
    async with registry_for(site) as registry:
        chain = registry.parse("short/m")

        async def read() -> None:
            with pytest.raises(StreamTruncatedError):
                await texts(await chain.stream("hi"))

        assert ours(await garbage_of(read)) == []


async def test_a_refused_connection_fails_over_with_no_cycle_of_ours(site: LocalServer) -> None:
    """aiohttp's connector makes a cycle of its own for a refused connection (its error's
    traceback holds the frames that hold it), and our request's frame hangs from it; our
    error, raised from aiohttp's, and the call must not be part of one."""
    host, refused = site.url.removeprefix("http://"), closed_port_url().removeprefix("http://")
    env = {
        "LLM_REFUSED": f"openai+http://sk-secret-x@{refused}/v1",
        "LLM_UP": f"openai+http://sk-secret-up@{host}/up/v1",
    }
    health = HealthConfig(failure_threshold=1_000_000)
    async with Registry(
        env=env, health=health, chain=ChainConfig(transient_retries=-1)
    ) as registry:
        chain = registry.parse("refused/m,up/m")

        async def call() -> None:
            response = await chain.generate("hi")
            failed = [type(f.error) for f in response.failed_attempts]
            assert failed == [ProviderConnectionError]

        garbage = await garbage_of(call)
    assert "ProviderConnectionError" not in ours(garbage)
    assert chain_parts(garbage) == []
