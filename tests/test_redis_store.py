"""RedisHealthStore against a real redis-server (a private one per test session).

The store must keep the in-process store's rules op for op (checked against the
reference model), stay atomic when several stores update one target at once, hand out
one probe per expired cooldown across a fleet (an owned token with a lease that expires
and that its holder renews), keep every key under its prefix with a TTL, live on the
server's clock, never wait for Redis on the healthy path, carry on in process, with one
warning, while Redis is away, and lose nothing recorded while it reconnects.

The fleet test runs replicas as separate processes against one local fault server and
compares attempts on the failing head with shared (Redis) and per-process state.

Cooldowns here are real (they are on the Redis server's clock), so they are short.
"""

from __future__ import annotations

import asyncio
import logging
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
from majordomo_async._health import Bench

from .helpers.redis_server import (
    RedisServer,
    eventually,
    lease_of,
    run_fleet,
    server_time,
    wait_until,
)
from .helpers.reference import LogEntry, replay

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
def keys(prefix: str) -> str:
    """Where the keys of a store with this test's prefix start: the prefix as a hash tag."""
    return f"{{{prefix}}}"


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


async def bench(store: RedisHealthStore, key: str) -> float:
    """Record failures until `key` is benched; the cooldown's end."""
    for _ in range(CONFIG.failure_threshold):
        benched = await store.record_failure(key, None)
    assert benched is not None and benched.new
    return benched.until


async def expire_lease(redis: Redis, keys: str, key: str) -> None:
    """End the lease of `key`'s probe now, as if its holder had gone silent long enough."""
    await redis.hset(f"{keys}t:{key}", "p", repr(await server_time(redis) - 0.001))


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
        self.log: list[LogEntry] = []
        self.tokens: dict[str, list[str]] = {}
        """Every probe token handed out, per target (the newest last)."""

    def token(self, rng: random.Random, key: str) -> str:
        """Mostly the newest token of `key`, sometimes a stale one or one never handed out."""
        handed = self.tokens.get(key, [])
        stale = rng.choice(handed) if handed else "nobody:0"
        newest = handed[-1] if handed else stale
        return rng.choice([newest, newest, stale, "nobody:0"])

    async def run(self, op: str, key: str, hint: float | None, probe: str | None) -> None:
        store = self.store
        result: Any = None
        argument: Any = probe
        if op == "admit":
            result = await store.admit(key)
            argument = None
            if result.probe is not None:
                self.tokens.setdefault(key, []).append(result.probe)
        elif op == "fail":
            result = await store.record_failure(key, hint, probe)
            argument = (hint, probe)
        elif op == "success":
            await store.record_success(key, probe)
        elif op == "release":
            assert probe is not None
            await store.release_probe(key, probe)
        else:
            assert probe is not None
            result = await store.renew_probe(key, probe)
        self.log.append((op, key, store._decided_at, argument, result))


