"""RedisBudget against a real redis-server (the session's private one).

The windows are 60 s by design, so a test does not wait for them to slide: it moves a
log's entries into the past in Redis (`age`), as if they had been granted that long ago,
and the next script trims and counts them on the server's clock as it would a minute
later. Only pauses (seconds long here) are waited out for real.

The budget must grant at most rpm requests and tpm tokens in any 60 s interval (a
sliding log: no fixed minutes, no bucket), answer a refusal with when a retry could
succeed, keep its token sum right through corrections, cancellations and expiry (checked
against a model of the log on random operations), pause without ever shortening a pause,
put a TTL on every key and leave nothing behind once idle, live on the server's clock,
run on a Redis Cluster, and raise within the store's timeout when Redis is away.

The fleet test runs four processes, each with a `LimitSet` on its own `RedisBudget`,
against one local upstream, and checks what the upstream saw.
"""

from __future__ import annotations

import random
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from majordomo_async import RedisHealthStore
from majordomo_async._limits import SharedBudget
from majordomo_async._redis_limits import _SCRIPTS, RedisBudget

from .helpers.redis_server import (
    RedisCluster,
    RedisServer,
    redis_binary,
    required,
    run_budget_fleet,
    server_time,
    store_factory,
    unavailable,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

pytestmark = pytest.mark.timeout(120)

WINDOW = 60.0
MakeBudget = Callable[..., RedisBudget]


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def budgets(redis_server: RedisServer, prefix: str) -> AsyncIterator[MakeBudget]:
    """Makes budgets, each on a store of its own (as in a fleet), under this test's prefix."""
    async with store_factory(redis_server.url, prefix) as make:

        def budget(**options: Any) -> RedisBudget:
            return RedisBudget(make(**options))

        yield budget


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A plain client on the session's server, to look at what the budgets wrote."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


async def age(redis: Redis, budget: RedisBudget, name: str, seconds: float) -> None:
    """Move every entry of `name`'s log `seconds` into the past: as if granted that long
    before they were."""
    log = budget.keys(name)[0]
    entries: list[tuple[str, float]] = await redis.zrange(log, 0, -1, withscores=True)  # type: ignore[assignment]
    if entries:
        await redis.zadd(log, {member: score - seconds for member, score in entries}, xx=True)


async def window_of(redis: Redis, budget: RedisBudget, name: str) -> tuple[int, int]:
    """(entries, token sum) of `name`'s window as stored."""
    log, _, total, _ = budget.keys(name)
    return await redis.zcard(log), int(await redis.get(total) or 0)


async def ttls_under(redis: Redis, start: str) -> dict[str, int]:
    """Every key under `start` with its PTTL (-1: no TTL)."""
    return {key: await redis.pttl(key) async for key in redis.scan_iter(match=f"{start}*")}


def granted(answer: tuple[bool, float, str]) -> bool:
    return answer[0]


# --------------------------------------------------------------------------- the scripts


@pytest.mark.parametrize("name", sorted(_SCRIPTS))
def test_every_key_a_script_touches_is_declared(name: str) -> None:
    """Every redis.call of every script names its key as KEYS[...] (for a cluster client's
    routing), and every script reads the time from Redis."""
    calls = re.findall(r"redis\.p?call\('([A-Z]+)'(?:,\s*([^,)]+))?", _SCRIPTS[name])
    assert calls
    for command, first in calls:
        if command == "TIME":
            continue
        assert first.startswith("KEYS["), f"{name}: {command} {first}"
    assert "redis.call('TIME')" in _SCRIPTS[name]


@pytest.mark.parametrize("prefix", ["majordomo:health:", "svc:{health}:", "a{}b:"])
def test_every_key_of_a_name_is_under_the_prefix_in_one_slot(prefix: str) -> None:
    from redis.crc import key_slot

    store = RedisHealthStore("redis://127.0.0.1:1/0", prefix=prefix)
    budget: SharedBudget = RedisBudget.for_store(store)  # (mypy checks the protocol)
    assert isinstance(budget, RedisBudget) and budget.store is store
    for name in ("p/m", "p", "other/{x}", "}{"):
        keys = budget.keys(name)
        assert len(set(keys)) == 4
        assert all(key.startswith(store.key_prefix) for key in keys)
        assert len({key_slot(key.encode()) for key in keys}) == 1


# --------------------------------------------------------------------------- semantics


async def test_grants_up_to_rpm_then_refuses_until_the_oldest_leaves(
    budgets: MakeBudget, redis: Redis
) -> None:
    budget = budgets()
    answers = [await budget.reserve("p/m", 3, None, 10) for _ in range(3)]
    assert all(map(granted, answers))
    ids = [reservation for _, _, reservation in answers]
    assert len(set(ids)) == 3 and all(ids)

    ok, wait, reservation = await budget.reserve("p/m", 3, None, 10)
    assert (ok, reservation) == (False, "")
    assert WINDOW - 1 < wait <= WINDOW
    assert await window_of(redis, budget, "p/m") == (3, 30)  # a refusal adds nothing

    # Names are separate windows; a higher rpm has room in the same log.
    assert granted(await budget.reserve("p/other", 3, None, 10))
    assert granted(await budget.reserve("p/m", 4, None, 10))
    assert granted(await budget.reserve("p/m", None, None, 10))  # no cap: recorded all the same
    assert await window_of(redis, budget, "p/m") == (5, 50)


async def test_tpm_counts_tokens_and_a_large_request_goes_alone(
    budgets: MakeBudget, redis: Redis
) -> None:
    budget = budgets()
    assert granted(await budget.reserve("p/m", None, 100, 60))
    ok, wait, _ = await budget.reserve("p/m", None, 100, 41)
    assert not ok and WINDOW - 1 < wait <= WINDOW
    forty = await budget.reserve("p/m", None, 100, 40)
    assert granted(forty)  # exactly tpm
    assert not granted(await budget.reserve("p/m", None, 100, 1))

    # Larger than tpm: refused while the window holds tokens, until they have all left...
    await age(redis, budget, "p/m", 20)
    ok, wait, _ = await budget.reserve("p/m", None, 100, 500)
    assert not ok and WINDOW - 21 < wait <= WINDOW - 20
    # ... then granted alone, and nothing else until it leaves.
    await age(redis, budget, "p/m", 40)
    assert await window_of(redis, budget, "p/m") == (2, 100)  # not trimmed by a read
    assert granted(await budget.reserve("p/m", None, 100, 500))
    assert await window_of(redis, budget, "p/m") == (1, 500)
    ok, wait, _ = await budget.reserve("p/m", None, 100, 1)
    assert not ok and WINDOW - 1 < wait <= WINDOW

    # Both caps: the later of the two moments.
    assert granted(await budget.reserve("p/both", 2, 100, 90))
    await age(redis, budget, "p/both", 30)
    assert granted(await budget.reserve("p/both", 2, 100, 10))
    ok, wait, _ = await budget.reserve("p/both", 2, 100, 1)  # rpm: 30 s; tpm: 30 s too
    assert not ok and 29 < wait <= 30
    await age(redis, budget, "p/both", 20)
    ok, wait, _ = await budget.reserve("p/both", 3, 100, 1)  # rpm has room; tpm: 10 s
    assert not ok and 9 < wait <= 10
    ok, wait, _ = await budget.reserve("p/both", 3, 100, 95)  # needs both entries gone
    assert not ok and 39 < wait <= 40


async def test_windows_slide_and_never_let_a_burst_through(
    budgets: MakeBudget, redis: Redis
) -> None:
    """At most rpm in ANY 60 s interval: a full window stays full until its oldest entry
    is 60 s old (no fixed minute resets it, no bucket refills it meanwhile), and it frees
    one place per entry that leaves, in order."""
    budget = budgets()
    for _ in range(4):
        assert granted(await budget.reserve("p/m", 4, None, 1))
    await age(redis, budget, "p/m", 59)  # a minute boundary, and a bucket refill, later
    ok, wait, _ = await budget.reserve("p/m", 4, None, 1)
    assert not ok and 0.9 < wait <= 1.0
    await age(redis, budget, "p/m", 1)
    for _ in range(4):
        assert granted(await budget.reserve("p/m", 4, None, 1))
    assert not granted(await budget.reserve("p/m", 4, None, 1))

    # Sliding: two at t, two at t + 30 s; at t + 60 s the first two have left, not all.
    slide = budgets()
    for _ in range(2):
        assert granted(await slide.reserve("p/s", 4, 100, 25))
    await age(redis, slide, "p/s", 30)
    for _ in range(2):
        assert granted(await slide.reserve("p/s", 4, 100, 25))
    ok, wait, _ = await slide.reserve("p/s", 4, None, 1)
    assert not ok and 29 < wait <= 30
    await age(redis, slide, "p/s", 30)
    for _ in range(2):
        assert granted(await slide.reserve("p/s", 4, 100, 25))
    ok, wait, _ = await slide.reserve("p/s", 4, None, 1)
    assert not ok and 29 < wait <= 30
    assert await window_of(redis, slide, "p/s") == (4, 100)  # the sum followed the expiry


async def test_large_windows_and_a_lost_sum(budgets: MakeBudget, redis: Redis) -> None:
    """Hundreds of entries: the tpm walk crosses its batches, expiry takes them all in
    one call (in chunks), and a sum lost from Redis is counted again from the entries."""
    budget = budgets()
    for _ in range(300):
        assert granted(await budget.reserve("p/m", None, None, 1))
    await age(redis, budget, "p/m", 10)
    for _ in range(300):
        assert granted(await budget.reserve("p/m", None, None, 1))
    ok, wait, _ = await budget.reserve("p/m", None, 600, 250)  # the first 250 must leave
    assert not ok and 49 < wait <= 50
    ok, wait, _ = await budget.reserve("p/m", None, 600, 350)  # and 50 of the next 300
    assert not ok and 59 < wait <= 60
    ok, wait, _ = await budget.reserve("p/m", 600, None, 1)
    assert not ok and 49 < wait <= 50

    await redis.delete(budget.keys("p/m")[2])  # evicted, say
    assert granted(await budget.reserve("p/m", None, 1000, 7))
    assert await window_of(redis, budget, "p/m") == (601, 607)

    await age(redis, budget, "p/m", 50)
    assert granted(await budget.reserve("p/m", 302, 1000, 3))  # 300 left at once
    assert await window_of(redis, budget, "p/m") == (302, 310)
    await age(redis, budget, "p/m", WINDOW)
    await budget.cancel("p/m", "nobody:1")
    assert await ttls_under(redis, budget.store.key_prefix) == {}


async def test_correct_replaces_a_reservations_tokens(budgets: MakeBudget, redis: Redis) -> None:
    budget = budgets()
    _, _, small = await budget.reserve("p/m", None, 100, 10)
    await budget.correct("p/m", small, 90)
    assert await window_of(redis, budget, "p/m") == (1, 90)
    assert not granted(await budget.reserve("p/m", None, 100, 20))
    await budget.correct("p/m", small, 5)
    assert granted(await budget.reserve("p/m", None, 100, 20))
    assert await window_of(redis, budget, "p/m") == (2, 25)

    await budget.correct("p/m", "nobody:1", 1000)  # unknown: nothing changes
    await budget.correct("p/m", small, -3)  # nonsense is taken as 0
    assert await window_of(redis, budget, "p/m") == (2, 20)

    # A reservation that has left the window is not brought back by a late correction.
    await age(redis, budget, "p/m", WINDOW)
    await budget.correct("p/m", small, 50)
    assert await window_of(redis, budget, "p/m") == (0, 0)
    assert await ttls_under(redis, budget.store.key_prefix) == {}


async def test_cancel_takes_a_request_never_sent_out(budgets: MakeBudget, redis: Redis) -> None:
    budget, other = budgets(), budgets()
    _, _, first = await budget.reserve("p/m", 2, 100, 30)
    _, _, second = await other.reserve("p/m", 2, 100, 30)
    assert first != second  # ids are unique across budgets
    assert not granted(await budget.reserve("p/m", 2, 100, 1))

    await other.cancel("p/m", first)  # any budget of the fleet can cancel it
    await budget.cancel("p/m", first)  # idempotent
    assert await window_of(redis, budget, "p/m") == (1, 30)
    assert granted(await budget.reserve("p/m", 2, 100, 70))
    await budget.cancel("p/m", "nobody:1")
    assert await window_of(redis, budget, "p/m") == (2, 100)

    # The last one out takes the keys with it.
    reservations: list[str] = await redis.zrange(budget.keys("p/m")[0], 0, -1)  # type: ignore[assignment]
    for reservation in reservations:
        await budget.cancel("p/m", reservation)
    assert await ttls_under(redis, budget.store.key_prefix) == {}


async def test_a_pause_refuses_and_only_ever_extends(budgets: MakeBudget, redis: Redis) -> None:
    budget, other = budgets(), budgets()
    await budget.pause("p/m", 0.4)
    ok, wait, _ = await other.reserve("p/m", None, None, 1)  # the whole fleet is paused
    assert not ok and 0.3 < wait <= 0.4
    assert granted(await other.reserve("p/other", None, None, 1))  # that name only

    await other.pause("p/m", 0.05)  # shorter: ignored
    ok, wait, _ = await budget.reserve("p/m", None, None, 1)
    assert not ok and wait > 0.3
    await budget.pause("p/m", 0.0)  # nothing to pause
    await budget.pause("p/m", float("nan"))
    await other.pause("p/m", 0.6)  # longer: extended
    ok, wait, _ = await budget.reserve("p/m", None, None, 1)
    assert not ok and 0.5 < wait <= 0.6
    pause_key = budget.keys("p/m")[3]
    assert 500 < await redis.pttl(pause_key) <= 600

    # A pause and a full window: the later of the two.
    assert granted(await budget.reserve("p/full", 1, None, 1))
    await budget.pause("p/full", 0.2)
    ok, wait, _ = await budget.reserve("p/full", 1, None, 1)
    assert not ok and WINDOW - 1 < wait <= WINDOW

    ok, wait, _ = await budget.reserve("p/m", None, None, 1)
    started = time.monotonic()
    # Polling: the pause ends in Redis, on its clock; nothing here to await.
    while not granted(await budget.reserve("p/m", None, None, 1)):  # noqa: ASYNC110
        await anyio.sleep(0.02)
    assert wait - 0.01 < time.monotonic() - started < wait + 0.5
    await anyio.sleep(0.01)  # the key's TTL is rounded up to a whole millisecond
    assert await redis.exists(pause_key) == 0  # expired with the pause


async def test_every_key_has_a_ttl_a_little_over_the_window(
    budgets: MakeBudget, redis: Redis
) -> None:
    """TTLs cover the newest entry's window and a little more; an idle budget leaves
    nothing behind."""
    budget = budgets()
    start = budget.store.key_prefix
    _, _, reservation = await budget.reserve("p/m", 5, 100, 10)
    await budget.pause("p/m", 5.0)
    ttls = await ttls_under(redis, start)
    log, tokens, total, pause = budget.keys("p/m")
    assert set(ttls) == {log, tokens, total, pause}
    assert all(WINDOW * 1000 < ttls[key] <= (WINDOW + 2) * 1000 for key in (log, tokens, total))
    assert 4900 < ttls[pause] <= 5000

    # The TTL follows the newest entry, not the last call.
    await age(redis, budget, "p/m", 30)
    await budget.correct("p/m", reservation, 20)
    assert not granted(await budget.reserve("p/m", 5, 10, 1))
    ttls = await ttls_under(redis, start)
    assert all(30_000 < ttls[key] <= 32_000 for key in (log, tokens, total)), ttls

    # Entries past the window: the next call on the name removes every key.
    await age(redis, budget, "p/m", 30)
    await budget.cancel("p/m", "nobody:1")
    assert set(await ttls_under(redis, start)) == {pause}


async def test_the_windows_are_on_the_servers_clock(budgets: MakeBudget, redis: Redis) -> None:
    """Entries are stamped with Redis TIME whatever this host's clock says."""
    budget = budgets()
    budget.store._clock.offset += 3600  # as if this host's clock were an hour fast
    before = await server_time(redis)
    _, _, reservation = await budget.reserve("p/m", 1, None, 1)
    after = await server_time(redis)
    stamp = await redis.zscore(budget.keys("p/m")[0], reservation)
    assert stamp is not None and before <= stamp <= after
    ok, wait, _ = await budget.reserve("p/m", 1, None, 1)
    assert not ok and WINDOW - 1 < wait <= WINDOW  # not an hour off either way


async def test_many_concurrent_reservations_from_several_budgets(
    budgets: MakeBudget, redis: Redis
) -> None:
    fleet = [budgets() for _ in range(3)]
    answers: list[tuple[bool, float, str]] = []

    async def reserve(budget: RedisBudget) -> None:
        answers.append(await budget.reserve("p/m", 10, 1000, 7))

    async with anyio.create_task_group() as group:
        for index in range(60):
            group.start_soon(reserve, fleet[index % 3])
    assert sum(map(granted, answers)) == 10
    assert await window_of(redis, fleet[0], "p/m") == (10, 70)


# --------------------------------------------------------------------------- a model


class Model:
    """The sliding log in Python: entries (id, age in seconds, tokens), oldest first."""

    def __init__(self) -> None:
        self.entries: list[list[Any]] = []

    def trim(self) -> None:
        self.entries = [entry for entry in self.entries if entry[1] < WINDOW]

    def reserve(self, rpm: int | None, tpm: int | None, tokens: int) -> tuple[bool, float]:
        self.trim()
        wait = 0.0
        if rpm is not None and len(self.entries) >= rpm:
            wait = WINDOW - self.entries[len(self.entries) - rpm][1]
        total = sum(entry[2] for entry in self.entries)
        if tpm is not None and total > 0 and total + tokens > tpm:
            need, freed = min(total + tokens - tpm, total), 0
            for _, entry_age, entry_tokens in self.entries:
                freed += entry_tokens
                if freed >= need:
                    wait = max(wait, WINDOW - entry_age)
                    break
        return wait == 0, wait

    def sum(self) -> int:
        return sum(entry[2] for entry in self.entries)


@pytest.mark.parametrize("seed", range(3))
async def test_the_budget_answers_like_a_model_of_the_log(
    budgets: MakeBudget, redis: Redis, seed: int
) -> None:
    """Random reservations, corrections, cancellations and the passing of time (whole
    seconds of it, moved into the log by `age`; the real milliseconds the test takes
    only ever push an entry exactly 60 s old out, as the model does): every answer, and
    the stored count and sum after every step, match the model."""
    rng = random.Random(seed)
    budget = budgets()
    model = Model()
    for step in range(150):
        op = rng.choice(["reserve"] * 5 + ["correct", "cancel", "age"])
        if op == "reserve":
            rpm = rng.choice([None, 3, 5, 8])
            tpm = rng.choice([None, 50, 100])
            tokens = rng.choice([0, 5, 20, 40, 150])
            ok, wait, reservation = await budget.reserve("p/m", rpm, tpm, tokens)
            expected_ok, expected_wait = model.reserve(rpm, tpm, tokens)
            assert ok == expected_ok, (step, rpm, tpm, tokens)
            assert wait == pytest.approx(expected_wait, abs=0.5), (step, rpm, tpm, tokens)
            if ok:
                model.entries.append([reservation, 0.0, tokens])
        elif op == "age":
            seconds = rng.choice([1, 5, 15, 30])
            await age(redis, budget, "p/m", seconds)
            for entry in model.entries:
                entry[1] += seconds
        elif model.entries:
            entry = rng.choice(model.entries)
            if op == "correct":
                tokens = rng.choice([0, 10, 60])
                await budget.correct("p/m", entry[0], tokens)
                if entry[1] < WINDOW:
                    entry[2] = tokens
            else:
                await budget.cancel("p/m", entry[0])
                model.entries.remove(entry)
        if op != "age":  # every script trims the log first: so does the model
            model.trim()
            assert await window_of(redis, budget, "p/m") == (len(model.entries), model.sum())


# --------------------------------------------------------------------------- Redis away


@contextmanager
def silent_server() -> Iterator[str]:
    """A Redis URL whose server accepts connections and never answers: a stalled Redis."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


@pytest.fixture
def own_redis_server(redis_server: RedisServer) -> Iterator[RedisServer]:
    """A second, private redis-server that a test may kill and restart."""
    server = RedisServer(redis_server.binary).start()
    try:
        yield server
    finally:
        server.close()


async def every_method_raises(budget: RedisBudget, within: float) -> list[type[BaseException]]:
    """Call each method; each must raise within `within` s. The exceptions' types."""
    from redis.exceptions import RedisError

    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: budget.reserve("p/m", 5, 100, 1),
        lambda: budget.correct("p/m", "someone:1", 3),
        lambda: budget.cancel("p/m", "someone:1"),
        lambda: budget.pause("p/m", 1.0),
    ]
    raised: list[type[BaseException]] = []
    for call in calls:
        started = time.monotonic()
        # What means "Redis is away" to the store, too.
        with pytest.raises((TimeoutError, OSError, RedisError)) as caught:
            await call()
        assert time.monotonic() - started < within, caught.value
        raised.append(type(caught.value))
    return raised


