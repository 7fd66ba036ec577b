"""RedisHealthStore against a real redis-server (a private one per test session).

The store must keep the in-process store's rules op for op (checked against the
reference model), stay atomic when several stores update one target at once, hand out
one probe per expired cooldown across a fleet (with a lease that expires), keep every key
under its prefix with a TTL, live on the server's clock, never wait for Redis on the
healthy path, and carry on in process, with one warning, while Redis is away.

The fleet test runs replicas as separate processes against one local fault server and
compares attempts on the failing head with shared (Redis) and per-process state.

Cooldowns here are real (they are on the Redis server's clock), so they are short.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from aiohttp import web

from majordomo_async import (
    Admission,
    ConfigurationError,
    HealthConfig,
    HealthTracker,
    InMemoryHealthStore,
    ManualClock,
    RedisHealthStore,
    Registry,
)

from .helpers.redis_server import REPOSITORY, RedisServer, worker_command
from .helpers.reference import replay
from .helpers.servers import serve

if TYPE_CHECKING:
    from redis.asyncio import Redis

pytestmark = pytest.mark.timeout(120)

CONFIG = HealthConfig(failure_threshold=2, base_cooldown=0.05, cooldown_factor=2, max_cooldown=0.2)
LONG = HealthConfig(failure_threshold=2, base_cooldown=30, max_cooldown=30)
"""For tests that need a target to stay benched however slow the machine is."""

MakeStore = Callable[..., RedisHealthStore]


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def stores(redis_server: RedisServer, prefix: str) -> AsyncIterator[MakeStore]:
    """Makes stores on the session's server under this test's prefix; closes them after."""
    made: list[RedisHealthStore] = []

    def make(
        url: str | None = None, config: HealthConfig = CONFIG, **options: Any
    ) -> RedisHealthStore:
        options.setdefault("prefix", prefix)
        # Generous: tests of sharing must not slip into the fallback on a loaded machine
        # (the fallback's own tests set a short timeout).
        options.setdefault("timeout", 2.0)
        store = RedisHealthStore(url or redis_server.url, config, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A plain client on the session's server, to look at what the stores wrote."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


async def server_time(redis: Redis) -> float:
    seconds, micros = await redis.time()
    return seconds + micros / 1e6


async def wait_until(store: RedisHealthStore, when: float) -> None:
    """Wait until the server's clock (as `store` estimates it) passes `when`."""
    await anyio.sleep(max(when - store.now(), 0.0) + 0.003)
    assert store.now() > when


async def eventually(condition: Callable[[], Awaitable[bool]], within: float) -> float:
    """Seconds until `condition()` holds (checked every 2 ms), failing after `within`."""
    started = time.monotonic()
    with anyio.fail_after(within):
        # Polling: the change comes from another store, a process, or a server restart,
        # none of which this test can await directly.
        while not await condition():  # noqa: ASYNC110
            await anyio.sleep(0.002)
    return time.monotonic() - started


async def bench(store: RedisHealthStore, key: str) -> float:
    """Record failures until `key` is benched; the cooldown's end."""
    for _ in range(CONFIG.failure_threshold):
        until = await store.record_failure(key, None)
    assert until is not None
    return until


def finished_at_once(coroutine: Awaitable[Any]) -> Any:
    """The value of a coroutine that completes without suspending even once."""
    with pytest.raises(StopIteration) as stop:
        coroutine.send(None)  # type: ignore[attr-defined]
    return stop.value.value


# --------------------------------------------------------------------------- semantics


class Recorder:
    """Runs ops on a store and logs them with the server time each one was decided at."""

    def __init__(self, store: RedisHealthStore) -> None:
        self.store = store
        self.log: list[tuple[str, str, float, Any, Any]] = []

    async def run(self, op: str, key: str, argument: float | None) -> None:
        store = self.store
        result: Any = None
        if op == "admit":
            result = await store.admit(key)
        elif op == "fail":
            result = await store.record_failure(key, argument)
        elif op == "success":
            await store.record_success(key)
        else:
            await store.release_probe(key)
        self.log.append((op, key, store._decided_at, argument, result))


