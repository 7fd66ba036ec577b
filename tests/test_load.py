"""Load and soak: many concurrent streams over real sockets, and a long run of calls.

Sizes are bounded so the whole file runs in well under a minute on 2 cores; scale them
up with environment variables for a longer run:

    MAJORDOMO_LOAD_STREAMS=50000 MAJORDOMO_SOAK_CALLS=2000000 pytest tests/test_load.py

Every call must end with an answer or one of our typed errors; afterwards nothing is
left behind (connections, tasks, streams), memory is back where it was, and the health
tracker holds no more keys than there are targets.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from aiohttp import web

from majordomo_async import (
    Capabilities,
    ChainConfig,
    ChainExhaustedError,
    HealthConfig,
    MajordomoError,
    OverloadedError,
    ProviderConnectionError,
    Registry,
    Request,
    Response,
    Stream,
    StreamEnd,
    StreamStart,
    TextDelta,
    Usage,
    UsageUpdate,
)
from tests.helpers.servers import abort_connection, acquired_connections, serve

STREAMS = int(os.environ.get("MAJORDOMO_LOAD_STREAMS", "10000"))
SOAK_CALLS = int(os.environ.get("MAJORDOMO_SOAK_CALLS", "200000"))
CHUNKS = 5

pytestmark = pytest.mark.timeout(300)


def _frame(payload: object) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


_PIECE = _frame({"choices": [{"index": 0, "delta": {"content": "tok "}}]})
_FINISH = _frame({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
_USAGE = _frame({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": CHUNKS}})
_OK_BODY = _PIECE * CHUNKS + _FINISH + _USAGE + b"data: [DONE]\n\n"


class FaultyOpenAI:
    """An OpenAI-format streaming endpoint that misbehaves at random (seeded)."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.outcomes: Counter[str] = Counter()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        roll = self.random.random()
        if roll < 0.08:
            self.outcomes["503"] += 1
            return web.json_response({"error": {"message": "overloaded"}}, status=503)
        if roll < 0.11:
            self.outcomes["reset"] += 1
            abort_connection(request)
            return web.Response()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if roll < 0.15:
            # Content, then the body ends without the terminal signal.
            self.outcomes["truncated"] += 1
            await response.write(_PIECE * 2)
            return response
        self.outcomes["ok"] += 1
        await response.write(_OK_BODY)
        await response.write_eof()
        return response


@pytest.fixture
async def servers() -> AsyncIterator[tuple[str, str, FaultyOpenAI, FaultyOpenAI]]:
    first, second = FaultyOpenAI(1), FaultyOpenAI(2)
    async with (
        serve({"/v1/chat/completions": first.handle}) as a,
        serve({"/v1/chat/completions": second.handle}) as b,
    ):
        yield a, b, first, second


def python_objects() -> int:
    gc.collect()
    return len(gc.get_objects())


async def test_ten_thousand_concurrent_streams_with_random_faults(
    servers: tuple[str, str, FaultyOpenAI, FaultyOpenAI], no_leaked_tasks: None
) -> None:
    url_a, url_b, first, _ = servers
    env = {"LLM_A": f"openai+{url_a}/v1", "LLM_B": f"openai+{url_b}/v1"}
    config = ChainConfig(retry_backoff=0.01, max_retry_wait=0.05, timeout=60)
    health = HealthConfig(failure_threshold=50, base_cooldown=0.05, max_cooldown=0.2)
    outcomes: Counter[str] = Counter()
    async with Registry(env=env, chain=config, health=health) as registry:
        chain = registry.parse("a/m,b/m")

        async def one_call(index: int) -> None:
            try:
                async with await chain.stream(f"call {index}") as stream:
                    async for _ in stream:
                        pass
                response = stream.response
                assert response.text == "tok " * CHUNKS
                outcomes[f"answered by {response.model}"] += 1
            except ChainExhaustedError:
                outcomes["exhausted"] += 1
            except MajordomoError as exc:  # a failure after content reaches the consumer
                outcomes[type(exc).__name__] += 1

        async def run(count: int) -> None:
            async with anyio.create_task_group() as group:
                for index in range(count):
                    group.start_soon(one_call, index)

        await run(200)  # warm up: connections, caches, imports
        before = python_objects()
        await run(STREAMS)
        after = python_objects()
        session = registry._http.get()
        assert acquired_connections(session) == 0
        assert len(await registry.health.snapshot()) <= 2

    assert sum(outcomes.values()) == STREAMS + 200, outcomes
    assert outcomes["answered by a/m"] > STREAMS // 2, outcomes
    assert outcomes["answered by b/m"] > 0, outcomes  # failover really happened
    assert first.outcomes["truncated"] > 0 and first.outcomes["reset"] > 0
    assert not any(isinstance(o, Stream) for o in gc.get_objects())
    # Memory back at the baseline: no per-call object survives the calls.
    assert after - before < 2_000, (before, after)


