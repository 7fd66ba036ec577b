"""The service examples, run for real: `examples/fastapi_app.py` and `examples/aiohttp_app.py`.

Each test starts one app on 127.0.0.1 the way it is deployed (FastAPI under uvicorn,
aiohttp under an `AppRunner` with `handler_cancellation=True`, as its `main()` runs it),
configured through the environment only (`MAJORDOMO_SPEC`, `LLM_<NAME>` DSNs), and calls
it with a real HTTP client. Every test but one (aiohttp's default server setting) runs
against both apps.

`tests/test_disconnect.py` runs both apps with clients that leave before the first
token and mid-stream.

Streaming is proven with a lockstep upstream: a local server speaking the OpenAI wire
format that sends its next token only when the test allows it. The test reads token N
from the app before it lets the upstream produce token N+1, so a reply the app buffered
instead of streaming would hang (and fail the test's read timeout), never pass.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import aiohttp
import anyio
import pytest
from aiohttp import web

from examples import aiohttp_app, fastapi_app
from majordomo_async import ClientDisconnectedError

from .helpers.servers import serve_app
from .helpers.uvicorn_server import uvicorn_server

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")

Kind = Literal["fastapi", "aiohttp"]

# One event must reach the client this fast; the same bound for an upstream to see a
# disconnect. Generous for a loaded 2-core machine, short enough to keep failures quick.
READ_TIMEOUT = 2.0


@pytest.fixture(params=["fastapi", "aiohttp"])
def kind(request: pytest.FixtureRequest) -> Kind:
    """Which example app the test runs."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The process environment, without any `LLM_<NAME>` DSN or spec from outside."""
    for name in list(os.environ):
        if name.startswith("LLM_") or name == fastapi_app.SPEC_VARIABLE:
            monkeypatch.delenv(name)
    return monkeypatch


@asynccontextmanager
async def running(
    kind: Kind, *, handler_cancellation: bool = True
) -> AsyncIterator[aiohttp.ClientSession]:
    """Start a fresh app of `kind`; yield a client session whose base URL is the app.

    `handler_cancellation` is the aiohttp server's setting (the example's `main()` sets it).
    """
    if kind == "fastapi":
        server = _serve_fastapi()
    else:
        server = _serve_aiohttp(handler_cancellation=handler_cancellation)
    # A reply that never comes (an app that buffers the stream) fails in seconds.
    timeout = aiohttp.ClientTimeout(total=10, sock_read=READ_TIMEOUT)
    async with server as url, aiohttp.ClientSession(url, timeout=timeout) as http:
        yield http


@asynccontextmanager
async def _serve_fastapi() -> AsyncIterator[str]:
    async with uvicorn_server(fastapi_app.create_app()) as url:
        yield url


@asynccontextmanager
async def _serve_aiohttp(*, handler_cancellation: bool) -> AsyncIterator[str]:
    app = aiohttp_app.create_app()
    async with serve_app(app, handler_cancellation=handler_cancellation, shutdown_timeout=1) as url:
        yield url


# --------------------------------------------------------------------------- an SSE reader


Event = tuple[str, Any]
"""(event name, decoded JSON data); the name is "message" when the event has none."""


async def next_event(response: aiohttp.ClientResponse) -> Event | None:
    """Read one server-sent event (None at the end of the body), within READ_TIMEOUT."""
    name = "message"
    data: list[str] = []
    with anyio.fail_after(READ_TIMEOUT):
        while line := (await response.content.readline()).decode():
            line = line.rstrip("\r\n")
            if not line:
                if data:
                    return name, json.loads("\n".join(data))
                continue
            field, _, value = line.partition(":")
            if field == "event":
                name = value.strip()
            elif field == "data":
                data.append(value.removeprefix(" "))
    assert not data, f"the body ended inside an event: {data}"
    return None


async def all_events(response: aiohttp.ClientResponse) -> list[Event]:
    """Every event up to the end of the body."""
    events = []
    while (event := await next_event(response)) is not None:
        events.append(event)
    return events