@pytest.mark.parametrize("seed", range(4))
async def test_store_answers_like_the_reference_model(stores: MakeStore, seed: int) -> None:
    """Random op sequences in real (server) time: every answer and the final state match
    the reference model replayed at the times the store decided."""
    rng = random.Random(seed)
    config = HealthConfig(
        failure_threshold=rng.randint(1, 3),
        base_cooldown=0.02,
        cooldown_factor=2,
        max_cooldown=0.08,
        max_retry_after=0.1,
    )
    store = stores(config=config)
    recorder = Recorder(store)
    ops = ["admit"] * 4 + ["fail"] * 4 + ["success", "release", "wait", "wait"]
    for _ in range(70):
        op = rng.choice(ops)
        if op == "wait":
            await anyio.sleep(rng.choice([0.0, 0.01, 0.03, 0.09]))
            continue
        hint = rng.choice([None, None, 0.05, 0.5]) if op == "fail" else None
        await recorder.run(op, rng.choice(["p/a", "p/b"]), hint)

    reference = replay(recorder.log, config)

    assert dict(await store.snapshot()) == reference.snapshot()
    assert any(op == "admit" and result.probe for op, *_, result in recorder.log)


async def test_healthy_and_benched_answers_never_wait_for_redis(stores: MakeStore) -> None:
    """The hot path: admitting or resetting a healthy target, and refusing a benched one,
    complete without suspending (no round trip, not even a scheduling point)."""
    store = stores(config=LONG)
    assert await store.admit("p/warm") == Admission(True)  # the first call waits for a read

    for _ in range(100):
        assert finished_at_once(store.admit("p/healthy")) == Admission(True)
        assert finished_at_once(store.record_success("p/healthy")) is None
    await store.record_failure("p/failing", None)
    assert finished_at_once(store.admit("p/failing")) == Admission(True)
    until = await bench(store, "p/benched")
    assert finished_at_once(store.admit("p/benched")) == Admission(False, until=until)


async def test_another_replica_sees_a_bench_within_the_staleness_bound(
    stores: MakeStore,
) -> None:
    """A bench recorded by one store reaches another's view within its stated bound."""
    config = HealthConfig(failure_threshold=1, base_cooldown=5)
    writer = stores(config=config)
    reader = stores(config=config, refresh_interval=0.05, timeout=0.1)
    assert (await reader.admit("p/m")).admitted  # starts its background refresh

    until = await writer.record_failure("p/m", None)

    async def refused() -> bool:
        return not (await reader.admit("p/m")).admitted

    elapsed = await eventually(refused, within=2)

    assert elapsed <= reader.staleness_bound + 0.1  # plus the event loop's scheduling
    assert await reader.admit("p/m") == Admission(False, until=until)


async def test_concurrent_failures_from_several_stores_are_all_counted(
    stores: MakeStore,
) -> None:
    """100 concurrent failures from 4 stores: 100 counted, one bench, one deadline."""
    config = HealthConfig(failure_threshold=10, base_cooldown=30, max_cooldown=30)
    fleet = [stores(config=config) for _ in range(4)]
    results: list[float | None] = []

    async def fail(store: RedisHealthStore) -> None:
        results.append(await store.record_failure("p/m", None))

    async with anyio.create_task_group() as group:
        for _ in range(25):
            for store in fleet:
                group.start_soon(fail, store)

    failures, benchings, until, probing = (await fleet[0].snapshot())["p/m"]
    assert (failures, benchings, probing) == (100, 1, False)
    assert results.count(None) == 9
    assert {result for result in results if result is not None} == {until}


async def test_a_reset_by_one_store_is_seen_by_all(stores: MakeStore) -> None:
    """A success anywhere clears the target everywhere (after a refresh)."""
    fleet = [stores(config=LONG) for _ in range(3)]
    await bench(fleet[0], "p/m")
    for store in fleet:
        await store.refresh()
    assert not (await fleet[2].admit("p/m")).admitted

    await fleet[1].record_success("p/m")
    for store in fleet:
        await store.refresh()

    assert [await store.admit("p/m") for store in fleet] == [Admission(True)] * 3
    assert dict(await fleet[2].snapshot()) == {}


