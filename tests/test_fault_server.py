"""The OpenAI-compatible fault server (`tests/helpers/fault_server.py`).

First the server itself, with plain aiohttp client calls: each behaviour does what it
says, on the wire OpenAI uses; the script, the records, `down()` / `up()`, and a prompt
shutdown with requests still hanging. Then a few scenarios through the library, where
the library already behaves as it should (the answer, a 429's `retry_after`, a 503, a
reset, a cut stream, a silent server under the chain's attempt timeout).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from majordomo_async import (
    ChainConfig,
    ChainExhaustedError,
    OverloadedError,
    ProviderConnectionError,
    ProviderTimeoutError,
    RateLimitError,
    Registry,
    StreamTruncatedError,
    TextDelta,
    Usage,
)

from .helpers.fault_server import (
    CHAT_PATH,
    Behaviour,
    FaultServer,
    answer,
    cut_without_finish,
    fault_server,
    headers_then_silence,
    no_done,
    rate_limited,
    reset,
    silent,
    slow_first_token,
    split_text,
    stall_after,
    status,
)
from .helpers.servers import acquired_connections

MODEL = "gpt-4o-mini"
SHORT = 0.3
"""Seconds a test waits to see that nothing arrives."""


def chat_body(*, stream: bool, usage: bool = True) -> dict[str, Any]:
    """A chat completion request body, as the OpenAI SDK sends it."""
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Count to three"}],
        "stream": stream,
    }
    if stream and usage:
        body["stream_options"] = {"include_usage": True}
    return body


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def server() -> AsyncIterator[FaultServer]:
    async with fault_server() as server:
        yield server


def post(
    session: aiohttp.ClientSession,
    server: FaultServer,
    *,
    stream: bool,
    usage: bool = True,
    timeout: float | None = None,
) -> Any:
    """`session.post(...)` of a chat completion (use with `async with`)."""
    return session.post(
        server.url + CHAT_PATH,
        json=chat_body(stream=stream, usage=usage),
        timeout=aiohttp.ClientTimeout(total=timeout),
    )


async def next_data(response: aiohttp.ClientResponse) -> str | None:
    """The payload of the next `data:` line (None at a clean end of the body)."""
    while True:
        line = await response.content.readline()
        if not line:
            return None
        text = line.decode().rstrip("\n")
        if text.startswith("data: "):
            return text.removeprefix("data: ")
        assert text == "", f"not an SSE line OpenAI sends: {text!r}"


async def all_data(response: aiohttp.ClientResponse) -> list[str]:
    """Every `data:` payload, to the clean end of the body."""
    payloads = []
    while (payload := await next_data(response)) is not None:
        payloads.append(payload)
    return payloads


def chunks(payloads: list[str]) -> list[dict[str, Any]]:
    return [json.loads(payload) for payload in payloads if payload != "[DONE]"]


def deltas(payloads: list[str]) -> list[dict[str, Any]]:
    return [chunk["choices"][0]["delta"] for chunk in chunks(payloads) if chunk["choices"]]


def contents(payloads: list[str]) -> list[str]:
    return [delta["content"] for delta in deltas(payloads)[1:] if "content" in delta]


def finish_reasons(payloads: list[str]) -> list[str | None]:
    return [c["choices"][0]["finish_reason"] for c in chunks(payloads) if c["choices"]]


# --------------------------------------------------------------------------- healthy answers


async def test_a_streamed_answer_has_openais_shape(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    async with post(session, server, stream=True) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert response.headers["x-request-id"].startswith("req_")
        assert "x-ratelimit-remaining-requests" in response.headers
        payloads = await all_data(response)

    assert payloads[-1] == "[DONE]"
    parsed = chunks(payloads)
    assert {chunk["id"] for chunk in parsed} == {parsed[0]["id"]}
    assert parsed[0]["id"].startswith("chatcmpl-")
    for chunk in parsed:
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == MODEL
        assert isinstance(chunk["created"], int)
        assert chunk["system_fingerprint"].startswith("fp_")
    choices = [chunk["choices"][0] for chunk in parsed[:-1]]
    assert all(set(c) == {"index", "delta", "logprobs", "finish_reason"} for c in choices)
    assert [c["delta"] for c in choices] == [
        {"role": "assistant", "content": ""},
        {"content": "one"},
        {"content": " two"},
        {"content": " three"},
        {},
    ]
    assert [c["finish_reason"] for c in choices] == [None, None, None, None, "stop"]
    usage = parsed[-1]
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == 3
    assert usage["usage"]["total_tokens"] == (
        usage["usage"]["prompt_tokens"] + usage["usage"]["completion_tokens"]
    )
    assert all(chunk["usage"] is None for chunk in parsed[:-1])


async def test_a_stream_without_include_usage_gets_no_usage_chunk(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    async with post(session, server, stream=True, usage=False) as response:
        payloads = await all_data(response)
    assert payloads[-1] == "[DONE]"
    assert all(chunk["choices"] and "usage" not in chunk for chunk in chunks(payloads))
    assert finish_reasons(payloads)[-1] == "stop"


async def test_a_non_streamed_answer_is_a_chat_completion(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    server.set_default(answer("Hello there"))
    async with post(session, server, stream=False) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["x-request-id"].startswith("req_")
        body = await response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == MODEL
    [choice] = body["choices"]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "Hello there"
    assert choice["message"]["refusal"] is None
    assert choice["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 2


async def test_chunk_delay_spaces_the_content_chunks(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    server.set_default(answer("a b c", chunk_delay=0.05))
    async with post(session, server, stream=True) as response:
        arrivals = []
        while (payload := await next_data(response)) is not None:
            arrivals.append((payload, time.monotonic()))
    texts = contents([payload for payload, _ in arrivals])
    assert texts == ["a", " b", " c"]
    times = [at for _, at in arrivals]
    # role chunk, then 3 content chunks each 0.05 s after the one before
    assert times[3] - times[0] >= 0.14


def test_split_text_keeps_the_spaces() -> None:
    assert split_text("one two  three") == ["one", " two", " ", " three"]
    assert "".join(split_text("one two  three")) == "one two  three"
    assert split_text("") == []


# --------------------------------------------------------------------------- silence


@pytest.mark.parametrize("stream", [True, False])
async def test_silent_sends_no_headers(
    server: FaultServer, session: aiohttp.ClientSession, stream: bool
) -> None:
    server.script(silent())
    with pytest.raises(asyncio.TimeoutError):
        async with post(session, server, stream=stream, timeout=SHORT):
            pass
    assert server.count == 1
    assert server.requests[0].behaviour == silent()


async def test_headers_then_silence_sends_headers_and_no_body(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    server.script(headers_then_silence())
    async with post(session, server, stream=True) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        with pytest.raises(asyncio.TimeoutError):
            async with asyncio.timeout(SHORT):
                await response.content.read(1)


async def test_headers_then_silence_without_a_stream_is_silent(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    server.script(headers_then_silence())
    with pytest.raises(asyncio.TimeoutError):
        async with post(session, server, stream=False, timeout=SHORT):
            pass


async def test_slow_first_token_sends_headers_at_once_and_chunks_later(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    server.script(slow_first_token(0.2))
    started = time.monotonic()
    async with post(session, server, stream=True) as response:
        headers_after = time.monotonic() - started
        first = await next_data(response)
        first_after = time.monotonic() - started
        rest = await all_data(response)
    assert headers_after < 0.15
    assert first_after >= 0.2
    assert first is not None
    assert deltas([first]) == [{"role": "assistant", "content": ""}]
    assert contents([first, *rest]) == ["one", " two", " three"]
    assert rest[-1] == "[DONE]"


# --------------------------------------------------------------------------- broken streams


async def test_stall_after_close_cuts_the_body_after_n_chunks(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    server.script(stall_after(2, "close"))
    received = []
    async with post(session, server, stream=True) as response:
        with pytest.raises(aiohttp.ClientPayloadError):
            while (payload := await next_data(response)) is not None:
                received.append(payload)
    assert contents(received) == ["one", " two"]
    assert finish_reasons(received) == [None, None, None]


async def test_stall_after_hang_keeps_the_connection_silent(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    server.script(stall_after(1, "hang"))
    async with post(session, server, stream=True) as response:
        received = [await next_data(response), await next_data(response)]
        assert await response.content.readline() == b"\n"  # the end of the chunk's event
        with pytest.raises(asyncio.TimeoutError):
            async with asyncio.timeout(SHORT):
                await response.content.read(1)
    assert contents([payload for payload in received if payload is not None]) == ["one"]


async def test_stall_after_without_a_stream_cuts_the_json_body(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    server.script(stall_after(0, "close"))
    async with post(session, server, stream=False) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()


async def test_no_done_ends_cleanly_after_the_usage_chunk(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    server.script(no_done())
    async with post(session, server, stream=True) as response:
        payloads = await all_data(response)
    assert "[DONE]" not in payloads
    last = json.loads(payloads[-1])
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 3
    assert finish_reasons(payloads)[-1] == "stop"
    assert contents(payloads) == ["one", " two", " three"]


async def test_cut_without_finish_ends_cleanly_without_a_finish_reason(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    server.script(cut_without_finish(1))
    async with post(session, server, stream=True) as response:
        payloads = await all_data(response)  # a clean end: no error
    assert "[DONE]" not in payloads
    assert contents(payloads) == ["one"]
    assert finish_reasons(payloads) == [None, None]
    assert all(chunk["choices"] for chunk in chunks(payloads))


async def test_cut_without_finish_without_a_stream_has_a_null_finish_reason(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    server.script(cut_without_finish(2))
    async with post(session, server, stream=False) as response:
        body = await response.json()
    assert body["choices"][0]["message"]["content"] == "one two"
    assert body["choices"][0]["finish_reason"] is None


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("stream", [True, False])
async def test_rate_limited_is_openais_429(
    server: FaultServer, session: aiohttp.ClientSession, stream: bool
) -> None:
    server.script(rate_limited(retry_after=3))
    async with post(session, server, stream=stream) as response:
        assert response.status == 429
        assert response.headers["retry-after"] == "3"
        assert response.headers["x-ratelimit-remaining-requests"] == "0"
        assert response.headers["x-ratelimit-reset-requests"] == "3s"
        assert response.headers["x-request-id"].startswith("req_")
        body = await response.json()
    error = body["error"]
    assert error["message"].startswith(f"Rate limit reached for {MODEL}")
    assert (error["type"], error["param"], error["code"]) == (
        "requests",
        None,
        "rate_limit_exceeded",
    )


@pytest.mark.parametrize(
    ("code", "error_type", "error_code"),
    [
        (503, "service_unavailable_error", "server_is_overloaded"),
        (500, "server_error", None),
        (404, "invalid_request_error", "model_not_found"),
        (502, "server_error", None),
    ],
)
async def test_status_sends_openais_error_body(
    server: FaultServer,
    session: aiohttp.ClientSession,
    code: int,
    error_type: str,
    error_code: str | None,
) -> None:
    server.script(status(code))
    async with post(session, server, stream=True) as response:
        assert response.status == code
        body = await response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert (body["error"]["type"], body["error"]["code"]) == (error_type, error_code)


async def test_status_takes_a_message_of_its_own(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    server.script(status(400, "Bad thing.", error_type="invalid_request_error"))
    async with post(session, server, stream=False) as response:
        body = await response.json()
    assert body["error"] == {
        "message": "Bad thing.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


@pytest.mark.parametrize("stream", [True, False])
async def test_reset_drops_the_connection(
    server: FaultServer, session: aiohttp.ClientSession, stream: bool
) -> None:
    server.script(reset())
    with pytest.raises(aiohttp.ClientConnectionError):
        async with post(session, server, stream=stream) as response:
            await response.read()


async def test_down_resets_every_request_until_up(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    server.script(status(503))
    server.down()
    assert server.is_down
    for _ in range(2):
        with pytest.raises(aiohttp.ClientConnectionError):
            async with post(session, server, stream=True) as response:
                await response.read()
    server.up()
    async with post(session, server, stream=False) as response:
        assert response.status == 503  # the script did not advance while down
    assert [request.behaviour for request in server.requests] == [reset(), reset(), status(503)]


async def test_other_paths_and_bad_json_get_openais_errors(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    async with session.post(server.url + "/v1/chat/completion", json={}) as response:
        assert response.status == 404
        body = await response.json()
        assert body["error"]["message"] == "Invalid URL (POST /v1/chat/completion)"
    async with session.post(server.url + CHAT_PATH, data=b"{not json") as response:
        assert response.status == 400
        body = await response.json()
        assert body["error"]["type"] == "invalid_request_error"
    assert server.pending == ()
    assert server.count == 2


# --------------------------------------------------------------------------- script, records


async def test_the_script_runs_in_order_then_the_default(
    server: FaultServer, session: aiohttp.ClientSession
) -> None:
    server.set_default(answer("done"))
    server.script(status(503), rate_limited(1))
    assert server.pending == (status(503), rate_limited(1))
    before = time.monotonic()
    statuses = []
    for stream in (True, False, True):
        async with post(session, server, stream=stream) as response:
            statuses.append(response.status)
            await response.read()
    assert statuses == [503, 429, 200]
    assert server.count == 3
    assert [r.behaviour for r in server.requests] == [
        status(503),
        rate_limited(1),
        answer("done"),
    ]
    assert [r.stream for r in server.requests] == [True, False, True]
    assert [r.body for r in server.requests] == [
        chat_body(stream=True),
        chat_body(stream=False),
        chat_body(stream=True),
    ]
    times = [r.at for r in server.requests]
    assert before <= times[0] <= times[1] <= times[2] <= time.monotonic()
    assert all(r.path == CHAT_PATH for r in server.requests)
    assert server.requests[0].headers["content-type"] == "application/json"


async def test_a_new_script_replaces_what_was_left() -> None:
    async with fault_server(default=status(500)) as server:
        server.script(status(503), status(502))
        server.script(answer())
        assert server.pending == (answer(),)
        assert server.default == status(500)


def test_behaviours_are_validated() -> None:
    with pytest.raises(ValueError, match="then"):
        stall_after(1, "explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_delay"):
        answer(chunk_delay=-1)
    with pytest.raises(ValueError, match="status"):
        status(200)
    with pytest.raises(ValueError, match="kind"):
        Behaviour("nonsense")  # type: ignore[arg-type]


async def test_url_and_dsn() -> None:
    server = FaultServer()
    with pytest.raises(RuntimeError):
        server.url  # noqa: B018
    async with server.running():
        assert server.url.startswith("http://127.0.0.1:")
        port = server.url.rpartition(":")[2]
        assert server.dsn == f"openai+http://127.0.0.1:{port}"
        assert server.dsn_with(idle=0.5) == f"openai+http://127.0.0.1:{port}?idle=0.5"
    with pytest.raises(RuntimeError):
        server.url  # noqa: B018


# --------------------------------------------------------------------------- shutdown


@pytest.mark.usefixtures("no_leaked_tasks")
async def test_leaving_is_prompt_with_requests_still_hanging(
    session: aiohttp.ClientSession,
) -> None:
    async with fault_server(default=silent()) as server:
        server.script(headers_then_silence(), stall_after(1, "hang"), silent())
        clients = [
            asyncio.create_task(read_everything(session, server, stream=stream))
            for stream in (True, True, False)
        ]
        for _ in range(100):  # until the three requests arrived
            if server.count == 3:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the stalled stream got its chunk
        # One more whose client gave up: its handler outlives the connection.
        with pytest.raises(asyncio.TimeoutError):
            async with post(session, server, stream=False, timeout=0.05):
                pass
        leaving = time.monotonic()
    assert time.monotonic() - leaving < 0.5
    results = await asyncio.gather(*clients, return_exceptions=True)
    assert all(isinstance(result, aiohttp.ClientError) for result in results), results


async def read_everything(
    session: aiohttp.ClientSession, server: FaultServer, *, stream: bool
) -> bytes:
    async with post(session, server, stream=stream) as response:
        body: bytes = await response.read()
    return body


# --------------------------------------------------------------------------- through the library


def registry_for(server: FaultServer, **chain: Any) -> Registry:
    """A registry whose provider "fault" is `server`; one attempt per call."""
    return Registry(env={"LLM_FAULT": server.dsn}, chain=ChainConfig(transient_retries=-1, **chain))


async def stream_text(registry: Registry, received: list[str]) -> Any:
    """Stream from "fault/gpt-4o-mini"; append the text deltas to `received`."""
    model = registry.parse("fault/gpt-4o-mini")
    async with await model.stream("Count to three") as stream:
        async for event in stream:
            if isinstance(event, TextDelta):
                received.append(event.text)
    return stream.response


@pytest.mark.parametrize("stream", [True, False])
async def test_library_gets_the_answer(server: FaultServer, stream: bool) -> None:
    server.set_default(answer("Hello from the fault server"))
    async with registry_for(server) as registry:
        if stream:
            received: list[str] = []
            response = await stream_text(registry, received)
            assert "".join(received) == "Hello from the fault server"
        else:
            response = await registry.parse("fault/gpt-4o-mini").generate("Count to three")
        assert acquired_connections(registry._http.get()) == 0
    assert response.text == "Hello from the fault server"
    assert response.usage == Usage(7, 5)  # 3 words + 4 for the message; 5 chunks
    [request] = server.requests
    assert request.stream is stream
    assert request.body["model"] == "gpt-4o-mini"
    if stream:
        assert request.body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("stream", [True, False])
async def test_library_reads_the_429s_retry_after(server: FaultServer, stream: bool) -> None:
    server.script(rate_limited(retry_after=3))
    async with registry_for(server) as registry:
        model = registry.parse("fault/gpt-4o-mini")
        with pytest.raises(ChainExhaustedError) as caught:
            if stream:
                await stream_text(registry, [])
            else:
                await model.generate("Count to three")
    [failure] = caught.value.failures
    assert isinstance(failure.error, RateLimitError)
    assert failure.error.retry_after == 3
    assert server.count == 1


async def test_library_maps_a_503_to_overloaded(server: FaultServer) -> None:
    server.script(status(503))
    async with registry_for(server) as registry:
        with pytest.raises(ChainExhaustedError) as caught:
            await registry.parse("fault/gpt-4o-mini").generate("Count to three")
    [failure] = caught.value.failures
    assert isinstance(failure.error, OverloadedError)


async def test_library_sees_down_as_a_connection_error(server: FaultServer) -> None:
    server.down()
    async with registry_for(server) as registry:
        with pytest.raises(ChainExhaustedError) as caught:
            await registry.parse("fault/gpt-4o-mini").generate("Count to three")
    [failure] = caught.value.failures
    assert isinstance(failure.error, ProviderConnectionError)


@pytest.mark.parametrize(
    ("behaviour", "delivered"),
    [(stall_after(2, "close"), "one two"), (cut_without_finish(1), "one")],
)
async def test_library_raises_a_cut_stream_after_its_text(
    server: FaultServer, behaviour: Behaviour, delivered: str
) -> None:
    server.script(behaviour)
    received: list[str] = []
    async with registry_for(server) as registry:
        with pytest.raises(StreamTruncatedError):
            await stream_text(registry, received)
        assert acquired_connections(registry._http.get()) == 0
    assert "".join(received) == delivered


async def test_library_waits_out_a_slow_first_token(server: FaultServer) -> None:
    server.script(slow_first_token(0.2))
    started = time.monotonic()
    async with registry_for(server) as registry:
        response = await stream_text(registry, [])
    assert time.monotonic() - started >= 0.2
    assert response.text == "one two three"


@pytest.mark.parametrize("stream", [True, False])
async def test_library_cuts_a_silent_server_at_the_attempt_timeout(
    server: FaultServer, stream: bool
) -> None:
    server.script(silent())
    started = time.monotonic()
    async with registry_for(server, attempt_timeout=SHORT) as registry:
        with pytest.raises(ChainExhaustedError) as caught:
            if stream:
                await stream_text(registry, [])
            else:
                await registry.parse("fault/gpt-4o-mini").generate("Count to three")
        assert acquired_connections(registry._http.get()) == 0
    assert SHORT * 0.9 <= time.monotonic() - started < SHORT + 0.4
    [failure] = caught.value.failures
    assert isinstance(failure.error, ProviderTimeoutError)