@pytest.mark.parametrize("seed", range(4))
async def test_store_answers_like_the_reference_model(stores: MakeStore, seed: int) -> None:
    """Random op sequences in real (server) time: every answer and the final state match
    the reference model replayed at the times the store decided. Probes are taken, failed
    (by their holder or not), renewed and given back with current, stale and foreign
    tokens; their leases (the config's: the store's default) run out now and then. A
    scripted opening makes sure a probe is taken, renewed and failed by its holder."""
    rng = random.Random(seed)
    config = HealthConfig(
        failure_threshold=rng.randint(1, 3),
        base_cooldown=0.02,
        cooldown_factor=2,
        max_cooldown=0.08,
        max_retry_after=0.1,
        probe_lease=0.05,
    )
    store = stores(config=config)
    assert store.probe_lease == config.probe_lease
    recorder = Recorder(store)
    for _ in range(config.failure_threshold):
        await recorder.run("fail", "p/a", None, None)
    benched_until = store._view["p/a"].until
    assert benched_until is not None
    await wait_until(store, benched_until)
    await recorder.run("admit", "p/a", None, None)
    [first] = recorder.tokens["p/a"]
    await recorder.run("renew", "p/a", None, first)
    await recorder.run("fail", "p/a", None, first)

    ops = ["admit"] * 5 + ["fail"] * 4 + ["success", "release"] + ["renew"] * 2 + ["wait"] * 3
    for _ in range(90):
        op = rng.choice(ops)
        if op == "wait":
            await anyio.sleep(rng.choice([0.0, 0.01, 0.03, 0.09]))
            continue
        key = rng.choice(["p/a", "p/b"])
        hint = rng.choice([None, None, 0.05, 0.5]) if op == "fail" else None
        probe: str | None = recorder.token(rng, key)
        if op in ("fail", "success") and rng.random() < 0.5:
            probe = None
        await recorder.run(op, key, hint, probe)

    reference = replay(recorder.log, config)

    await anyio.sleep(config.probe_lease + 0.01)  # every lease over: `probing` is settled
    assert dict(await store.snapshot()) == reference.snapshot(store.now())
    assert any(op == "admit" and result.probe for op, *_, result in recorder.log)
    assert any(op == "fail" and result and result.new for op, *_, result in recorder.log)


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

    benched = await writer.record_failure("p/m", None)
    assert benched is not None and benched.new
    until = benched.until

    async def refused() -> bool:
        return not (await reader.admit("p/m")).admitted

    elapsed = await eventually(refused, within=2)

    assert elapsed <= reader.staleness_bound + 0.1  # plus the event loop's scheduling
    assert await reader.admit("p/m") == Admission(False, until=until)


async def test_concurrent_failures_from_several_stores_are_all_counted(
    stores: MakeStore,
) -> None:
    """100 concurrent failures from 4 stores: 100 counted, one bench (announced once: one
    new bench, the later failures find it benched already), one deadline."""
    config = HealthConfig(failure_threshold=10, base_cooldown=30, max_cooldown=30)
    fleet = [stores(config=config) for _ in range(4)]
    results: list[Bench | None] = []

    async def fail(store: RedisHealthStore) -> None:
        results.append(await store.record_failure("p/m", None))

    async with anyio.create_task_group() as group:
        for _ in range(25):
            for store in fleet:
                group.start_soon(fail, store)

    failures, benchings, until, probing = (await fleet[0].snapshot())["p/m"]
    assert (failures, benchings, probing) == (100, 1, False)
    assert results.count(None) == 9
    benches = [result for result in results if result is not None]
    assert {result.until for result in benches} == {until}
    assert sorted(result.new for result in benches) == [False] * 90 + [True]


async def test_two_failures_past_the_threshold_at_once_bench_once(stores: MakeStore) -> None:
    """Two replicas fail a target at the same moment, both past the threshold: exactly
    one of them benched it (`new`); the other finds it benched, with the same deadline."""
    config = HealthConfig(failure_threshold=1, base_cooldown=30, max_cooldown=30)
    first, second = stores(config=config), stores(config=config)
    results: list[Bench | None] = []

    async def fail(store: RedisHealthStore) -> None:
        results.append(await store.record_failure("p/m", None))

    async with anyio.create_task_group() as group:
        group.start_soon(fail, first)
        group.start_soon(fail, second)

    assert all(result is not None for result in results)
    benches = [result for result in results if result is not None]
    assert sorted(bench.new for bench in benches) == [False, True]
    assert benches[0].until == benches[1].until
    assert (await first.snapshot())["p/m"] == (2, 1, benches[0].until, False)


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
    """Fifty concurrent admissions from five stores after a cooldown: one probe. Its holder
    reports the failure: benched again, longer; the next expiry again has one probe, which
    succeeds."""
    fleet = [stores() for _ in range(5)]
    until = await bench(fleet[0], "p/m")

    async def admit_all() -> list[tuple[RedisHealthStore, Admission]]:
        answers: list[tuple[RedisHealthStore, Admission]] = []

        async def admit(store: RedisHealthStore) -> None:
            answers.append((store, await store.admit("p/m")))

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
    [(holder, probe)] = [(store, answer) for store, answer in first if answer.probe]
    assert [answer for _, answer in first if not answer.probe] == [Admission(False)] * 49

    second = await holder.record_failure("p/m", None, probe.probe)  # the probe failed
    assert second is not None and second.new
    assert second.until - until >= CONFIG.cooldown(2)
    await wait_until(fleet[0], second.until)
    again = await admit_all()
    assert sum(answer.probe is not None for _, answer in again) == 1
    tokens = {answer.probe for _, answer in first + again} - {None}
    assert len(tokens) == 2  # a fresh token per probe
    await fleet[4].record_success("p/m")  # any success resets the target, probe included
    assert [answer for _, answer in await admit_all() if not answer.admitted] == []