async def test_one_probe_per_expired_cooldown_across_the_fleet(stores: MakeStore) -> None:
    """Fifty concurrent admissions from five stores after a cooldown: one probe. It fails:
    benched again, longer; the next expiry again has one probe, which succeeds."""
    fleet = [stores() for _ in range(5)]
    until = await bench(fleet[0], "p/m")

    async def admit_all() -> list[Admission]:
        answers: list[Admission] = []

        async def admit(store: RedisHealthStore) -> None:
            answers.append(await store.admit("p/m"))

        for store in fleet:
            await store.refresh()
        async with anyio.create_task_group() as group:
            for _ in range(10):
                for store in fleet:
                    group.start_soon(admit, store)
        return answers

    await wait_until(fleet[0], until)
    first = await admit_all()
    assert not any(store.degraded for store in fleet)
    assert sum(answer.probe for answer in first) == 1
    assert [answer for answer in first if not answer.probe] == [Admission(False)] * 49

    second_until = await fleet[3].record_failure("p/m", None)  # the probe failed
    assert second_until is not None
    assert second_until - until >= CONFIG.cooldown(2)
    await wait_until(fleet[0], second_until)
    second = await admit_all()
    assert sum(answer.probe for answer in second) == 1
    await fleet[4].record_success("p/m")
    assert [answer for answer in await admit_all() if not answer.admitted] == []


async def test_a_crashed_probers_lease_expires(
    stores: MakeStore, redis: Redis, prefix: str
) -> None:
    """A prober that dies without a verdict blocks the next probe for its lease, no longer;
    only the lease's holder can give it back early."""
    crashed, other, bystander = (stores(probe_lease=0.5) for _ in range(3))
    until = await bench(other, "p/m")
    for store in (crashed, other, bystander):
        await store.refresh()
    await wait_until(other, until)
    assert (await crashed.admit("p/m")).probe
    await crashed.aclose()  # gone, verdict never reported

    await bystander.release_probe("p/m")  # not the holder: nothing happens
    await other.refresh()
    assert await other.admit("p/m") == Admission(False)
    lease_end = float(await redis.hget(f"{prefix}t:p/m", "p") or 0)
    assert 0.5 <= lease_end - until < 2

    await wait_until(other, lease_end)
    assert (await other.admit("p/m")).probe
    await other.release_probe("p/m")  # the holder gives it back: free at once
    assert (await bystander.admit("p/m")).probe


async def test_every_key_is_prefixed_and_expires(
    stores: MakeStore, redis: Redis, prefix: str
) -> None:
    """Keys live under the prefix with a TTL of key_ttl past the cooldown's end; state that
    nobody touches disappears."""
    config = HealthConfig(failure_threshold=2, base_cooldown=0.2, max_cooldown=0.2)
    store = stores(config=config, key_ttl=0.3, probe_lease=0.3)
    until = await bench(store, "p/benched")
    await store.record_failure("p/failing", None)

    keys = sorted([key async for key in redis.scan_iter(match="*")])
    ours = [key for key in keys if key.startswith(prefix)]
    assert ours == sorted(
        f"{prefix}{name}" for name in ("gen", "index", "t:p/benched", "t:p/failing")
    )
    assert all(key.startswith("test:") for key in keys), keys  # nothing outside a prefix
    cooldown_left = until - await server_time(redis)  # read first: TTLs only shrink after
    ttls = {key.removeprefix(prefix): await redis.pttl(key) for key in ours}
    assert 100 < ttls["t:p/failing"] <= 300
    # +2 ms: the script rounds the TTL up to a whole millisecond, and Redis measures it
    # against its own millisecond clock, which may lag the microseconds of TIME by one.
    assert 300 < ttls["t:p/benched"] <= (0.3 + cooldown_left) * 1000 + 2
    assert ttls["gen"] >= ttls["t:p/benched"] and ttls["index"] >= ttls["t:p/benched"]

    await wait_until(store, until + 0.35)
    assert [key async for key in redis.scan_iter(match=f"{prefix}*")] == []
    assert dict(await store.snapshot()) == {}


