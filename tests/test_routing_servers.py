"""Routing against real local servers: hedged first tokens, limits under 1,000 concurrent
calls (with and without random cancellations), balanced groups by latency and over a
failing member, and a stream's hold on its concurrency slot.

Every upstream is an `Upstream`: a small OpenAI-compatible aiohttp server on 127.0.0.1
(a `chat.completion` JSON reply, or Server-Sent Events for `"stream": true`) that counts
the requests it is handling at once and records when a client left mid-request (its
handler is cancelled: the server runs with `handler_cancellation=True`). A `Registry`
reaches it through an `openai+http://127.0.0.1:PORT/v1` DSN, as a user's would.

The clock is real. Every test takes well under 5 s, and the only assertion on wall time
is a generous bound (2 s) on how soon a hedge's loser has its connection closed.
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Final, Literal

import anyio
import attrs
import pytest
from aiohttp import web

from majordomo_async import (
    CallInfo,
    Chain,
    ChainConfig,
    HealthConfig,
    Hooks,
    Registry,
    Response,
    TargetSkippedError,
)

from .helpers.servers import serve_app

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")

Mode = Literal["answer", "hang", "hold"]

CREATED: Final = 1_700_000_000
SSE_HEADERS: Final = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
OVERLOADED: Final = {
    "error": {
        "message": "The engine is currently overloaded, please try again later.",
        "type": "service_unavailable_error",
        "param": None,
        "code": "server_is_overloaded",
    }
}
LEFT_WITHIN: Final = 2.0
"""Seconds after the answer by which a hedge's loser has had its connection closed."""


# --------------------------------------------------------------------------- the upstream