async def test_a_crashed_probers_lease_expires(stores: MakeStore, redis: Redis, keys: str) -> None:
    """A prober that dies without a verdict blocks the next probe for its lease, no longer;
    only the probe's holder can give it back early."""
    crashed, other, bystander = (stores(probe_lease=0.5) for _ in range(3))
    until = await bench(other, "p/m")
    for store in (crashed, other, bystander):
        await store.refresh()
    await wait_until(other, until)
    lost = (await crashed.admit("p/m")).probe
    assert lost is not None
    await crashed.aclose()  # gone, verdict never reported

    await bystander.release_probe("p/m", "someone:1")  # not the holder: nothing happens
    await other.refresh()
    assert await other.admit("p/m") == Admission(False)
    lease_end, token = await lease_of(redis, keys, "p/m")
    assert token == lost and lease_end is not None
    assert 0.5 <= lease_end - until < 2

    await wait_until(other, lease_end)
    taken = (await other.admit("p/m")).probe
    assert taken is not None and taken != lost
    await other.release_probe("p/m", taken)  # the holder gives it back: free at once
    # ... in Redis; a bystander's view hears of it over Pub/Sub, which a loaded machine
    # may deliver after the next line (a CI run saw that): read the view first.
    await bystander.refresh()
    assert (await bystander.admit("p/m")).probe


async def test_only_the_holder_of_a_probe_token_ends_the_probe(
    stores: MakeStore, redis: Redis, keys: str
) -> None:
    """A token is the probe's identity across the fleet: a foreign or stale token (one
    whose lease ran out and was handed on) neither releases nor renews the new holder's
    probe; the holder's own token does, from any store."""
    first, second = stores(), stores()
    until = await bench(first, "p/m")
    await wait_until(first, until)
    stale = (await first.admit("p/m")).probe
    assert stale is not None and stale.startswith(first._owner)

    await expire_lease(redis, keys, "p/m")  # its holder went silent past the lease
    assert await first.renew_probe("p/m", stale) is False  # the lease is over
    await second.refresh()
    fresh = (await second.admit("p/m")).probe
    assert fresh is not None and fresh != stale and fresh.startswith(second._owner)

    await first.release_probe("p/m", stale)  # too late: not the holder any more
    await first.release_probe("p/m", "someone:1")
    assert await first.renew_probe("p/m", stale) is False
    assert await lease_of(redis, keys, "p/m") == (second._view["p/m"].lease, fresh)
    assert await first.admit("p/m") == Admission(False)  # the fresh probe is still out
    assert (await first.snapshot())["p/m"][3] is True

    await first.release_probe("p/m", fresh)  # the token, not the store, is the holder
    assert await lease_of(redis, keys, "p/m") == (None, None)
    await second.refresh()  # the release came from another store
    assert (await second.admit("p/m")).probe is not None