def texts(*pieces: str) -> list[Event]:
    """The text events a stream of `pieces` starts with."""
    return [("message", {"text": piece}) for piece in pieces]


# --------------------------------------------------------------------------- a lockstep upstream


UPSTREAM_USAGE = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}


class LockstepUpstream:
    """An OpenAI-compatible chat server whose stream sends a token only when allowed.

    `allow(n)` lets `n` more tokens out. After the last token it sends the finish
    reason, the usage chunk and `[DONE]`. It runs with handler cancellation, so a
    handler waiting for permission still notices its connection closing: `closed` is
    set then (or when a write fails), and `finished` only after a complete answer.
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens = list(tokens)
        self.requests: list[Any] = []
        self.closed = asyncio.Event()
        self.finished = False
        self._credits = asyncio.Semaphore(0)

    def allow(self, count: int = 1) -> None:
        """Let `count` more tokens out."""
        for _ in range(count):
            self._credits.release()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        """Serve on 127.0.0.1; yield the DSN of a provider pointed here."""
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=0.05
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            yield f"openai+http://{host}:{port}/v1"
        finally:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            await response.write(self._chunk(body, {"role": "assistant", "content": ""}))
            for token in self.tokens:
                await self._credits.acquire()
                await response.write(self._chunk(body, {"content": token}))
            await response.write(self._chunk(body, {}, finish="stop"))
            usage = {"id": "chatcmpl-1", "model": body["model"], "choices": []}
            await response.write(_sse({**usage, "usage": UPSTREAM_USAGE}))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except asyncio.CancelledError:
            self.closed.set()  # the connection was lost while the handler waited
            raise
        except ConnectionResetError:
            self.closed.set()  # the connection was lost under a write
            return response
        self.finished = True
        return response

    @staticmethod
    def _chunk(body: Any, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return _sse({"id": "chatcmpl-1", "model": body["model"], "choices": [choice]})


def _sse(data: Any) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


# --------------------------------------------------------------------------- answers


async def test_ask_fails_over_with_the_default_spec(
    kind: Kind, environment: pytest.MonkeyPatch
) -> None:
    """With no configuration at all, `/ask` answers from the fake backup after the
    head's 503 and its retry, and says so."""
    async with running(kind) as http, http.post("/ask", json={"prompt": "Hello there"}) as reply:
        assert reply.status == 200
        body = await reply.json()

    assert body["text"] == "Hello there"  # the fake echoes the prompt
    assert body["model"] == "fake/backup?chunk_delay=0.05"
    assert body["finish_reason"] == "stop"
    assert body["usage"]["output_tokens"] > 0
    assert [(f["target"], f["attempt"], f["error"]) for f in body["failed_attempts"]] == [
        ("fake/head?script=503", 1, "OverloadedError"),
        ("fake/head?script=503", 2, "OverloadedError"),
    ]


async def test_stream_arrives_token_by_token(kind: Kind, environment: pytest.MonkeyPatch) -> None:
    """Each token reaches the client before the upstream has produced the next one;
    the stream ends with a `done` event naming the model and the upstream's usage."""
    upstream = LockstepUpstream(["Once ", "upon ", "a ", "time."])
    async with upstream.running() as dsn:
        environment.setenv("LLM_UPSTREAM", dsn)
        environment.setenv(fastapi_app.SPEC_VARIABLE, "upstream/gpt-test")
        upstream.allow()  # the app answers once the first token arrived
        ask = {"prompt": "Go", "max_tokens": 50}
        async with running(kind) as http, http.post("/stream", json=ask) as reply:
            assert reply.status == 200
            assert reply.content_type == "text/event-stream"
            received = []
            for index in range(len(upstream.tokens)):
                if index:
                    upstream.allow()
                received.append(await next_event(reply))
            rest = await all_events(reply)

    assert received == texts("Once ", "upon ", "a ", "time.")
    assert rest == [
        (
            "done",
            {
                "model": "upstream/gpt-test",
                "finish_reason": "stop",
                "usage": {"input_tokens": 9, "output_tokens": 4},
                "failed_attempts": [],
            },
        )
    ]
    assert upstream.finished
    assert upstream.requests[0]["messages"][-1]["content"] == "Go"
    assert upstream.requests[0]["max_tokens"] == 50


