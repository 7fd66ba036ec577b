"""Changes reach the fleet at once: every change is published by the script that makes
it, and each replica folds what it hears into its view (the poll stays, as the fallback).

A bench made by one store must be seen by another (its own connections, its poll made
hourly, so that only the subscription can tell it) within 50 ms on loopback: measured
over many benches, with the median held to that and every single one to a bound no
loaded machine reaches. Then: a recovery too; the poll alone still works with Pub/Sub
off; a lost subscription comes back and the changes missed meanwhile arrive; a published
change older than the view is ignored; and the fleet of replica processes (separate
processes, real HTTP) costs no more failed attempts than one process doing all the work.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import anyio
import pytest

from majordomo_async import Admission, HealthConfig, RedisHealthStore
from majordomo_async._redis_store import RedisStoreEvent

from .helpers.redis_server import RedisServer, eventually, run_fleet, store_factory

if TYPE_CHECKING:
    from redis.asyncio import Redis

pytestmark = pytest.mark.timeout(120)

LONG = HealthConfig(failure_threshold=1, base_cooldown=60, max_cooldown=60)
HOURLY = 3600.0
"""A poll interval that never comes within a test: only the subscription can deliver."""
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


class Arrivals:
    """Wraps a store's handler of published changes: when each target's change arrived."""

    def __init__(self, store: RedisHealthStore) -> None:
        self.at: dict[str, float] = {}
        self.changed = anyio.Event()
        fold = store._on_message

        def timed(data: object) -> None:
            fold(data)
            target = json.loads(data if isinstance(data, str) else bytes(data))[0]  # type: ignore[arg-type]
            self.at[target] = time.perf_counter()
            self.changed.set()

        store._on_message = timed  # type: ignore[method-assign]

    async def wait_for(self, target: str, within: float) -> float:
        with anyio.fail_after(within):
            while target not in self.at:
                self.changed = anyio.Event()
                await self.changed.wait()
        return self.at[target]


async def subscribed(*fleet: RedisHealthStore) -> None:
    """Start each store and wait until it hears the fleet's changes."""
    for store in fleet:
        await store.admit("warm/up")

    async def all_subscribed() -> bool:
        return all(store.subscribed for store in fleet)

    await eventually(all_subscribed, within=10)


async def test_a_bench_reaches_another_replica_within_50_ms(stores: MakeStore) -> None:
    """100 benches, each timed from the writer's call to the change in the reader's view
    (the reader never polls). The median is under 50 ms (loopback: about a millisecond);
    each is under 2 s, where a lost message would have taken an hour."""
    writer, reader = stores(LONG), stores(LONG, refresh_interval=HOURLY)
    await subscribed(writer, reader)
    arrivals = Arrivals(reader)
    delays = []
    for index in range(100):
        key = f"p/{index}"
        sent = time.perf_counter()
        benched = await writer.record_failure(key, None)
        assert benched is not None and benched.new
        delays.append(await arrivals.wait_for(key, within=2) - sent)
        assert reader._view[key].until == benched.until
        assert await reader.admit(key) == Admission(False, until=benched.until)

    median = statistics.median(delays)
    slowest = max(delays)
    print(
        f"\nbench seen by another store: median {median * 1e3:.2f} ms, max {slowest * 1e3:.2f} ms"
    )
    assert median < 0.050


async def test_a_recovery_reaches_another_replica_at_once(stores: MakeStore) -> None:
    """A success that resets a benched target is published too: the other replica's view
    forgets the bench without a poll."""
    writer, reader = stores(LONG), stores(LONG, refresh_interval=HOURLY)
    await subscribed(writer, reader)
    benched = await writer.record_failure("p/m", None)
    assert benched is not None
    arrivals = Arrivals(reader)
    await arrivals.wait_for("p/m", within=2)
    assert not (await reader.admit("p/m")).admitted
    del arrivals.at["p/m"]

    await writer.record_success("p/m")

    await arrivals.wait_for("p/m", within=2)
    # Healthy, or forgotten altogether (a healthy key needs no entry): either way no bench.
    entry = reader._view.get("p/m")
    assert entry is None or entry.healthy
    assert await reader.admit("p/m") == Admission(True)