@attrs.define(eq=False)
class Upstream:
    """One OpenAI-compatible upstream, run by `upstreams()`.

    Every reply is "<name> answers" after `delay` seconds, or the error `status` (a 503
    carries OpenAI's overloaded body). `mode` "hang" never answers: a generate gets
    nothing at all, a stream its headers and then nothing. `mode` "hold" streams the role
    chunk and the first content chunk, then waits for `release` before the rest.
    """

    name: str
    delay: float = 0.0
    status: int = 200
    mode: Mode = "answer"
    url: str = ""
    """"http://127.0.0.1:PORT" while it runs."""
    requests: int = 0
    """Requests received."""
    in_flight: int = 0
    """Requests being handled now."""
    peak: int = 0
    """The most requests handled at once."""
    gone: list[float] = attrs.Factory(list)
    """`time.monotonic()` of each handler cancelled because its client left (or because
    the server stopped)."""
    left: asyncio.Event = attrs.Factory(asyncio.Event)
    """Set when a client first left mid-request."""
    release: asyncio.Event = attrs.Factory(asyncio.Event)
    """Lets "hold" streams finish."""

    @property
    def text(self) -> str:
        """What this upstream answers."""
        return f"{self.name} answers"

    @property
    def dsn(self) -> str:
        """The DSN that points a provider at this upstream."""
        return f"openai+http://{self.url.removeprefix('http://')}/v1"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/chat/completions`, counted while it is handled."""
        self.requests += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await self._reply(request)
        except asyncio.CancelledError:
            self.gone.append(time.monotonic())
            self.left.set()
            raise
        finally:
            self.in_flight -= 1

    async def _reply(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model, streaming = str(body["model"]), body.get("stream") is True
        if self.mode == "hang":
            if streaming:
                await web.StreamResponse(headers=SSE_HEADERS).prepare(request)
            await asyncio.Event().wait()  # until the client leaves or the server stops
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status != 200:
            return web.json_response(OVERLOADED, status=self.status)
        if not streaming:
            return web.Response(body=_completion(model, self.text), content_type="application/json")
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        first, _, rest = self.text.partition(" ")
        await response.write(_chunk(model, {"role": "assistant", "content": ""}))
        await response.write(_chunk(model, {"content": first}))
        if self.mode == "hold":
            await self.release.wait()
        await response.write(_chunk(model, {"content": " " + rest}))
        await response.write(_chunk(model, {}, "stop"))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _completion(model: str, text: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-routing",
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
        }
    ).encode()


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    data = {
        "id": "chatcmpl-routing",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(data).encode() + b"\n\n"


@asynccontextmanager
async def upstreams(*servers: Upstream, **registry: Any) -> AsyncIterator[Registry]:
    """Run `servers`; yield a `Registry` with one provider per server (`LLM_<NAME>`),
    built with the keyword arguments `registry`. Both are closed on the way out."""
    async with AsyncExitStack() as stack:
        for server in servers:
            app = web.Application()
            app.router.add_post("/v1/chat/completions", server.handle)
            server.url = await stack.enter_async_context(
                serve_app(app, handler_cancellation=True, shutdown_timeout=0.05)
            )

        # Let "hold" streams end before the servers stop (a held handler would wait for
        # the shutdown timeout).
        def release_all() -> None:
            for server in servers:
                server.release.set()

        stack.callback(release_all)
        env = {f"LLM_{server.name.upper()}": server.dsn for server in servers}
        yield await stack.enter_async_context(Registry(env=env, **registry))


async def eventually(check: Callable[[], bool], within: float = 2.0) -> None:
    """Wait until `check()` is true (polled every 5 ms), for `within` seconds at most."""
    # The states polled (a limiter's counters, a list of answers) have no event to wait on.
    with anyio.fail_after(within):
        while not check():  # noqa: ASYNC110
            await anyio.sleep(0.005)


async def generate_all(chain: Chain, calls: int, concurrency: int) -> list[Response]:
    """The answers of `calls` generates on `chain`, `concurrency` at a time."""
    remaining = calls
    answers: list[Response] = []

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            answers.append(await chain.generate("hi"))

    async with anyio.create_task_group() as group:
        for _ in range(concurrency):
            group.start_soon(worker)
    return answers


def only_limit_skips(response: Response) -> bool:
    """True when nothing failed on the way to `response`: at most, a target was skipped
    at its limit before the call waited for its slot."""
    return all(
        isinstance(failure.error, TargetSkippedError) and "at its limit" in str(failure.error)
        for failure in response.failed_attempts
    )


# --------------------------------------------------------------------------- hedging


class HedgeRecorder(Hooks):
    """Records the hedge hooks."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, object]] = []

    def hedge_started(self, call: CallInfo, key: str, *, after: float) -> None:
        self.events.append(("started", key, after))

    def hedge_won(self, call: CallInfo, key: str, *, loser: str) -> None:
        self.events.append(("won", key, loser))


@pytest.mark.parametrize("streaming", [False, True], ids=["generate", "stream"])
async def test_a_silent_head_is_hedged_and_left_with_its_connection_closed(
    streaming: bool,
) -> None:
    """The head accepts the request and never answers (a stream: sends its headers, then
    nothing). After `hedge_after` the backup starts beside it and answers; the head's
    request is cancelled, so its server sees the client leave, and nothing is held
    against the head."""
    head, backup = Upstream("head", mode="hang"), Upstream("backup")
    hooks = HedgeRecorder()
    async with upstreams(head, backup, hooks=[hooks]) as registry:
        chain = registry.parse("head/m,backup/m", config=ChainConfig(hedge_after=0.3))
        if streaming:
            async with await chain.stream("hi") as stream:
                response = await stream.collect()
        else:
            response = await chain.generate("hi")
        answered = time.monotonic()
        assert (response.model, response.text) == ("backup/m", backup.text)
        assert response.failed_attempts == ()  # the loser was cancelled, not failed
        with anyio.fail_after(LEFT_WITHIN):
            await head.left.wait()
        assert head.gone[0] - answered < LEFT_WITHIN
        assert (head.requests, backup.requests) == (1, 1)
        assert head.in_flight == 0
        snapshot = await registry.health.snapshot()
        health = snapshot.get("head/m")
        assert health is None or (health.state, health.consecutive_failures) == ("healthy", 0)
        assert all(health.in_flight == 0 for health in snapshot.values())
    assert hooks.events == [("started", "head/m", 0.3), ("won", "backup/m", "head/m")]


# --------------------------------------------------------------------------- limits


async def test_a_thousand_concurrent_calls_never_put_more_than_the_limit_upstream() -> None:
    """1,000 calls at once on an upstream capped at 8 in flight: the upstream never
    handles more than 8 at once, does handle 8, and every call is answered; afterwards
    no slot is held and no caller waits."""
    up = Upstream("up", delay=0.01)
    async with upstreams(up) as registry:
        registry.set_limits("up", max_concurrency=8)
        chain = registry.parse("up/a", config=ChainConfig(max_limit_wait=60))
        with anyio.fail_after(30):
            answers = await generate_all(chain, 1000, 1000)  # all 1,000 at once
        assert len(answers) == 1000
        assert all(answer.model == "up/a" and answer.text == up.text for answer in answers)
        assert all(only_limit_skips(answer) for answer in answers)
        assert (up.requests, up.peak) == (1000, 8)
        state = registry.health.limits.snapshot()["up"]
        assert (state.in_use, state.waiting) == (0, 0)
        assert (await registry.health.snapshot())["up/a"].in_flight == 0


@pytest.mark.parametrize("spec", ["up/a", "up/a|up2/a"], ids=["one-target", "group"])
async def test_random_cancellations_leak_no_slot_and_never_exceed_the_limit(spec: str) -> None:
    """The same 1,000 calls with about 30 % cancelled at random moments (waiting for a
    slot, in flight, or just handed one): each upstream still never handles more than 8
    at once, and at the end every slot is free, nobody waits, and no call is in flight.
    The second upstream's limit comes from its DSN (`?max_concurrency=8`)."""
    rng = random.Random(20261207)
    up, up2 = Upstream("up", delay=0.01), Upstream("up2", delay=0.01)
    async with upstreams(up, up2) as registry:
        registry.set_limits("up", max_concurrency=8)
        registry.load_env({"LLM_UP2": up2.dsn + "?max_concurrency=8"})
        chain = registry.parse(spec, config=ChainConfig(max_limit_wait=60))
        # The shortest the run can take (every slot always busy): cancellations spread
        # over it land on calls waiting, in flight, or being handed a slot.
        shortest = 1000 * 0.01 / (8 * len(spec.split("|")))
        deadlines = [rng.uniform(0, shortest) if rng.random() < 0.3 else None for _ in range(1000)]
        answered: list[Response] = []
        cancelled = 0

        async def call(cancel_after: float | None) -> None:
            nonlocal cancelled
            with anyio.move_on_after(cancel_after if cancel_after is not None else 60) as scope:
                answered.append(await chain.generate("hi"))
            cancelled += scope.cancelled_caught

        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                for deadline in deadlines:
                    group.start_soon(call, deadline)
        assert len(answered) + cancelled == 1000
        # Most of the ~300 deadlines fall before their call's answer (half of them at
        # least, even on the fastest machine).
        assert 100 < cancelled <= sum(deadline is not None for deadline in deadlines)
        assert all(only_limit_skips(answer) for answer in answered)
        assert up.peak <= 8 and up2.peak <= 8
        assert up.in_flight == up2.in_flight == 0
        limits = registry.health.limits.snapshot()
        assert {name: (s.in_use, s.waiting) for name, s in limits.items()} == {
            "up": (0, 0),
            "up2": (0, 0),
        }
        snapshot = await registry.health.snapshot()
        members = spec.split("|")
        assert {key: snapshot[key].in_flight for key in members} == dict.fromkeys(members, 0)
        assert all(snapshot[key].state == "healthy" for key in members)
        if len(members) == 2:
            assert all(snapshot[key].groups == (spec,) for key in members)


# --------------------------------------------------------------------------- balanced groups


async def test_least_busy_sends_most_calls_to_the_faster_member() -> None:
    """Two members, 10 ms and 60 ms, under a steady load of 20 calls in flight: the faster
    one finishes its calls sooner, so it is less busy more often and gets most calls
    (about 85 % in theory; 55 % is asserted)."""
    fast, slow = Upstream("fast", delay=0.01), Upstream("slow", delay=0.06)
    async with upstreams(fast, slow) as registry:
        chain = registry.parse("fast/m|slow/m")
        with anyio.fail_after(20):
            answers = await generate_all(chain, 400, 20)
        assert len(answers) == 400
        assert all(answer.failed_attempts == () for answer in answers)
        assert fast.requests + slow.requests == 400
        assert fast.requests > 0.55 * 400, (fast.requests, slow.requests)
        assert sum(answer.model == "fast/m" for answer in answers) == fast.requests
        snapshot = await registry.health.snapshot()
        slow_latency = snapshot["slow/m"].latency
        assert slow_latency is not None and slow_latency >= 0.06  # the server's own delay
        assert snapshot["fast/m"].in_flight == snapshot["slow/m"].in_flight == 0


@pytest.mark.parametrize("threshold", [2, 10**9], ids=["benched", "never-benched"])
async def test_every_call_of_a_member_answering_503_fails_over_to_the_other(
    threshold: int,
) -> None:
    """One member always answers 503. Every call it gets fails over to the other member
    within the same call, and every call is answered. With the default threshold the
    failing member is soon benched (and skipped); with an unreachable one it keeps
    getting calls, and each of them still ends on the healthy member."""
    good, bad = Upstream("good", delay=0.005), Upstream("bad", status=503)
    health = HealthConfig(failure_threshold=threshold)
    async with upstreams(good, bad, health=health) as registry:
        chain = registry.parse("good/m|bad/m", config=ChainConfig(transient_retries=-1))
        with anyio.fail_after(20):
            answers = await generate_all(chain, 200, 20)
        assert len(answers) == 200
        assert all(answer.model == "good/m" for answer in answers)
        assert good.requests == 200
        tried_bad = [
            failure
            for answer in answers
            for failure in answer.failed_attempts
            if failure.key == "bad/m" and not failure.skipped
        ]
        assert bad.requests == len(tried_bad) > 0  # each request of bad's, failed over
        state = (await registry.health.snapshot())["bad/m"].state
        if threshold == 2:
            assert state == "benched"
            assert bad.requests < 200
        else:
            assert state == "failing"
            assert bad.requests > 20  # it kept its share of first picks


# --------------------------------------------------------------------------- held streams


def limit_state(registry: Registry, name: str) -> tuple[int, int]:
    """(slots in use, callers waiting) of `name`'s limiter."""
    state = registry.health.limits.snapshot()[name]
    return state.in_use, state.waiting


@pytest.mark.parametrize("ending", ["closed", "dropped"])
async def test_an_open_stream_holds_its_slot_until_it_ends(ending: str) -> None:
    """max_concurrency=1: while a stream is open (established, not finished), a second
    call waits and is not sent. Closing the stream, or dropping it unclosed (garbage-
    collected, with a ResourceWarning), hands the slot to the waiting call."""
    up = Upstream("up", mode="hold")
    async with upstreams(up) as registry:
        registry.set_limits("up", max_concurrency=1)
        chain = registry.parse("up/a", config=ChainConfig(max_limit_wait=60))
        stream = await chain.stream("hi")
        answers: list[Response] = []

        async def call() -> None:
            answers.append(await chain.generate("hi"))

        async with anyio.create_task_group() as group:
            group.start_soon(call)
            await eventually(lambda: limit_state(registry, "up") == (1, 1))
            await anyio.sleep(0.1)
            assert (answers, up.requests) == ([], 1)  # still waiting, nothing sent
            if ending == "closed":
                await stream.aclose()
            else:
                with pytest.warns(ResourceWarning, match="unclosed stream"):
                    del stream
                    gc.collect()
            await eventually(lambda: bool(answers))
        assert [answer.text for answer in answers] == [up.text]
        assert up.requests == 2
        assert limit_state(registry, "up") == (0, 0)
        assert (await registry.health.snapshot())["up/a"].in_flight == 0


async def test_an_open_stream_sends_the_next_call_to_another_member() -> None:
    """A group of two members capped at 1 each: while one member's stream is open, the
    next call goes to the other member at once."""
    up, up2 = Upstream("up", mode="hold"), Upstream("up2", mode="hold")
    async with upstreams(up, up2) as registry:
        registry.set_limits("up", max_concurrency=1)
        registry.set_limits("up2", max_concurrency=1)
        chain = registry.parse("up/a|up2/a", config=ChainConfig(max_limit_wait=60))
        async with await chain.stream("hi") as stream:
            answer = await chain.generate("hi")
            assert answer.model != stream.model
            assert answer.failed_attempts == ()  # not even a skip: the idle one came first
            snapshot = await registry.health.snapshot()
            assert snapshot[stream.model].in_flight == 1
        assert limit_state(registry, "up") == limit_state(registry, "up2") == (0, 0)
        snapshot = await registry.health.snapshot()
        assert snapshot["up/a"].in_flight == snapshot["up2/a"].in_flight == 0
