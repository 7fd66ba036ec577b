"""The store's own state changes, told to an observer (for hooks and OpenTelemetry).

Degrading to in-process state, resyncing when Redis is back, every round trip's
duration, and the subscription's coming and going reach `RedisHealthStore(observer=...)`
as `RedisStoreEvent`s, against a real redis-server that a test kills and restarts. An
observer that raises is logged and ignored: it can never break a call.
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Iterator

import anyio
import pytest

from majordomo_async import HealthConfig, Hooks, Registry
from majordomo_async._redis_store import RedisStoreEvent, store_from_url

from .helpers.redis_server import RedisServer, eventually, store_factory

pytestmark = pytest.mark.timeout(120)

CONFIG = HealthConfig(failure_threshold=1, base_cooldown=30, max_cooldown=30)


@pytest.fixture
def own_redis_server(redis_server: RedisServer) -> Iterator[RedisServer]:
    """A private redis-server that the test may kill and restart."""
    server = RedisServer(redis_server.binary).start()
    try:
        yield server
    finally:
        server.close()


class Recorder:
    """An observer that keeps every event."""

    def __init__(self) -> None:
        self.events: list[RedisStoreEvent] = []

    def __call__(self, event: RedisStoreEvent) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        """The kinds, round trips left out."""
        return [event.kind for event in self.events if event.kind != "round_trip"]

    def last(self, kind: str) -> RedisStoreEvent:
        return [event for event in self.events if event.kind == kind][-1]


async def test_an_outage_is_told_as_degraded_then_resynced(
    own_redis_server: RedisServer,
) -> None:
    """Redis is killed: "degraded" (with the error) and "unsubscribed"; it comes back
    empty: "resynced" (the targets written back, the outage's length), then "subscribed"
    again; closing the store unsubscribes it."""
    server = own_redis_server
    observer = Recorder()
    async with store_factory(server.url) as make:
        store = make(
            CONFIG, timeout=0.5, refresh_interval=0.05, reconnect_delay=0.05, observer=observer
        )
        await store.admit("warm/up")

        async def is_subscribed() -> bool:
            return store.subscribed

        await eventually(is_subscribed, within=10)
        server.stop()  # SIGKILL: connections die, state is gone

        async def degraded() -> bool:
            return store.degraded

        await eventually(degraded, within=10)
        benched = await store.record_failure("p/m", None)  # learned in process
        assert benched is not None
        server.start()

        async def back() -> bool:
            return not store.degraded and store.subscribed

        await eventually(back, within=10)
        kinds = observer.kinds()

    # The subscription may notice the crash before the scripts do (then it tries again
    # until the store degrades): one "unsubscribed" at least, in either order.
    assert kinds[0] == "subscribed" and kinds[-2:] == ["resynced", "subscribed"]
    assert kinds.count("degraded") == kinds.count("resynced") == 1
    assert set(kinds[1:-2]) == {"degraded", "unsubscribed"}
    assert observer.kinds()[-1] == "unsubscribed"  # closed
    degraded_event = observer.last("degraded")
    assert isinstance(degraded_event.error, Exception)
    assert degraded_event.store == f"redis://127.0.0.1:{server.port}/0"
    resynced = observer.last("resynced")
    assert resynced.written_back == 1  # p/m
    assert resynced.seconds is not None and 0 < resynced.seconds < 10


async def test_every_round_trip_is_timed(redis_server: RedisServer) -> None:
    """Each script that answers is one "round_trip" event: its name and its duration."""
    observer = Recorder()
    async with store_factory(redis_server.url) as make:
        store = make(CONFIG, pubsub=False, refresh_interval=3600, observer=observer)
        await store.admit("warm/up")  # the first read: "list" (nothing to "read" yet)
        await store.record_failure("p/m", None)
        await store.refresh()  # "list", then "read" the one target
        await store.record_success("p/m")

    trips = [event for event in observer.events if event.kind == "round_trip"]
    assert [event.operation for event in trips] == ["list", "fail", "list", "read", "success"]
    assert all(event.seconds is not None and 0 < event.seconds < 2 for event in trips)
    assert {event.store for event in trips} == {redis_server.url}


async def test_an_observer_that_raises_is_logged_and_ignored(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: RedisStoreEvent) -> None:
        raise RuntimeError("observer bug")

    async with store_factory(redis_server.url) as make:
        store = make(CONFIG, pubsub=False, observer=broken)
        benched = await store.record_failure("p/m", None)
        assert benched is not None and benched.new
        assert not (await store.admit("p/m")).admitted
        assert not store.degraded

    failures = [record for record in caplog.records if "observer failed" in record.getMessage()]
    assert failures and failures[0].levelno == logging.ERROR


async def test_the_environment_store_takes_an_observer(redis_server: RedisServer) -> None:
    """`store_from_url` (what the Registry calls for MAJORDOMO_HEALTH_STORE) hands the
    observer on, so the Registry can wire its hooks to it."""
    observer = Recorder()
    url = f"{redis_server.url}?pubsub=no&prefix=test:{uuid.uuid4().hex[:8]}:"
    store = store_from_url(url, CONFIG, observer=observer)
    assert store is not None
    async with store:
        await store.record_failure("p/m", None)
    assert "fail" in [event.operation for event in observer.events]


@pytest.fixture
def closed_port() -> str:
    """A Redis URL (with a password) on a port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://:hunter2@127.0.0.1:{port}/0"


async def test_a_store_that_never_reached_redis_tells_degraded_once(closed_port: str) -> None:
    observer = Recorder()
    async with store_factory(closed_port) as make:
        store = make(CONFIG, timeout=0.1, reconnect_delay=5, observer=observer)
        for _ in range(3):
            await store.record_failure("p/m", None)
        await anyio.sleep(0.05)
    assert observer.kinds() == ["degraded"]
    assert "hunter2" not in observer.last("degraded").store


async def test_a_registry_s_own_store_tells_its_hooks(redis_server: RedisServer) -> None:
    """A store the registry built from MAJORDOMO_HEALTH_STORE reports to the registry's
    hooks (`Hooks.health_store_event`): a recorded failure is a "fail" round trip."""

    class Recorder(Hooks):
        def __init__(self) -> None:
            self.events: list[RedisStoreEvent] = []

        def health_store_event(self, event: RedisStoreEvent) -> None:
            self.events.append(event)

    recorder = Recorder()
    prefix = f"test:hooks-{uuid.uuid4().hex[:8]}:"  # every test's keys are under "test:"
    env = {
        "MAJORDOMO_HEALTH_STORE": f"{redis_server.url}?prefix={prefix}&key_ttl=60&probe_lease=30"
    }
    async with Registry(env=env, hooks=[recorder]) as registry:
        await registry.parse("fake/head?script=503,fake/tail").generate("hi")
    kinds = {(event.kind, event.operation) for event in recorder.events}
    assert ("round_trip", "fail") in kinds
    assert all("@" not in event.store and "?" not in event.store for event in recorder.events)