async def test_a_stopped_redis_makes_every_method_raise_promptly(
    own_redis_server: RedisServer, prefix: str
) -> None:
    server = own_redis_server
    async with store_factory(server.url, prefix) as make:
        budget = RedisBudget(make(timeout=0.25))
        assert granted(await budget.reserve("p/m", 5, 100, 1))  # connected
        server.stop()
        await every_method_raises(budget, within=0.4)

        server.start()  # back, empty: the scripts are loaded again
        assert granted(await budget.reserve("p/m", 5, 100, 1))


async def test_a_stalled_redis_makes_every_method_raise_within_the_timeout(prefix: str) -> None:
    with silent_server() as url:
        store = RedisHealthStore(url, prefix=prefix, timeout=0.1, reconnect_delay=5)
        try:
            raised = await every_method_raises(RedisBudget(store), within=0.3)
        finally:
            await store.aclose()
    # Ours (anyio) or redis-py's socket timeout: both a timeout, as the caller sees it.
    assert all(issubclass(kind, TimeoutError) or "Timeout" in kind.__name__ for kind in raised)


async def test_a_degraded_or_closed_store_raises_at_once(budgets: MakeBudget) -> None:
    budget = budgets()
    assert granted(await budget.reserve("p/m", 5, 100, 1))
    budget.store._degrade(ConnectionError("as if Redis went away"))
    assert budget.store.degraded
    raised = await every_method_raises(budget, within=0.01)
    assert set(raised) == {ConnectionError}

    closed = budgets()
    await closed.store.aclose()
    assert set(await every_method_raises(closed, within=0.01)) == {ConnectionError}