async def test_a_failure_from_outside_the_probe_counts_but_does_not_end_it(
    stores: MakeStore, redis: Redis, keys: str
) -> None:
    """While a probe is out, a late failure of a call admitted before the bench (no token,
    or another) counts toward the target's failures but neither benches the target nor
    ends the probe; only the holder's failure benches it again, as a new bench."""
    prober, late = stores(), stores()
    until = await bench(prober, "p/m")
    await wait_until(prober, until)
    probe = (await prober.admit("p/m")).probe
    assert probe is not None

    assert await late.record_failure("p/m", 5.0) is None
    assert await late.record_failure("p/m", None, "someone:1") is None
    failures, benchings, _, probing = (await late.snapshot())["p/m"]
    assert (failures, benchings, probing) == (4, 1, True)
    assert (await lease_of(redis, keys, "p/m"))[1] == probe
    await late.refresh()
    assert await late.admit("p/m") == Admission(False)  # still the prober's

    benched = await prober.record_failure("p/m", None, probe)
    assert benched is not None and benched.new
    assert benched.until - until >= CONFIG.cooldown(2)
    assert (await late.snapshot())["p/m"] == (5, 2, benched.until, False)
    late_failure = await late.record_failure("p/m", None)  # benched already: not new
    assert late_failure == Bench(benched.until, new=False)


async def test_the_holder_renews_its_lease(stores: MakeStore, redis: Redis, keys: str) -> None:
    """`renew_probe` extends the holder's lease to now + probe_lease (on the server's
    clock); it fails for anyone else, and once the lease has run out."""
    store, other = stores(probe_lease=0.3, key_ttl=0.4), stores(probe_lease=0.3)
    until = await bench(store, "p/m")
    await wait_until(store, until)
    probe = (await store.admit("p/m")).probe
    assert probe is not None
    # Nearly over (rather than sleeping until it is).
    await redis.hset(f"{keys}t:p/m", "p", repr(await server_time(redis) + 0.05))

    before = await server_time(redis)
    assert await store.renew_probe("p/m", probe) is True
    after = await server_time(redis)

    lease_end, token = await lease_of(redis, keys, "p/m")
    assert token == probe and lease_end is not None
    assert before + 0.3 <= lease_end <= after + 0.3
    assert store._view["p/m"].lease == lease_end  # this replica sees it at once
    # The key's TTL follows the lease (key_ttl from the renewal on).
    ttl = await redis.pttl(f"{keys}t:p/m")
    assert 400 - (await server_time(redis) - before) * 1000 - 2 <= ttl <= 400
    await other.refresh()
    assert await other.admit("p/m") == Admission(False)
    assert await other.renew_probe("p/m", "someone:1") is False
    assert (await lease_of(redis, keys, "p/m"))[0] == lease_end  # untouched

    await expire_lease(redis, keys, "p/m")
    assert await store.renew_probe("p/m", probe) is False


async def test_every_key_is_prefixed_and_expires(
    stores: MakeStore, redis: Redis, prefix: str, keys: str
) -> None:
    """Keys live under the hash-tagged prefix with a TTL of key_ttl past the cooldown's
    end; state that nobody touches disappears."""
    config = HealthConfig(failure_threshold=2, base_cooldown=0.2, max_cooldown=0.2)
    store = stores(config=config, key_ttl=0.3, probe_lease=0.3)
    assert store.key_prefix == keys == f"{{{prefix}}}"
    until = await bench(store, "p/benched")
    await store.record_failure("p/failing", None)

    every_key = sorted([key async for key in redis.scan_iter(match="*")])
    ours = [key for key in every_key if key.startswith(keys)]
    assert ours == sorted(
        f"{keys}{name}" for name in ("gen", "index", "t:p/benched", "t:p/failing")
    )
    # Every test's keys are under a "test:" prefix (a hash-tagged one, or one in braces).
    assert all(key.startswith(("{test:", "test:")) for key in every_key), every_key
    cooldown_left = until - await server_time(redis)  # read first: TTLs only shrink after
    ttls = {key.removeprefix(keys): await redis.pttl(key) for key in ours}
    assert 100 < ttls["t:p/failing"] <= 300
    # +2 ms: the script rounds the TTL up to a whole millisecond, and Redis measures it
    # against its own millisecond clock, which may lag the microseconds of TIME by one.
    assert 300 < ttls["t:p/benched"] <= (0.3 + cooldown_left) * 1000 + 2
    assert ttls["gen"] >= ttls["t:p/benched"] and ttls["index"] >= ttls["t:p/benched"]

    await wait_until(store, until + 0.35)
    assert [key async for key in redis.scan_iter(match=f"{keys}*")] == []
    assert dict(await store.snapshot()) == {}