async def test_deadlines_are_on_the_servers_clock(stores: MakeStore, redis: Redis) -> None:
    """Cooldowns end at server time + cooldown; now() tracks the server's clock even when
    the local estimate starts an hour off; the tracker converts to its own clock."""
    store = stores(config=LONG)
    store._clock.offset += 3600  # as if this host's clock were an hour fast
    before = await server_time(redis)
    until = await bench(store, "p/m")
    after = await server_time(redis)

    assert before + LONG.base_cooldown <= until <= after + LONG.base_cooldown
    assert abs(store.now() - await server_time(redis)) < 0.05

    clock = ManualClock(start=100.0)
    tracker = HealthTracker(LONG, clock=clock, store=store)
    refused = await tracker.admit("p/m")
    assert refused.until == until
    assert 129 < tracker.local_time(until) <= 100.0 + LONG.base_cooldown


# --------------------------------------------------------------------------- Redis away


@contextmanager
def silent_server() -> Iterator[str]:
    """A Redis URL whose server accepts connections and never answers: a stalled Redis."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


def closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://:hunter2@127.0.0.1:{port}/0"


@pytest.mark.parametrize("kind", ["refused", "stalled"])
async def test_an_unreachable_or_stalled_redis_falls_back_with_one_warning(
    stores: MakeStore, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """Every operation answers, within the timeout, with the in-process rules; one
    warning for the whole outage, without the password."""
    caplog.set_level(logging.INFO, logger="majordomo_async")
    with silent_server() as stalled:
        url = closed_port_url() if kind == "refused" else stalled
        store = stores(url=url, timeout=0.1, reconnect_delay=5)
        started = time.monotonic()
        assert await store.record_failure("p/m", None) is None
        first = time.monotonic() - started
        until = await store.record_failure("p/m", None)
        assert until is not None and store.degraded
        assert await store.admit("p/m") == Admission(False, until=until)
        assert await store.admit("p/other") == Admission(True)
        await store.release_probe("p/m")
        await store.record_success("p/m")
        assert dict(await store.snapshot()) == {}
        rest = time.monotonic() - started - first

    assert first < 0.3
    assert rest < 0.05  # after the first failure, nothing waits for Redis
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "did not answer" in warnings[0].getMessage()
    assert "hunter2" not in caplog.text


@pytest.fixture
def own_redis_server(redis_server: RedisServer) -> Iterator[RedisServer]:
    """A second, private redis-server that a test may kill and restart."""
    server = RedisServer(redis_server.binary).start()
    try:
        yield server
    finally:
        server.close()


async def test_redis_killed_in_the_middle_of_a_load_run(
    own_redis_server: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Callers keep going through a Redis crash: none fails or stalls; the store carries
    on in process and, when Redis is back (empty), shares state again."""
    caplog.set_level(logging.INFO, logger="majordomo_async")
    from redis.asyncio import Redis

    config = HealthConfig(base_cooldown=0.1, cooldown_factor=1, max_cooldown=0.1)
    server = own_redis_server
    store = RedisHealthStore(
        server.url,
        config,
        prefix=prefix,
        timeout=0.5,
        refresh_interval=0.05,
        reconnect_delay=0.05,
        max_reconnect_delay=0.1,
    )
    head = "fake/head?script=503"
    durations: list[float] = []
    answers: list[str] = []
    errors: list[BaseException] = []

    def degraded() -> bool:
        return store.degraded

    async def caller() -> None:
        while True:
            started = time.monotonic()
            try:
                response = await chain.generate("hi")
                answers.append(response.model)
            except Exception as exc:
                errors.append(exc)
            durations.append(time.monotonic() - started)

    try:
        async with Registry(env={}, health=config, health_store=store) as registry:
            chain = registry.parse(f"{head},fake/tail?latency=0.005")
            async with anyio.create_task_group() as group:
                for _ in range(8):
                    group.start_soon(caller)
                await anyio.sleep(0.3)
                assert not degraded()
                server.stop()  # SIGKILL: connections die, state is gone
                await anyio.sleep(0.4)
                assert degraded()
                calls_while_down = len(answers)
                server.start()

                async def shared_again() -> bool:
                    return not degraded()

                await eventually(shared_again, within=3)
                await anyio.sleep(0.2)
                group.cancel_scope.cancel()
            assert len(answers) > calls_while_down
            client = Redis.from_url(server.url, decode_responses=True)
            try:
                # What the replica learned while Redis was away is shared again.
                assert await client.hget(f"{prefix}t:{head}", "b") is not None
            finally:
                await client.aclose()
    finally:
        await store.aclose()

    assert errors == []
    assert set(answers) == {"fake/tail?latency=0.005"}
    assert max(durations) < 0.5 + 0.3, max(durations)  # the store's timeout, and more
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([w for w in warnings if w.startswith("health store")]) == 1, warnings
    assert any("answers again" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- wiring


async def test_the_registry_takes_the_store_from_the_environment_and_closes_it(
    redis_server: RedisServer, prefix: str
) -> None:
    """MAJORDOMO_HEALTH_STORE=redis://...?options selects the store; aclose() closes it."""
    env = {"MAJORDOMO_HEALTH_STORE": f"{redis_server.url}?prefix={prefix}&refresh_interval=0.1"}
    config = HealthConfig(failure_threshold=1)
    async with Registry(env=env, health=config) as registry:
        store = registry.health.store
        assert isinstance(store, RedisHealthStore)
        assert (store.prefix, store.refresh_interval) == (prefix, 0.1)
        response = await registry.parse("fake/head?script=503,fake/tail").generate("hi")
        assert response.model == "fake/tail"
        assert set(await store.snapshot()) == {"fake/head?script=503"}
    assert "closed" in repr(store)
    assert [task for task in asyncio.all_tasks() if "majordomo health" in task.get_name()] == []


async def test_a_store_given_to_the_registry_stays_open(stores: MakeStore) -> None:
    store = stores()
    async with Registry(env={}, health_store=store) as registry:
        await registry.health.report_failure("p/m")
    assert "closed" not in repr(store)
    assert (await store.snapshot())["p/m"][0] == 1


@pytest.mark.parametrize("value", [None, "", "memory"])
def test_the_in_process_store_stays_the_default(value: str | None) -> None:
    env = {} if value is None else {"MAJORDOMO_HEALTH_STORE": value}

    assert isinstance(Registry(env=env).health.store, InMemoryHealthStore)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("http://user:hunter2@host:80/", "unsupported health store"),
        ("redis://:hunter2@127.0.0.1:6379/0?timeout=soon", "not a number"),
        ("redis://127.0.0.1:6379/0?probe_lease=7200", "key_ttl must be >= probe_lease"),
        ("redis://127.0.0.1:6379/0?refresh_interval=0", "refresh_interval must be positive"),
    ],
)
def test_a_bad_store_url_is_a_configuration_error(value: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Registry(env={"MAJORDOMO_HEALTH_STORE": value})

    assert message in str(caught.value)
    assert "MAJORDOMO_HEALTH_STORE" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_redis_is_not_imported_unless_a_store_uses_it() -> None:
    code = (
        "import sys, majordomo_async\n"
        "majordomo_async.Registry(env={})\n"
        "assert 'redis' not in sys.modules, 'redis imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_a_borrowed_client_is_used_and_left_open(
    redis_server: RedisServer, prefix: str
) -> None:
    """A redis.asyncio client (bytes responses) can be passed in; aclose() leaves it open."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_server.url)
    try:
        async with RedisHealthStore(client, LONG, prefix=prefix) as store:
            until = await bench(store, "p/m")
            assert await store.admit("p/m") == Admission(False, until=until)
        assert await client.hget(f"{prefix}t:p/m", "f") == b"2"
    finally:
        await client.aclose()


async def test_aclose_stops_the_background_refresh(stores: MakeStore) -> None:
    store = stores()
    await store.admit("p/m")
    assert any("majordomo health" in task.get_name() for task in asyncio.all_tasks())

    await store.aclose()
    await store.aclose()

    assert not any("majordomo health" in task.get_name() for task in asyncio.all_tasks())
    assert await store.admit("p/m") == Admission(True)  # a closed store still answers


# --------------------------------------------------------------------------- the fleet

WORKERS = 4
CALLERS = 2
COOLDOWN = 0.2
DOWN = 2.0
UP = 0.8

_COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1_900_000_000,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}
_OVERLOADED = {"error": {"message": "overloaded", "type": "server_error", "code": None}}


class Head:
    """The chain's head: answers 503 while `down`, and records every attempt."""

    def __init__(self) -> None:
        self.down = True
        self.attempts: list[tuple[float, int]] = []

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        status = 503 if self.down else 200
        self.attempts.append((time.monotonic(), status))
        if status == 503:
            return web.json_response(_OVERLOADED, status=503)
        return web.json_response(_COMPLETION)


async def run_fleet(store: str, prefix: str) -> dict[str, Any]:
    """Run WORKERS replica processes against a head that is down for DOWN s, then up."""
    head = Head()
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    async with serve({"/v1/chat/completions": head.handle}) as base:
        command = worker_command(base.removeprefix("http://"), store, prefix, COOLDOWN, CALLERS)
        workers = [
            await asyncio.create_subprocess_exec(
                *command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=REPOSITORY,
                env=env,
            )
            for _ in range(WORKERS)
        ]
        try:
            for worker in workers:
                assert worker.stdout is not None
                with anyio.fail_after(60):
                    assert await worker.stdout.readline() == b"ready\n"
            started = time.monotonic()
            await anyio.sleep(DOWN)
            head.down = False
            up_at = time.monotonic()
            await anyio.sleep(UP)
            summaries = []
            for worker in workers:
                assert worker.stdin is not None and worker.stdout is not None
                worker.stdin.write(b"stop\n")
                await worker.stdin.drain()
            for worker in workers:
                assert worker.stdout is not None
                with anyio.fail_after(30):
                    summaries.append(json.loads(await worker.stdout.readline()))
                    assert await worker.wait() == 0
        finally:
            for worker in workers:
                if worker.returncode is None:
                    worker.kill()
                    await worker.wait()
    steady_from = started + 2 * COOLDOWN
    steady = [at for at, status in head.attempts if status == 503 and steady_from <= at < up_at]
    return {
        "failed_attempts": sum(1 for _, status in head.attempts if status == 503),
        "steady_attempts": steady,
        "windows": (up_at - steady_from) / COOLDOWN,
        "recovered": sum(summary["recovered"] for summary in summaries),
        "summaries": summaries,
    }


async def test_a_fleet_shares_what_it_learns_through_redis(
    redis_server: RedisServer, prefix: str
) -> None:
    """Four replica processes call a chain whose head is down, then recovers. With
    Redis, the fleet sends one probe per expired cooldown and exactly one recovery probe;
    with in-process stores each replica probes on its own."""
    shared = await run_fleet(redis_server.url, prefix)
    alone = await run_fleet("memory", prefix)

    for run in (shared, alone):
        for summary in run["summaries"]:
            assert summary["error_count"] == 0, summary["errors"]
            assert summary["answers"]["head/m"] > 0  # every replica is back on the head
            assert summary["degraded"] in (False, None)
            assert summary["store_warnings"] == []
    windows = shared["windows"]
    print(
        f"\nfleet of {WORKERS}, cooldown {COOLDOWN} s, head down {DOWN} s "
        f"({windows:.1f} steady cooldown windows):\n"
        f"  Redis:      {shared['failed_attempts']} failed attempts in all, "
        f"{len(shared['steady_attempts'])} in the steady windows "
        f"({len(shared['steady_attempts']) / windows:.2f} per window), "
        f"{shared['recovered']} recovery probe(s)\n"
        f"  in-process: {alone['failed_attempts']} failed attempts in all, "
        f"{len(alone['steady_attempts'])} in the steady windows "
        f"({len(alone['steady_attempts']) / windows:.2f} per window), "
        f"{alone['recovered']} recovery probe(s)"
    )
    steady = shared["steady_attempts"]
    assert windows * 0.5 <= len(steady) <= windows + 1
    gaps = [later - earlier for earlier, later in pairwise(steady)]
    assert min(gaps) >= COOLDOWN * 0.95, "two replicas probed the same expired cooldown"
    assert shared["recovered"] == 1
    assert len(alone["steady_attempts"]) >= WORKERS * windows * 0.5
    assert alone["recovered"] == WORKERS