async def test_a_borrowed_client_without_decoding_works(
    redis_server: RedisServer, prefix: str
) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_server.url)  # bytes replies
    try:
        async with RedisHealthStore(client, prefix=prefix) as store:
            budget = RedisBudget(store)
            ok, _, reservation = await budget.reserve("p/m", 1, None, 1)
            assert ok and isinstance(reservation, str)
            ok, wait, _ = await budget.reserve("p/m", 1, None, 1)
            assert not ok and isinstance(wait, float)
            await budget.correct("p/m", reservation, 2)
            await budget.pause("p/m", 0.1)
            await budget.cancel("p/m", reservation)
    finally:
        await client.aclose()


# --------------------------------------------------------------------------- a cluster


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


async def test_the_budget_works_on_a_cluster(cluster: RedisCluster) -> None:
    """Every script's keys share the store's slot, so each runs whole on its node."""
    from redis.asyncio.cluster import RedisCluster as Client

    prefix = f"budget{uuid.uuid4().hex[:6]}:"
    client = Client.from_url(cluster.url, decode_responses=True)
    try:
        async with store_factory(f"{cluster.url}?cluster=yes", prefix) as make:
            first, second = RedisBudget(make()), RedisBudget(make())
            _, _, reservation = await first.reserve("p/m", 2, 100, 10)
            assert granted(await second.reserve("p/m", 2, 100, 10))
            assert not granted(await first.reserve("p/m", 2, 100, 10))
            await second.correct("p/m", reservation, 30)
            await second.cancel("p/m", reservation)
            assert granted(await first.reserve("p/m", 2, 100, 10))
            await first.pause("p/other", 5)
            assert not granted(await second.reserve("p/other", None, None, 1))

            keys = [key async for key in client.scan_iter(match=f"{first.store.key_prefix}*")]
            assert sorted(keys) == sorted([*first.keys("p/m")[:3], first.keys("p/other")[3]])
            for key in keys:
                assert await client.pttl(key) > 0, key
            assert await client.get(first.keys("p/m")[2]) == "20"
    finally:
        await client.aclose()