class RandomModel:
    """An in-process model whose every call fails at random (seeded): no I/O at all."""

    def __init__(self, key: str, rng: random.Random, failure_rate: float) -> None:
        self.key = key
        self.rng = rng
        self.failure_rate = failure_rate
        self.response = Response(text="ok", model=key, usage=Usage(1, 1))

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities()

    def _maybe_fail(self) -> None:
        roll = self.rng.random()
        if roll < self.failure_rate:
            provider, _, model = self.key.partition("/")
            if roll < self.failure_rate / 2:
                raise OverloadedError("busy", provider=provider, model=model, status=503)
            raise ProviderConnectionError("reset", provider=provider, model=model)

    async def generate(self, request: Request | str, *options: Any) -> Response:
        await asyncio.sleep(0)
        self._maybe_fail()
        return self.response

    async def stream(self, request: Request | str, *options: Any) -> Stream:
        self._maybe_fail()
        return Stream(self._events(), model=self.key)

    async def _events(self) -> AsyncIterator[Any]:
        yield StreamStart(self.key)
        yield TextDelta("ok")
        yield UsageUpdate(Usage(1, 1))
        yield StreamEnd()


class RandomProvider:
    def __init__(self, name: str, rng: random.Random, failure_rate: float) -> None:
        self.name = name
        self.rng = rng
        self.failure_rate = failure_rate
        self.models: dict[str, RandomModel] = {}

    def model(self, model_id: str) -> RandomModel:
        key = f"{self.name}/{model_id}"
        return self.models.setdefault(model_id, RandomModel(key, self.rng, self.failure_rate))


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def quiet_library_logger() -> Iterator[None]:
    """Benches are logged at WARNING, and pytest keeps every captured record in memory:
    over a soak that would be the growth we measure, so the library logger is quieted."""
    logger = logging.getLogger("majordomo_async")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
@pytest.mark.usefixtures("quiet_library_logger")
async def test_soak_keeps_memory_and_tracker_flat(no_leaked_tasks: None) -> None:
    rng = random.Random(7)
    config = ChainConfig(retry_backoff=0, max_retry_wait=0)
    health = HealthConfig(failure_threshold=3, base_cooldown=0.001, max_cooldown=0.01)
    answered, failed = 0, 0
    samples: list[int] = []
    async with Registry(env={}, chain=config, health=health) as registry:
        for name, rate in (("flaky", 0.3), ("steady", 0.02), ("backup", 0.01)):
            registry.register_provider(RandomProvider(name, rng, rate))
        specs = ["flaky/a,steady/b,backup/c", "steady/b,flaky/a", "flaky/x,backup/c"]
        chains = [registry.parse(spec) for spec in specs]
        batch = 500

        async def one_call(index: int) -> None:
            nonlocal answered, failed
            chain = chains[index % len(chains)]
            try:
                if index % 4:
                    await chain.generate("soak")
                else:
                    async with await chain.stream("soak") as stream:
                        await stream.collect()
                answered += 1
            except MajordomoError:
                failed += 1

        for start in range(0, SOAK_CALLS, batch):
            async with anyio.create_task_group() as group:
                for index in range(start, start + batch):
                    group.start_soon(one_call, index)
            if start // batch % 40 == 0:
                gc.collect()
                samples.append(rss_bytes())
        keys = len(await registry.health.snapshot())

    assert answered + failed == SOAK_CALLS
    assert answered > SOAK_CALLS * 0.9
    assert keys <= 5  # never more than the targets
    # RSS flat: after warm-up it grows by less than 8 MiB over the whole run.
    warm = samples[1] if len(samples) > 2 else samples[0]
    assert max(samples) - warm < 8 * 1024 * 1024, [s // 1024 for s in samples]
    print(f"\nsoak: {SOAK_CALLS} calls, RSS samples (KiB): {[s // 1024 for s in samples]}")
