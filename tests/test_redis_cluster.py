"""The Redis store on a Redis Cluster: every key a script touches is declared and shares
the store's hash tag, so each script runs whole on the node that owns the store's slot.

First without a cluster: the scripts' text names keys only through KEYS (a key built
inside a script is invisible to a cluster client's routing), and every script's keys, as
the store sends them, hash to one slot, for any prefix (with or without a hash tag of
its own). Then on a real three-node cluster started from the installed redis-server
(`RedisCluster` in `tests/helpers/redis_server.py`: about two seconds): stores whose
prefixes live on different nodes keep the store's rules, share changes through Pub/Sub
and give every key a TTL; a borrowed `redis.asyncio.RedisCluster` works too.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from majordomo_async import Admission, HealthConfig, RedisHealthStore
from majordomo_async._redis_store import _SCRIPTS, _has_hash_tag, _key_prefix

from .helpers.redis_server import (
    RedisCluster,
    RedisServer,
    eventually,
    redis_binary,
    required,
    store_factory,
    unavailable,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)

CONFIG = HealthConfig(failure_threshold=2, base_cooldown=0.1, max_cooldown=0.1, probe_lease=5)
MakeStore = Callable[..., RedisHealthStore]

# Commands whose first argument is not a key.
_KEYLESS = {"TIME", "PUBLISH"}


@pytest.mark.parametrize("name", sorted(_SCRIPTS))
def test_every_key_a_script_touches_is_declared(name: str) -> None:
    """Every redis.call (and pcall) of every script names its key as KEYS[...]: none is
    built from ARGV or a reply inside the script."""
    calls = re.findall(r"redis\.p?call\('([A-Z]+)'(?:,\s*([^,)]+))?", _SCRIPTS[name])
    assert calls
    for command, first in calls:
        if command in _KEYLESS:
            continue
        assert first.startswith("KEYS["), f"{name}: {command} {first}"
    assert ".. target" not in _SCRIPTS[name]  # the old refresh built `prefix .. target`


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("majordomo:health:", "{majordomo:health:}"),
        ("svc:{health}:", "svc:{health}:"),  # a hash tag of its own: used as it is
        ("a{}b:", "{a{}b:}"),  # "{}" is no hash tag (empty)
        ("x{", "{x{}"),
        ("}{y}:", "}{y}:"),
    ],
)
def test_the_key_prefix_is_a_hash_tag(prefix: str, expected: str) -> None:
    from redis.crc import key_slot

    keys = _key_prefix(prefix)
    assert keys == expected and _has_hash_tag(keys)
    slots = {
        key_slot(f"{keys}{name}".encode())
        for name in ("gen", "index", "t:p/m", "t:other/{x}", "t:}{")
    }
    assert len(slots) == 1


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[MakeStore]:
    async with store_factory(redis_server.url) as make:
        yield make


@pytest.mark.parametrize("prefix", ["majordomo:health:", "svc:{health}:", "a{}b:"])
async def test_every_script_sends_keys_of_one_slot(
    stores: MakeStore, monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    """Every script the store runs (each kind, the write-back included), as it is sent:
    all its keys under the key prefix, in one slot."""
    from redis.crc import key_slot

    prefix = f"test:{uuid.uuid4().hex[:6]}:{prefix}"  # under test: like every test's keys
    store = stores(CONFIG, prefix=prefix, refresh_interval=3600, reconnect_delay=3600)
    sent: list[tuple[str, list[str]]] = []
    call = store._call

    async def recording(script: str, keys: list[str], args: Any) -> list[str]:
        sent.append((script, list(keys)))
        return await call(script, keys, args)

    monkeypatch.setattr(store, "_call", recording)
    for _ in range(2):
        benched = await store.record_failure("p/m", None)
    assert benched is not None
    await wait_until(store, benched.until)
    probe = (await store.admit("p/m")).probe
    assert probe is not None
    assert await store.renew_probe("p/m", probe)
    await store.release_probe("p/m", probe)
    await store.record_failure("p/other", None)
    await store.refresh()
    store._degrade(ConnectionError("as if Redis went away"))
    await store.record_failure("p/third", None)  # learned in process
    assert await store._reconnect()  # the write-back: "seed" per target
    await store.record_success("p/m")

    assert {script for script, _ in sent} == set(_SCRIPTS)
    for script, keys in sent:
        assert all(key.startswith(store.key_prefix) for key in keys), (script, keys)
        assert len({key_slot(key.encode()) for key in keys}) == 1, (script, keys)


# --------------------------------------------------------------------------- a real cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    reason = unavailable()
    if reason is not None:
        if required():
            pytest.fail(f"{reason}, and MAJORDOMO_REQUIRE_REDIS is set")
        pytest.skip(reason)
    binary = redis_binary()
    assert binary is not None
    started = RedisCluster(binary).start()
    try:
        yield started
    finally:
        started.close()


def prefixes_on_every_node(cluster: RedisCluster) -> list[str]:
    """One prefix per node: the store's slot is owned by each node in turn."""
    from redis.crc import key_slot

    share = 16384 // len(cluster.ports)
    found: dict[int, str] = {}
    for index in range(1000):
        prefix = f"fleet{index}:"
        node = min(key_slot(f"{{{prefix}}}gen".encode()) // share, len(cluster.ports) - 1)
        found.setdefault(node, prefix)
        if len(found) == len(cluster.ports):
            return [found[node] for node in sorted(found)]
    raise AssertionError("no prefix for some node")


@pytest.mark.parametrize("node", range(3))
async def test_the_store_keeps_its_rules_on_a_cluster(cluster: RedisCluster, node: int) -> None:
    """On each node's slot in turn: failures counted from two stores bench the target
    for both, the other store hears the bench through Pub/Sub, exactly one probe is handed
    out after the cooldown, its holder renews it and its failure benches the target again;
    a success resets it everywhere. Every key has a TTL."""
    from redis.asyncio.cluster import RedisCluster as Client

    prefix = prefixes_on_every_node(cluster)[node]
    client = Client.from_url(cluster.url, decode_responses=True)
    try:
        async with store_factory(f"{cluster.url}?cluster=yes", prefix) as make:
            first, second = make(CONFIG), make(CONFIG, refresh_interval=3600)
            await first.admit("warm/up")
            await second.admit("warm/up")

            async def subscribed() -> bool:
                return first.subscribed and second.subscribed

            await eventually(subscribed, within=10)
            assert await first.record_failure("p/m", None) is None
            benched = await second.record_failure("p/m", None)
            assert benched is not None and benched.new

            async def first_heard() -> bool:
                seen = first._view.get("p/m")
                return seen is not None and seen.until is not None

            await eventually(first_heard, within=5)  # no poll: the subscription
            assert await first.admit("p/m") == Admission(False, until=benched.until)

            await wait_until(first, benched.until)
            answers = [await store.admit("p/m") for store in (first, second, first)]
            probes = [answer.probe for answer in answers if answer.probe]
            assert len(probes) == 1 and answers.count(Admission(False)) == 2
            holder = first if answers[0].probe else second
            assert await holder.renew_probe("p/m", probes[0]) is True
            again = await holder.record_failure("p/m", None, probes[0])
            assert again is not None and again.new

            keys = [key async for key in client.scan_iter(match=f"{first.key_prefix}*")]
            assert sorted(keys) == sorted(
                f"{first.key_prefix}{name}" for name in ("gen", "index", "t:p/m")
            )
            for key in keys:
                assert await client.pttl(key) > 0, key
            failures, benchings, _, probing = (await second.snapshot())["p/m"]
            assert (failures, benchings, probing) == (3, 2, False)

            await second.record_success("p/m")

            async def reset_everywhere() -> bool:
                return await first.admit("p/m") == Admission(True)

            await eventually(reset_everywhere, within=5)
            assert not first.degraded and not second.degraded
    finally:
        await client.aclose()


async def test_a_borrowed_cluster_client_is_used_and_left_open(cluster: RedisCluster) -> None:
    from redis.asyncio.cluster import RedisCluster as Client

    client = Client.from_url(cluster.url)
    prefix = f"borrowed{uuid.uuid4().hex[:6]}:"
    try:
        async with RedisHealthStore(client, CONFIG, prefix=prefix, timeout=2) as store:
            for _ in range(2):
                benched = await store.record_failure("p/m", None)
            assert benched is not None and benched.new
            assert not store.degraded
            assert await store.admit("p/m") == Admission(False, until=benched.until)
        assert await client.hget(f"{{{prefix}}}t:p/m", "b") == b"1"  # still open
    finally:
        await client.aclose()