# --------------------------------------------------------------------------- the fleet

FLEET_RPM = 20
WORKERS = 4
CALLERS = 8
RUN = 3.0


def most_in_any_window(arrivals: list[float], window: float = WINDOW) -> int:
    """The most arrivals (sorted) in any interval [t, t + window)."""
    most, first = 0, 0
    for last, arrived in enumerate(arrivals):
        while arrivals[first] <= arrived - window:
            first += 1
        most = max(most, last - first + 1)
    return most


def test_most_in_any_window() -> None:
    assert most_in_any_window([]) == 0
    assert most_in_any_window([0.0] * 5) == 5
    # An arrival 60 s after another is in a new interval: no 60 s holds four of these.
    assert most_in_any_window([0, 1, 59.9, 60, 61, 130], 60) == 3
    assert most_in_any_window([0, 0.5, 1, 59.9, 60], 60) == 4


async def test_a_fleet_of_processes_shares_one_budget(
    redis_server: RedisServer, prefix: str, redis: Redis
) -> None:
    """Four processes, each with a `LimitSet` on its own `RedisBudget` and eight
    concurrent callers, against one upstream with rpm 20: far more demand than budget
    (alone, each process would send its own 20). The upstream never sees more than rpm
    (+1 for clock skew at most) in any 60 s, and it sees the fleet use the whole budget,
    with no process falling back to its own windows."""
    run = await run_budget_fleet(
        redis_server.url, prefix, rpm=FLEET_RPM, workers=WORKERS, callers=CALLERS, run=RUN
    )
    arrivals, summaries = run["arrivals"], run["summaries"]
    admitted = [summary["admitted"] for summary in summaries]
    refused = sum(summary["refused"] for summary in summaries)
    print(
        f"\nfleet of {WORKERS} x {CALLERS} callers, rpm {FLEET_RPM}, {RUN} s: "
        f"the upstream saw {len(arrivals)} requests (per process {admitted}), "
        f"{refused} refusals; the budget was spent "
        f"{arrivals[-1] - run['started']:.2f} s after the start"
    )
    for summary in summaries:
        assert summary["errors"] == [] and summary["budget_failures"] == [], summary
        assert summary["answered"] == summary["admitted"]
    assert most_in_any_window(arrivals) <= FLEET_RPM + 1
    assert len(arrivals) >= FLEET_RPM  # the fleet used the whole budget
    assert sum(admitted) == len(arrivals)
    assert refused > WORKERS * CALLERS  # demand kept coming after the budget was spent
    assert all(run["started"] <= at <= run["stopped"] for at in arrivals)

    # What Redis holds: the budget's window, every entry in it, every key with a TTL.
    budget = RedisBudget(RedisHealthStore(redis_server.url, prefix=prefix))
    log, tokens, total, _ = budget.keys("up/m")
    assert await redis.zcard(log) == FLEET_RPM
    for key in (log, tokens, total):
        assert WINDOW * 1000 - (run["stopped"] - run["started"] + 5) * 1000 < await redis.pttl(key)