async def test_without_pubsub_the_poll_still_shares(stores: MakeStore, redis: Redis) -> None:
    """`pubsub=False`: nothing is published or heard, and the poll brings the change
    within the staleness bound, as before."""
    writer = stores(LONG, pubsub=False)
    reader = stores(LONG, pubsub=False, refresh_interval=0.05, timeout=0.2)
    await reader.admit("warm/up")
    channels = await redis.pubsub_channels(f"{writer.key_prefix}*")
    assert channels == [] and not reader.subscribed

    async def refused() -> bool:
        return not (await reader.admit("p/m")).admitted

    await writer.record_failure("p/m", None)
    elapsed = await eventually(refused, within=5)

    assert elapsed <= reader.staleness_bound + 0.5  # plus the loop's scheduling
    assert not reader.subscribed


async def test_a_lost_subscription_comes_back_and_catches_up(
    stores: MakeStore, redis: Redis
) -> None:
    """The server drops the subscriptions' connections: the store says so, resubscribes
    after its reconnect delay, and refreshes at once, so a change published while it was
    not listening is in its view without waiting for the (hourly) poll."""
    events: list[RedisStoreEvent] = []
    writer = stores(LONG)
    reader = stores(LONG, refresh_interval=HOURLY, reconnect_delay=0.05, observer=events.append)
    await subscribed(writer, reader)
    killed = anyio.Event()

    def watch(event: RedisStoreEvent) -> None:
        events.append(event)
        if event.kind == "unsubscribed":
            killed.set()

    reader._observer = watch
    await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")  # every subscription
    with anyio.fail_after(5):
        await killed.wait()
    benched = await writer.record_failure("p/missed", None)  # maybe published to no one
    assert benched is not None

    async def caught_up() -> bool:
        return reader.subscribed and "p/missed" in reader._view

    await eventually(caught_up, within=10)
    assert not reader.degraded
    kinds = [event.kind for event in events if event.kind != "round_trip"]
    assert kinds[:3] == ["subscribed", "unsubscribed", "subscribed"], kinds
    assert await reader.admit("p/missed") == Admission(False, until=benched.until)


async def test_a_published_change_older_than_the_view_is_ignored(stores: MakeStore) -> None:
    """Messages can arrive after a refresh that already has a later state: a stale bench
    must not revive a target the refresh saw reset, and a stale state must not replace a
    newer one."""
    store = stores(LONG, pubsub=False, refresh_interval=HOURLY)
    benched = await store.record_failure("p/m", None)
    assert benched is not None
    old_gen = store._view["p/m"].gen
    stale = json.dumps(["p/m", str(old_gen), "0", "1", "1", repr(benched.until), "", ""])
    await store.record_success("p/m")
    await store.refresh()
    assert "p/m" not in store._view

    store._on_message(stale)
    assert await store.admit("p/m") == Admission(True)

    benched = await store.record_failure("p/n", None)
    assert benched is not None
    store._on_message(json.dumps(["p/n", str(store._view["p/n"].gen - 1), "0", "", "", "", "", ""]))
    assert not (await store.admit("p/n")).admitted
    store._on_message("not json")  # ignored, logged at debug level
    store._on_message(json.dumps(["p/n", "x"]))
    assert not (await store.admit("p/n")).admitted