async def ttls_under(redis: Redis, keys: str) -> dict[str, int]:
    """Every key under `keys` with its PTTL (-1: no TTL, the bug this guards against)."""
    return {key: await redis.pttl(key) async for key in redis.scan_iter(match=f"{keys}*")}


async def test_the_first_write_under_a_prefix_leaves_no_key_without_a_ttl(
    stores: MakeStore, redis: Redis, keys: str
) -> None:
    """Regression: the generation key was created without a TTL by the first write under
    a prefix (the scripts set the TTLs before creating it), so a prefix written once kept
    one key forever. Every key under the prefix has a TTL after that one write."""
    store = stores(config=LONG, key_ttl=5, probe_lease=1)
    assert await store.record_failure("p/m", None) is None  # the first write: a failure

    ttls = await ttls_under(redis, keys)
    assert set(ttls) == {f"{keys}gen", f"{keys}index", f"{keys}t:p/m"}
    assert all(0 < ttl <= 5000 for ttl in ttls.values()), ttls


async def test_no_key_ever_lives_without_a_ttl(stores: MakeStore, redis: Redis, keys: str) -> None:
    """After every kind of change (including a reset that leaves the generation alone,
    and one that recreates it after it expired), every key under the prefix has a TTL."""
    config = HealthConfig(failure_threshold=1, base_cooldown=0.05, max_cooldown=0.05)
    store = stores(config=config, key_ttl=5, probe_lease=1)

    async def check(step: str) -> None:
        ttls = await ttls_under(redis, keys)
        assert ttls and all(ttl > 0 for ttl in ttls.values()), (step, ttls)

    benched = await store.record_failure("p/m", None)
    assert benched is not None
    await check("benched")
    await wait_until(store, benched.until)
    probe = (await store.admit("p/m")).probe
    assert probe is not None
    await check("probe taken")
    assert await store.renew_probe("p/m", probe)
    await check("probe renewed")
    await store.release_probe("p/m", probe)
    await check("probe given back")
    await store.record_failure("p/other", None)
    await store.record_success("p/m")
    await check("reset")
    await redis.delete(f"{keys}gen")  # as if it had expired alone
    await store.record_success("p/other")  # a reset that has to recreate the generation
    assert await redis.pttl(f"{keys}gen") > 0


