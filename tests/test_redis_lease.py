"""The probe lease of a stream being read, on the Redis store.

A half-open probe is held for `probe_lease` at most without news; the chain renews it (a
third of a lease apart, as events arrive) while the probe's stream is read. These tests
check, on a real redis-server and with a short lease, that a renewal extends the lease on
the server, that every other replica (a store with its own connections) sees the probe
as taken for as long as the renewals go on, well past the end of the original lease, and
that the lease runs out once they stop. First through the store's `renew_probe`, then
through a chain streaming from a local server that sends each event when the test says.

Renewals come far more often than the lease needs (a sixth of a lease apart, or every
event): a pause of most of a lease on a loaded machine still cannot end the probe.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from aiohttp import web

from majordomo_async import (
    Admission,
    HealthConfig,
    RedisHealthStore,
    Registry,
    TextDelta,
)

from .helpers.redis_server import (
    RedisServer,
    eventually,
    lease_of,
    server_time,
    store_factory,
    wait_until,
)
from .helpers.servers import serve

if TYPE_CHECKING:
    from redis.asyncio import Redis

pytestmark = pytest.mark.timeout(120)

LEASE = 0.9
CONFIG = HealthConfig(failure_threshold=1, base_cooldown=0.05, max_cooldown=0.05, probe_lease=LEASE)
MakeStore = Callable[..., RedisHealthStore]


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[MakeStore]:
    async with store_factory(redis_server.url) as make:
        yield make


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


async def test_renewals_hold_the_probe_fleet_wide_past_the_first_lease(
    stores: MakeStore, redis: Redis
) -> None:
    """The holder renews every sixth of a lease: each renewal moves the lease's end on
    the server to now + lease, and another replica can neither take the probe nor see
    the target as free, until well past the end of the first lease. Once the renewals
    stop, the lease runs out and the other replica takes the probe."""
    holder, other = stores(CONFIG), stores(CONFIG)
    assert holder.probe_lease == other.probe_lease == LEASE
    benched = await holder.record_failure("p/m", None)
    assert benched is not None
    await wait_until(holder, benched.until)
    probe = (await holder.admit("p/m")).probe
    assert probe is not None
    first_end, _ = await lease_of(redis, holder.key_prefix, "p/m")
    assert first_end is not None

    ends = [first_end]
    while await server_time(redis) < first_end + LEASE / 3:
        await anyio.sleep(LEASE / 6)
        before = await server_time(redis)
        assert await holder.renew_probe("p/m", probe) is True
        end, token = await lease_of(redis, holder.key_prefix, "p/m")
        assert token == probe and end is not None
        assert end >= before + LEASE  # extended on the server, from the renewal's time
        ends.append(end)
        # Fleet-wide: the other replica asks Redis for the probe and is refused.
        assert await other.admit("p/m") == Admission(False)
        assert (await other.snapshot())["p/m"][3] is True  # probing

    assert len(ends) >= 6 and ends == sorted(ends)
    assert ends[-1] > first_end + LEASE / 3  # held past the first lease's end

    await wait_until(other, ends[-1])  # no renewal since: the lease runs out

    async def taken_by_other() -> bool:
        return (await other.admit("p/m")).probe is not None

    await eventually(taken_by_other, within=5)
    assert await holder.renew_probe("p/m", probe) is False  # lost, as it should be


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    """One Chat Completions stream chunk as OpenAI writes it."""
    body = {
        "id": "chatcmpl-lease",
        "object": "chat.completion.chunk",
        "created": 1_900_000_000,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


class Paced:
    """A streaming endpoint that writes each frame the test queues (None: the end)."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.requests = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.requests += 1
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(chunk({"role": "assistant", "content": ""}))
        while (frame := await self.frames.get()) is not None:
            await response.write(frame)
        await response.write(chunk({}, "stop") + b"data: [DONE]\n\n")
        return response


async def test_a_probe_stream_being_read_keeps_its_lease_fleet_wide(
    redis_server: RedisServer, stores: MakeStore, redis: Redis
) -> None:
    """The real path: a chain whose target is half-open streams its probe from a local
    server, an event every sixth of a lease, for longer than a lease. The chain renews the
    lease as events arrive; another replica is refused the probe throughout. When the
    stream ends, the probe's success resets the target for the whole fleet."""
    store, other = stores(CONFIG), stores(CONFIG)
    paced = Paced()
    async with serve({"/v1/chat/completions": paced.handle}) as base:
        env = {"LLM_HEAD": f"openai+{base}/v1"}
        async with Registry(env=env, health=CONFIG, health_store=store) as registry:
            benched = await store.record_failure("head/m", None)
            assert benched is not None
            await wait_until(store, benched.until)

            # A stream is established by its first content: queued before it is asked for.
            await paced.frames.put(chunk({"content": "<0>"}))
            stream = await registry.parse("head/m").stream("hi")
            async with stream:
                first_end, probe = await lease_of(redis, store.key_prefix, "head/m")
                assert first_end is not None and probe is not None
                assert await other.admit("head/m") == Admission(False)
                events = stream.__aiter__()
                ends = [first_end]
                piece = 0
                while await server_time(redis) < first_end + LEASE / 3:
                    await anyio.sleep(LEASE / 6)
                    piece += 1
                    await paced.frames.put(chunk({"content": f"<{piece}>"}))
                    # Read up to that piece: the read renews the lease when it is due.
                    while not (
                        isinstance(event := await events.__anext__(), TextDelta)
                        and event.text == f"<{piece}>"
                    ):
                        pass
                    end, token = await lease_of(redis, store.key_prefix, "head/m")
                    assert token == probe and end is not None
                    ends.append(end)
                    assert end > await server_time(redis)  # never lapsed
                    assert await other.admit("head/m") == Admission(False)

                assert ends[-1] > first_end + LEASE / 3  # renewed past the first lease
                assert len(set(ends)) >= 3  # renewed, a third of a lease apart at most
                await paced.frames.put(None)
                rest = [event async for event in stream if isinstance(event, TextDelta)]
                assert rest == []  # every piece was read above
    assert paced.requests == 1

    async def healthy_everywhere() -> bool:
        return await other.admit("head/m") == Admission(True)

    await eventually(healthy_everywhere, within=5)
    assert await redis.exists(f"{store.key_prefix}t:head/m") == 0