async def test_a_target_the_refresh_could_not_read_stays_in_the_view(
    stores: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a refresh lists the targets, then reads them; targets that get state in
    between are read again, a few times at most. When they keep coming, the refresh ends
    without them: it dropped what the view knew of them (from a published change or an
    answer), so a benched target was admitted again until the next poll. Now the view
    keeps them, and the next poll reads everything."""
    from majordomo_async import _redis_store

    store = stores(LONG, pubsub=False, refresh_interval=HOURLY)
    assert (await store.record_failure("p/a", None)) is not None
    monkeypatch.setattr(_redis_store, "_READS_PER_REFRESH", 1)
    call = store._call
    benched: list[object] = []

    async def racing(script: str, keys: list[str], args: object) -> list[str]:
        reply = await call(script, keys, args)  # type: ignore[arg-type]
        if script == "list" and not benched:
            # After the listing, before the read: a target gets state (seen at once here).
            benched.append(await store.record_failure("p/b", None))
        return reply

    monkeypatch.setattr(store, "_call", racing)
    await store.refresh()

    assert benched[0] is not None
    assert set(store._view) == {"p/a", "p/b"}
    assert not (await store.admit("p/b")).admitted
    assert store._view_gen == ""  # the next poll reads everything again
    monkeypatch.setattr(_redis_store, "_READS_PER_REFRESH", 3)
    await store.refresh()
    assert set(store._view) == {"p/a", "p/b"} and store._view_gen != ""


async def test_a_user_without_pubsub_rights_still_shares_through_the_poll(
    redis_server: RedisServer, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis user whose ACL has no channels (Redis 7's default for new users): its
    scripts still record every change (publishing is a `pcall`: refused, not fatal), the
    subscription is refused with one warning, and changes arrive with the poll."""
    user, password = f"limited{uuid.uuid4().hex[:6]}", "s3cret-pw"
    await redis.execute_command(
        "ACL", "SETUSER", user, "on", f">{password}", "~*", "resetchannels", "+@all"
    )
    url = redis_server.url.replace("redis://", f"redis://{user}:{password}@")
    try:
        async with store_factory(url) as make:
            writer = make(LONG)
            reader = make(LONG, refresh_interval=0.05, reconnect_delay=5)
            await reader.admit("warm/up")
            benched = await writer.record_failure("p/m", None)
            assert benched is not None and benched.new
            assert not writer.degraded

            async def refused() -> bool:
                return not (await reader.admit("p/m")).admitted

            await eventually(refused, within=5)
            assert not reader.degraded and not reader.subscribed
    finally:
        await redis.execute_command("ACL", "DELUSER", user)

    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    refusals = [w for w in warnings if "refused the subscription" in w]
    assert len(refusals) == 2, warnings  # one per store, once each
    assert all(password not in w for w in warnings)


# --------------------------------------------------------------------------- the fleet

REPLICAS = 4
LOOPS = 8
"""Concurrent call loops in all: one process runs them all, or each replica a share."""


async def test_a_fleet_costs_no_more_failed_attempts_than_one_process(
    redis_server: RedisServer,
) -> None:
    """Four replica processes (two call loops each) sharing a Redis store, against one
    process running all eight loops with the in-process store: the same load, on a chain
    whose head is down for 2 s and then recovers. The fleet sends at most 1.05 times the
    failed attempts of the one process (plus one, for the rounding of small counts), one
    replica probes the recovery, and every replica is back on the head soon after.
    (`benchmarks/redis_fleet.py` measures the same with more rounds, and without Pub/Sub.)"""
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    fleet = await run_fleet(redis_server.url, prefix, workers=REPLICAS, callers=LOOPS // REPLICAS)
    alone = await run_fleet("memory", prefix, workers=1, callers=LOOPS)

    for run in (fleet, alone):
        for summary in run["summaries"]:
            assert summary["error_count"] == 0, summary["errors"]
            assert summary["store_warnings"] == []
    print(
        f"\nhead down 2 s, cooldown 0.2 s, {LOOPS} call loops: "
        f"{REPLICAS} replicas (Redis): {fleet['failed_attempts']} failed attempts, all back "
        f"on the head {fleet['all_back_after']:.3f} s after it was; one process: "
        f"{alone['failed_attempts']}, {alone['all_back_after']:.3f} s"
    )
    assert fleet["failed_attempts"] <= 1.05 * alone["failed_attempts"] + 1
    assert fleet["recovered"] == 1
    assert fleet["all_back_after"] < 0.2 + 0.8  # a cooldown, then generous for the machine