async def test_a_write_back_into_an_empty_redis_leaves_no_key_without_a_ttl(
    stores: MakeStore, redis: Redis, keys: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other first write under a prefix: the write-back after an outage, into a Redis
    that came back empty. Every key it creates has a TTL."""
    # No refresh, reconnection or subscription but the test's own.
    store = stores(
        config=LONG,
        key_ttl=5,
        probe_lease=1,
        refresh_interval=3600,
        reconnect_delay=3600,
        pubsub=False,
    )
    assert await store.admit("p/warm") == Admission(True)
    outage = Outage(store, monkeypatch)
    outage.down = True
    await bench(store, "p/m")
    assert store.degraded and await ttls_under(redis, keys) == {}
    outage.down = False

    assert await store._reconnect() is True

    ttls = await ttls_under(redis, keys)
    assert set(ttls) == {f"{keys}gen", f"{keys}index", f"{keys}t:p/m"}
    assert all(0 < ttl <= 5000 + LONG.base_cooldown * 1000 for ttl in ttls.values()), ttls


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
        benched = await store.record_failure("p/m", None)
        assert benched is not None and benched.new and store.degraded
        assert await store.admit("p/m") == Admission(False, until=benched.until)
        assert await store.admit("p/other") == Admission(True)
        await store.release_probe("p/m", "someone:1")
        assert await store.renew_probe("p/m", "someone:1") is False
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
    own_redis_server: RedisServer,
    prefix: str,
    keys: str,
    caplog: pytest.LogCaptureFixture,
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
                assert await client.hget(f"{keys}t:{head}", "b") is not None
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


class Outage:
    """Stands between a store and Redis: `down` makes every call fail as a refused
    connection would; `pause_at` holds the next call of that script until `resume`."""

    def __init__(self, store: RedisHealthStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.down = False
        self.pause_at = ""
        self.paused = anyio.Event()
        self.resume = anyio.Event()
        self.calls: list[str] = []
        call = store._call

        async def wrapped(script: str, keys: list[str], args: Any) -> list[str]:
            if self.down:
                raise ConnectionRefusedError("Redis is away")
            self.calls.append(script)
            if script == self.pause_at and not self.resume.is_set():
                self.paused.set()
                await self.resume.wait()
            return await call(script, keys, args)

        monkeypatch.setattr(store, "_call", wrapped)


@pytest.mark.parametrize("pause_at", ["list", "seed"])
async def test_a_bench_recorded_while_reconnecting_is_not_lost(
    stores: MakeStore,
    redis: Redis,
    keys: str,
    monkeypatch: pytest.MonkeyPatch,
    pause_at: str,
) -> None:
    """Regression: the reconnection copied the fallback's state, awaited Redis, then
    replaced the fallback, dropping a bench recorded in it meanwhile. The reconnection
    stops at its first round trip ("is Redis back?") or in its write-back; a failure that
    benches the target arrives then. It ends in Redis, and in the view, as a new bench.
    Meanwhile the hot path (a degraded admit) still answers without waiting."""
    store = stores(config=LONG, refresh_interval=3600, reconnect_delay=3600, pubsub=False)
    assert await store.admit("p/warm") == Admission(True)  # read; the poller now sleeps
    outage = Outage(store, monkeypatch)
    outage.down = True
    assert await store.record_failure("p/m", None) is None  # counted in process
    assert store.degraded
    outage.down, outage.pause_at = False, pause_at
    results: dict[str, Any] = {}

    async def reconnect() -> None:
        results["reconnected"] = await store._reconnect()
        results["degraded"] = store.degraded

    async def fail() -> None:
        results["bench"] = await store.record_failure("p/m", None)

    async with anyio.create_task_group() as group:
        group.start_soon(reconnect)
        await outage.paused.wait()
        group.start_soon(fail)
        await anyio.wait_all_tasks_blocked()  # the failure is recorded, or waits to be
        assert finished_at_once(store.admit("p/other")) == Admission(True)
        outage.resume.set()

    assert (results["reconnected"], results["degraded"]) == (True, False)
    benched = results["bench"]
    assert benched is not None and benched.new
    state = await redis.hgetall(f"{keys}t:p/m")
    until = float(state["u"])
    assert (state["f"], state["b"]) == ("2", "1")
    if pause_at == "seed":
        assert until == benched.until  # it waited for the write-back, then went to Redis
    else:  # recorded in process before the write-back, which carries the time left
        assert abs(until - benched.until) < 1
    assert await store.admit("p/m") == Admission(False, until=until)
    assert dict(await store.snapshot()) == {"p/m": (2, 1, until, False)}


async def test_the_fallback_carries_probe_tokens_both_ways(
    stores: MakeStore, redis: Redis, keys: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe out when Redis goes away stays out in the fallback, its holder's token
    still ends it, and no one else's does; a probe the fallback hands out has a token of
    this store's, is written back with its lease when Redis returns (empty), and its
    holder's verdict then lands in Redis."""
    store = stores(refresh_interval=3600, reconnect_delay=3600, probe_lease=30, pubsub=False)
    until = await bench(store, "p/m")
    await wait_until(store, until)
    probe = (await store.admit("p/m")).probe
    assert probe is not None
    outage = Outage(store, monkeypatch)
    outage.down = True
    await store.refresh()
    assert store.degraded

    assert await store.admit("p/m") == Admission(False)  # the probe is still out
    assert await store.renew_probe("p/m", probe) is True
    assert await store.renew_probe("p/m", "someone:1") is False
    await store.release_probe("p/m", "someone:1")
    assert await store.record_failure("p/m", None) is None  # not the holder: counted only
    benched = await store.record_failure("p/m", None, probe)  # the holder: benched again
    assert benched is not None and benched.new
    assert (await store.snapshot())["p/m"] == (4, 2, benched.until, False)
    await wait_until(store, benched.until)
    fresh = (await store.admit("p/m")).probe
    assert fresh is not None and fresh.startswith(f"{store._owner}:") and fresh != probe

    await redis.delete(f"{keys}t:p/m")  # Redis comes back empty
    outage.down = False
    assert await store._reconnect() is True

    lease_end, token = await lease_of(redis, keys, "p/m")
    assert token == fresh and lease_end is not None
    assert 29 < lease_end - await server_time(redis) <= 30
    failures, benchings, half_open_since, probing = (await store.snapshot())["p/m"]
    assert (failures, benchings, probing) == (4, 2, True)
    assert half_open_since is not None and half_open_since <= await server_time(redis)
    again = await store.record_failure("p/m", None, fresh)
    assert again is not None and again.new
    assert (await store.snapshot())["p/m"] == (5, 3, again.until, False)


def test_a_store_made_outside_an_event_loop_works_in_one() -> None:
    """The store's lock is made in __init__, with no event loop running; it binds to the
    loop that first uses it (the fallback takes it on every change)."""
    store = RedisHealthStore(closed_port_url(), CONFIG, timeout=0.1, reconnect_delay=5)

    async def use() -> None:
        async with store:
            assert await store.record_failure("p/m", None) is None
            assert store.degraded
            benched = await store.record_failure("p/m", None)
            assert benched is not None and benched.new

    asyncio.run(use())


def test_the_probe_lease_defaults_to_the_configs() -> None:
    config = HealthConfig(probe_lease=7.5)
    url = "redis://127.0.0.1:6379/0"
    assert RedisHealthStore(url, config).probe_lease == 7.5
    assert RedisHealthStore(url).probe_lease == HealthConfig().probe_lease
    assert RedisHealthStore(f"{url}?probe_lease=3", config).probe_lease == 3
    assert RedisHealthStore(f"{url}?probe_lease=3", config, probe_lease=2).probe_lease == 2


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
    redis_server: RedisServer, prefix: str, keys: str
) -> None:
    """A redis.asyncio client (bytes responses) can be passed in; aclose() leaves it open."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_server.url)
    try:
        async with RedisHealthStore(client, LONG, prefix=prefix) as store:
            until = await bench(store, "p/m")
            assert await store.admit("p/m") == Admission(False, until=until)
        assert await client.hget(f"{keys}t:p/m", "f") == b"2"
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


async def test_a_fleet_shares_what_it_learns_through_redis(
    redis_server: RedisServer, prefix: str
) -> None:
    """Four replica processes call a chain whose head is down, then recovers. With
    Redis, the fleet sends one probe per expired cooldown and exactly one recovery probe;
    with in-process stores each replica probes on its own."""
    shared = await run_fleet(redis_server.url, prefix, workers=WORKERS, callers=CALLERS)
    alone = await run_fleet("memory", prefix, workers=WORKERS, callers=CALLERS)

    for run in (shared, alone):
        for summary in run["summaries"]:
            assert summary["error_count"] == 0, summary["errors"]
            assert summary["answers"]["head/m"] > 0  # every replica is back on the head
            assert summary["degraded"] in (False, None)
            assert summary["store_warnings"] == []
    windows = shared["windows"]
    print(
        f"\nfleet of {WORKERS}, cooldown {COOLDOWN} s, head down 2.0 s "
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