async def test_a_registry_on_a_redis_store_shares_rpm_through_the_chain(
    redis_server: RedisServer, prefix: str
) -> None:
    """Two registries on one Redis (two replicas) share a target's rpm: the second
    replica's call finds the budget spent and fails over, with no health penalty."""
    from majordomo_async import RedisHealthStore, Registry, TargetSkippedError

    stores = [RedisHealthStore(redis_server.url, prefix=prefix) for _ in range(2)]
    env = {"LLM_CAPPED": "fake://?rpm=2"}
    replicas = [Registry(env=env, health_store=store) for store in stores]
    try:
        assert isinstance(replicas[0].health.limits.budget, RedisBudget)
        for registry in replicas:
            assert (await registry.parse("capped/m").generate("hi")).model == "capped/m"
        response = await replicas[0].parse("capped/m, fake/backup").generate("hi")
        assert response.model == "fake/backup"
        assert isinstance(response.failed_attempts[0].error, TargetSkippedError)
        assert "rpm 2" in str(response.failed_attempts[0].error)
        health = (await replicas[0].health.snapshot())["capped/m"]
        assert (health.state, health.consecutive_failures) == ("healthy", 0)
    finally:
        for registry in replicas:
            await registry.aclose()
        for store in stores:
            await store.aclose()