async def test_a_disconnect_cancels_the_upstream_call(
    kind: Kind, environment: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that leaves mid-stream closes the upstream connection at once, while
    the upstream is silent, and costs the upstream target nothing in health."""
    upstream = LockstepUpstream(["one ", "two ", "three ", "four "])
    async with upstream.running() as dsn:
        environment.setenv("LLM_UPSTREAM", dsn)
        # A backup, so a disconnect mistaken for an upstream failure would also show
        # as a restart on it.
        environment.setenv(fastapi_app.SPEC_VARIABLE, "upstream/gpt-test,fake/backup")
        upstream.allow(2)
        async with running(kind) as http:
            async with http.post("/stream", json={"prompt": "Count"}) as reply:
                assert [await next_event(reply), await next_event(reply)] == texts("one ", "two ")
                reply.close()  # drop the connection, as a browser tab that closes
                with anyio.fail_after(READ_TIMEOUT):
                    await upstream.closed.wait()
            health = await health_after_disconnect(http)

    assert not upstream.finished
    assert len(upstream.requests) == 1
    assert health == {"spec": "upstream/gpt-test,fake/backup", "targets": {}}
    assert errors_logged(caplog) == []


async def test_without_handler_cancellation_the_next_token_ends_the_upstream_call(
    environment: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An aiohttp server left at its default keeps a handler running after its client
    left: the upstream call then ends when the next token fails to reach the client."""
    upstream = LockstepUpstream(["one ", "two ", "three ", "four "])
    async with upstream.running() as dsn:
        environment.setenv("LLM_UPSTREAM", dsn)
        environment.setenv(fastapi_app.SPEC_VARIABLE, "upstream/gpt-test")
        upstream.allow(2)
        async with running("aiohttp", handler_cancellation=False) as http:
            async with http.post("/stream", json={"prompt": "Count"}) as reply:
                assert [await next_event(reply), await next_event(reply)] == texts("one ", "two ")
                reply.close()
            upstream.allow()  # "three " goes to the app, which cannot write it anywhere
            with anyio.fail_after(READ_TIMEOUT):
                await upstream.closed.wait()
            health = await health_after_disconnect(http)

    assert not upstream.finished
    assert health["targets"] == {}
    assert errors_logged(caplog) == []


async def health_after_disconnect(http: aiohttp.ClientSession) -> Any:
    """The app's `/health`, read once the upstream saw its connection close.

    A (wrong) failure report for the dropped call would come from the app's task as it
    closed the upstream connection, so it would be in place before this round trip.
    """
    async with http.get("/health") as reply:
        assert reply.status == 200
        return await reply.json()


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every ERROR record (a server's "Exception in ASGI application", say)."""
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


async def test_a_mid_stream_failure_restarts_on_the_next_target(
    kind: Kind, environment: pytest.MonkeyPatch
) -> None:
    """A target that breaks after two tokens is replaced by the next: a `restart` event,
    the new answer, and a `done` event naming the target that answered. The broken
    target's failure is recorded in `/health` (which the disconnect test relies on)."""
    first = "fake/first?reply=one%20two%20three&break_after=2"
    second = "fake/second?reply=four%20five"
    environment.setenv(fastapi_app.SPEC_VARIABLE, f"{first},{second}")
    async with running(kind) as http:
        async with http.post("/stream", json={"prompt": "Count"}) as reply:
            assert reply.status == 200
            events = await all_events(reply)
        async with http.get("/health") as reply:
            health = await reply.json()

    names = ["message", "message", "restart", "message", "message", "done"]
    assert [name for name, _ in events] == names
    restart, done = events[2][1], events[5][1]
    assert [*events[:2], *events[3:5]] == texts("one ", "two ", "four ", "five")
    assert (restart["model"], restart["failed"]) == (second, first)
    assert done["model"] == second
    assert [(f["target"], f["error"]) for f in done["failed_attempts"]] == [
        (first, "ProviderConnectionError")
    ]
    assert health["targets"][first]["state"] == "failing"
    assert health["targets"][first]["consecutive_failures"] == 1


async def test_a_mid_stream_failure_with_no_target_left_is_an_error_event(
    kind: Kind, environment: pytest.MonkeyPatch
) -> None:
    """After the 200 and some tokens, a failure can only be reported in-band."""
    environment.setenv(fastapi_app.SPEC_VARIABLE, "fake/only?reply=one%20two%20three&break_after=1")
    async with running(kind) as http, http.post("/stream", json={"prompt": "Count"}) as reply:
        assert reply.status == 200
        events = await all_events(reply)

    assert events[0] == ("message", {"text": "one "})
    assert [name for name, _ in events] == ["message", "error"]
    error = events[1][1]
    assert error["error"] == "provider_error"
    assert error["target"] == "fake/only?reply=one%20two%20three&break_after=1"
    assert error["message"].startswith("ProviderConnectionError: ")


# --------------------------------------------------------------------------- errors


async def test_a_bad_body_is_rejected_before_any_call(
    kind: Kind, environment: pytest.MonkeyPatch
) -> None:
    """An empty prompt never reaches a model: FastAPI's 422, or the aiohttp app's 400."""
    environment.setenv(fastapi_app.SPEC_VARIABLE, "fake/never?script=hang")
    async with running(kind) as http:
        for path in ("/ask", "/stream"):
            async with http.post(path, json={"prompt": ""}) as reply:
                assert reply.status == (422 if kind == "fastapi" else 400)
                assert reply.content_type == "application/json"


ERROR_CASES = {
    # every target fails: 503, with each target's reason
    "chain exhausted": (
        "fake/a?script=timeout,fake/b?script=notfound",
        503,
        "chain_exhausted",
    ),
    # one target: the exhausted error must not be unwrapped as a one-error group
    "chain of one exhausted": ("fake/only?script=timeout", 503, "chain_exhausted"),
    # a permanent error is raised at once: 502
    "permanent provider error": ("fake/a?script=auth,fake/b", 502, "provider_error"),
    # the service's own configuration is wrong: 500
    "configuration error": ("nowhere/model-x", 500, "configuration_error"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
async def test_errors_map_to_statuses(
    kind: Kind, environment: pytest.MonkeyPatch, case: str
) -> None:
    """A call that fails before its first token answers with a status and a JSON body,
    from `/ask` and from `/stream` alike."""
    spec, status, error = ERROR_CASES[case]
    environment.setenv(fastapi_app.SPEC_VARIABLE, spec)
    bodies = []
    async with running(kind) as http:
        for path in ("/ask", "/stream"):
            async with http.post(path, json={"prompt": "Hello"}) as reply:
                assert (path, reply.status, reply.content_type) == (
                    path,
                    status,
                    "application/json",
                )
                bodies.append(await reply.json())

    assert bodies[0] == bodies[1]
    body = bodies[0]
    assert body["error"] == error
    if case == "chain exhausted":
        assert [(f["target"], f["error"]) for f in body["failures"]] == [
            ("fake/a?script=timeout", "ProviderTimeoutError"),
            ("fake/b?script=notfound", "ModelNotFoundError"),
        ]
        assert all(f["reason"] for f in body["failures"])
    elif case == "chain of one exhausted":
        assert [f["target"] for f in body["failures"]] == ["fake/only?script=timeout"]
    elif case == "permanent provider error":
        assert body["target"] == "fake/a?script=auth"
        assert body["message"].startswith("AuthenticationError: ")
    else:
        assert "LLM_NOWHERE" in body["message"]


def test_a_client_that_left_is_answered_499_and_nothing_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`cancel_on_disconnect`'s error maps to 499, "client closed request" (a reply the
    server drops: nobody is left to read it), quietly: it is no failure of the service."""
    status, body = fastapi_app.error_reply(ClientDisconnectedError("the client left"))
    assert (status, body.error, body.message) == (499, "client_disconnected", "the client left")
    assert errors_logged(caplog) == []
