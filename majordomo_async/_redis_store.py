"""`RedisHealthStore`: one health state for a fleet of replicas, shared through Redis.

Data model, under a configurable prefix (default "majordomo:health:"):

- `{prefix}t:{target}`: a hash per target with state: `f` consecutive failures, `b`
  benchings, `u` end of the cooldown, `p` end of the half-open probe's lease, `o` the
  probe's token (`{store id}:{n}`: unique across the fleet; only its holder ends the probe).
- `{prefix}index`: a sorted set of the targets with state, scored by when their hash
  expires, so a replica can read the whole state in one round trip.
- `{prefix}gen`: a generation number bumped by every change, so an idle refresh costs
  one GET inside one script.

Every change is one Lua script (atomic on the server), and every script reads the time
from Redis (`TIME`): cooldowns and leases are on the server's timeline, whatever the
replicas' clocks say. Every key gets a TTL of `key_ttl` past the end of its cooldown.

The hot path does not wait for Redis: each replica keeps a local view of the fleet's
state, refreshed in the background every `refresh_interval`, and updated at once by the
answers to its own scripts. A healthy (or only failing) target is admitted from the view
with no await at all, and a benched one is refused from it; only taking the half-open
probe (a token with a lease, so a crashed prober does not block probes forever), renewing
or giving it back, recording failures, and resetting a target that has state go to Redis.

If Redis is unreachable or slow, every operation gives up after `timeout` and the store
switches to an `InMemoryHealthStore` seeded with the last view, logs one warning, and
reconnects in the background with exponential backoff; what it learned meanwhile is
written back (where Redis has nothing newer) when Redis answers again. The write-back
holds a lock that changes to the fallback wait for, so none is lost (`RedisHealthStore`).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import attrs

from ._exceptions import ConfigurationError
from ._health import Admission, Bench, HealthConfig, InMemoryHealthStore, _KeyState
from ._hooks import logger

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["RedisHealthStore", "store_from_url"]

_ADMITTED: Final = Admission(True)
_PROBE_IN_FLIGHT: Final = Admission(False)

# Options a store URL may carry in its query (the rest goes to redis-py).
_URL_OPTIONS: Final = {
    "prefix": str,
    "key_ttl": float,
    "timeout": float,
    "refresh_interval": float,
    "probe_lease": float,
}

# --------------------------------------------------------------------------- Lua

# Every script starts here: the server's time as seconds (a double, exact to the
# microsecond), and a formatter that round-trips doubles (Lua's tostring keeps 14 digits).
_TIME = """
if redis.replicate_commands then redis.replicate_commands() end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local function fmt(x)
  if x == nil then return '' end
  return string.format('%.17g', x)
end
"""

# Scripts on one target. KEYS: state hash, index, generation. ARGV[1]: target,
# ARGV[2]: key_ttl in seconds; the rest is per script. Every answer is
# {tag, generation, now, f, b, u, p, o}.
_TARGET = (
    _TIME
    + """
local function generation()
  return redis.call('GET', KEYS[3]) or '0'
end
local function bump()
  if redis.call('EXISTS', KEYS[3]) == 0 then
    -- Seeded from the clock: a generation that expired and comes back is never one
    -- a replica has already seen.
    redis.call('SET', KEYS[3], clock[1] .. string.format('%06d', tonumber(clock[2])))
  end
  return fmt(redis.call('INCR', KEYS[3]))
end
local function keep(until_)
  local ms = math.ceil((math.max((until_ or now) - now, 0) + tonumber(ARGV[2])) * 1000)
  redis.call('PEXPIRE', KEYS[1], ms)
  redis.call('ZADD', KEYS[2], fmt(now + ms / 1000), ARGV[1])
  for _, key in ipairs({KEYS[2], KEYS[3]}) do
    if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
  end
end
local function reply(tag, gen)
  local s = redis.call('HMGET', KEYS[1], 'f', 'b', 'u', 'p', 'o')
  return {tag, gen or generation(), fmt(now),
          s[1] or '', s[2] or '', s[3] or '', s[4] or '', s[5] or ''}
end
"""
)

# ARGV[3]: probe lease in seconds, ARGV[4]: the token the probe gets if this caller takes it.
# The same rules as InMemoryHealthStore._admit.
_ADMIT = (
    _TARGET
    + """
local s = redis.call('HMGET', KEYS[1], 'u', 'p')
local u = tonumber(s[1])
if not u then return reply('ok') end
if now < u then return reply('refused') end
local p = tonumber(s[2])
if p and now < p then return reply('busy') end
redis.call('HSET', KEYS[1], 'p', fmt(now + tonumber(ARGV[3])), 'o', ARGV[4])
keep(nil)
return reply('probe', bump())
"""
)

# ARGV[3]: retry-after hint (clamped), ARGV[4..7]: threshold, base cooldown, factor, cap,
# ARGV[8]: the caller's probe token ('' for none).
# The same rules as InMemoryHealthStore._record_failure, and the same arithmetic as
# HealthConfig.cooldown (pow, then the cap), so both stores compute identical deadlines.
# Tags: 'benched' (this failure benched the target), 'extended' (benched already),
# 'counted' (not benched).
_FAIL = (
    _TARGET
    + """
local s = redis.call('HMGET', KEYS[1], 'f', 'b', 'u', 'p', 'o')
local f = (tonumber(s[1]) or 0) + 1
local b = tonumber(s[2]) or 0
local u = tonumber(s[3])
local p = tonumber(s[4])
local hint = tonumber(ARGV[3])
local live = p ~= nil and now < p
local tag
if u and now < u then
  -- Benched already: a late failure may extend the cooldown, never escalate it.
  tag = 'extended'
  u = math.max(u, now + hint)
  redis.call('HSET', KEYS[1], 'f', f, 'u', fmt(u))
elseif live and s[5] ~= ARGV[8] then
  -- Someone else's probe is out: this failure counts, but only the probe ends it.
  tag = 'counted'
  redis.call('HSET', KEYS[1], 'f', f)
elseif live or f >= tonumber(ARGV[4]) then
  tag = 'benched'
  b = b + 1
  local factor, cap = tonumber(ARGV[6]), tonumber(ARGV[7])
  local cooldown = cap
  if not (factor > 1 and b - 1 > 64) then
    cooldown = math.min(tonumber(ARGV[5]) * factor ^ (b - 1), cap)
  end
  u = now + math.max(cooldown, hint)
  redis.call('HSET', KEYS[1], 'f', f, 'b', b, 'u', fmt(u))
  redis.call('HDEL', KEYS[1], 'p', 'o')
else
  tag = 'counted'
  redis.call('HSET', KEYS[1], 'f', f)
end
keep(u)
return reply(tag, bump())
"""
)

# Any success resets the target, its probe included.
_SUCCESS = (
    _TARGET
    + """
local gen = nil
if redis.call('DEL', KEYS[1]) == 1 then gen = bump() end
redis.call('ZREM', KEYS[2], ARGV[1])
return reply('ok', gen)
"""
)

# ARGV[3]: the caller's probe token: only the probe's holder gives it back.
_RELEASE = (
    _TARGET
    + """
local gen = nil
if redis.call('HGET', KEYS[1], 'o') == ARGV[3] then
  redis.call('HDEL', KEYS[1], 'p', 'o')
  keep(nil)
  gen = bump()
end
return reply('ok', gen)
"""
)

# ARGV[3]: probe lease in seconds, ARGV[4]: the caller's probe token. Only the holder of a
# live lease extends it ('renewed'); anyone else learns it has lost the probe ('lost').
_RENEW = (
    _TARGET
    + """
local s = redis.call('HMGET', KEYS[1], 'p', 'o')
local p = tonumber(s[1])
if s[2] ~= ARGV[4] or not p or now >= p then return reply('lost') end
redis.call('HSET', KEYS[1], 'p', fmt(now + tonumber(ARGV[3])))
keep(nil)
return reply('renewed', bump())
"""
)

# Write back what a replica learned while Redis was away, unless Redis knows better.
# ARGV[3..5]: failures, benchings, seconds left of the cooldown ('' if not benched);
# ARGV[6..7]: seconds left of a live probe's lease ('' if none), and its token.
_SEED = (
    _TARGET
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return reply('kept') end
local left = tonumber(ARGV[5])
local u = nil
if left then u = now + left end
redis.call('HSET', KEYS[1], 'f', ARGV[3], 'b', ARGV[4])
if u then redis.call('HSET', KEYS[1], 'u', fmt(u)) end
local lease = tonumber(ARGV[6])
if lease then redis.call('HSET', KEYS[1], 'p', fmt(now + lease), 'o', ARGV[7]) end
keep(u)
return reply('seeded', bump())
"""
)

# The whole state, unless the generation is the one the caller already has.
# KEYS: index, generation. ARGV[1]: the caller's generation, ARGV[2]: state key prefix.
_REFRESH = (
    _TIME
    + """
local gen = redis.call('GET', KEYS[2]) or '0'
local out = {fmt(now), gen}
if gen == ARGV[1] then return out end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now))
for _, target in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local s = redis.call('HMGET', ARGV[2] .. target, 'f', 'b', 'u', 'p', 'o')
  if s[1] then
    table.insert(out, target)
    for i = 1, 5 do table.insert(out, s[i] or '') end
  end
end
return out
"""
)

_SCRIPTS: Final = {
    "admit": _ADMIT,
    "fail": _FAIL,
    "success": _SUCCESS,
    "release": _RELEASE,
    "renew": _RENEW,
    "seed": _SEED,
    "refresh": _REFRESH,
}

# --------------------------------------------------------------------------- helpers


class _ServerClock:
    """Redis server time, estimated locally: `time.monotonic()` plus a measured offset.

    It starts from the local wall clock (servers are usually NTP-synced, so the first
    estimate is close) and is corrected by every quick round trip, to within half of it.
    """

    __slots__ = ("_best_rtt", "offset")

    def __init__(self) -> None:
        self.offset = time.time() - time.monotonic()
        self._best_rtt = math.inf

    def observe(self, server_now: float, sent: float, received: float) -> None:
        """Correct the offset from a reply stamped `server_now` (local send/receive times)."""
        rtt = received - sent
        # A slow round trip says little about when the server read its clock.
        if rtt <= 2 * self._best_rtt + 0.0005:
            self.offset = server_now - (sent + received) / 2
            self._best_rtt = min(self._best_rtt, rtt)

    def now(self) -> float:
        """The estimated server time, in seconds since the epoch."""
        return time.monotonic() + self.offset

    def wall(self, when: float) -> datetime:
        """Server time `when` as a local, timezone-aware datetime."""
        return datetime.now().astimezone() + timedelta(seconds=when - self.now())

    async def sleep(self, seconds: float) -> None:
        """`anyio.sleep`."""
        await anyio.sleep(max(seconds, 0.0))

    def deadline_scope(self, deadline: float) -> anyio.CancelScope:
        """A cancel scope that ends at server time `deadline`."""
        if math.isinf(deadline):
            return anyio.CancelScope()
        return anyio.CancelScope(deadline=anyio.current_time() + (deadline - self.now()))


class _Seen:
    """One target as this replica last saw it in Redis, and the generation it saw it at."""

    __slots__ = ("benchings", "failures", "gen", "healthy", "lease", "probe", "until")

    def __init__(
        self,
        failures: int,
        benchings: int,
        until: float | None,
        lease: float | None,
        probe: str | None,
        gen: int,
    ) -> None:
        self.failures = failures
        self.benchings = benchings
        self.until = until
        self.lease = lease
        """End of the half-open probe's lease (None: no probe out)."""
        self.probe = probe
        """The probe's token (its holder may be another replica)."""
        self.gen = gen
        # No state: a target reset by a success (kept so an older refresh cannot revive it).
        self.healthy = failures == 0 and until is None and lease is None

    @classmethod
    def parse(cls, fields: Sequence[str], gen: int) -> _Seen:
        """From the five fields f, b, u, p, o of a script's answer."""
        failures, benchings, until, lease, probe = fields
        return cls(
            int(failures or 0),
            int(benchings or 0),
            _float(until),
            _float(lease),
            probe or None,
            gen,
        )


def _float(text: str) -> float | None:
    return float(text) if text else None


def _text(value: object) -> str:
    # A borrowed client may not decode responses.
    return value.decode() if isinstance(value, bytes) else str(value)


def _redacted(url: str) -> str:
    """`url` without its credentials or query (for log lines)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _split_options(url: str) -> tuple[str, dict[str, Any]]:
    """Take this store's options out of `url`'s query; the rest stays for redis-py."""
    parts = urlsplit(url)
    ours: dict[str, Any] = {}
    theirs: list[tuple[str, str]] = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        convert = _URL_OPTIONS.get(name)
        if convert is None:
            theirs.append((name, value))
            continue
        try:
            ours[name] = convert(value)
        except ValueError:
            raise ConfigurationError(
                f"health store URL option {name}={value!r} is not a number"
            ) from None
    return urlunsplit(parts._replace(query=urlencode(theirs))), ours


def store_from_url(url: str, config: HealthConfig) -> RedisHealthStore | None:
    """The store a `MAJORDOMO_HEALTH_STORE` value names (None: the in-process default).

    Raises:
        ConfigurationError: an unknown scheme, or the `redis` extra is not installed.
    """
    url = url.strip()
    if url in ("", "memory", "memory://"):
        return None
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError(
            f"unsupported health store {_redacted(url)!r}: use redis://, rediss://, "
            "unix:// or 'memory'"
        )
    return RedisHealthStore(url, config)


# --------------------------------------------------------------------------- the store


@final
class RedisHealthStore:
    """Health state shared by every replica of a service through Redis.

    A drop-in `HealthStore` with the semantics of `InMemoryHealthStore` (threshold,
    exponential capped cooldowns, `retry_after` that lengthens them, one owned half-open
    probe at a time with a lease, now fleet-wide), with every update an atomic Lua script
    and every deadline on the Redis server's clock. Probe tokens are `{store id}:{n}`, so
    a token names one probe across the whole fleet: only its holder reports, renews or
    gives back the probe, wherever it runs.

    Staleness bound: admitting and resetting a healthy target costs no round trip: the
    answer comes from a local view of the fleet's state that a background task refreshes
    every `refresh_interval`. What another replica changed is therefore seen within
    `refresh_interval + timeout` (0.75 s by default); what this replica changed is seen
    at once. Taking the probe always asks Redis, so there is exactly one probe per
    expired cooldown (or expired lease) across the fleet, whatever the view says.

    The first `admit` of a new store waits for the view's first read (one round trip,
    at most `timeout`), so a replica started during an outage knows what the fleet knows.

    If Redis does not answer within `timeout`, the store carries on in process (seeded
    from its last view, probes and their leases included), logs one warning, and
    reconnects in the background; calls never fail or stall because of Redis.

    Locking. Reading and updating the local view or the in-process fallback never awaits
    in between, so each such step is atomic on the event loop and takes no lock: the hot
    path (admitting or refusing from the view, or from the fallback while Redis is away)
    is lock-free and await-free. Changes in Redis are atomic Lua scripts. What spans an
    `await` holds one `anyio.Lock(fast_acquire=True)` (uncontended, it does not even
    yield to the event loop):

    - The reconnection's write-back. It copies the fallback into Redis key by key,
      refreshes the view, and only then drops the fallback; holding the lock across those
      awaits, it drops exactly the state it wrote back.
    - Every change recorded in the fallback: a failure, a success, a probe taken, renewed
      or given back, by a call made while Redis is away or by one whose Redis call has
      just failed (the switch to the fallback itself is made synchronously, in the failed
      call's `except`). During a write-back such a change waits for it and then goes to
      Redis if Redis is back, instead of landing in a fallback about to be dropped: a
      bench recorded during a reconnection is never lost.

    A degraded `admit` takes the lock only to hand out the probe during a write-back, and
    a success for a target the fallback has no state for (nothing to change) takes none.

    Use it from one event loop, and close it with `aclose()` (or `async with`). A
    `Registry` built with `MAJORDOMO_HEALTH_STORE=redis://...` in its environment creates
    one and closes it itself.

    Example:
        ```python
        config = HealthConfig()
        async with RedisHealthStore("redis://127.0.0.1:6379/0", config) as store:
            async with Registry(health=config, health_store=store) as registry:
                ...
        ```

    Args:
        url: a Redis URL (`redis://[:password@]host:port/db`, `rediss://`, `unix://`)
            whose query may also set `prefix`, `key_ttl`, `timeout`, `refresh_interval`
            and `probe_lease`; or a `redis.asyncio.Redis` client, borrowed (not closed).
        config: thresholds and cooldowns; pass the same one as the Registry's `health=`.
        prefix: prepended to every key, so several services can share one database.
        key_ttl: seconds a target's state outlives its last change (or the end of its
            cooldown): state nobody touches expires.
        timeout: seconds any one Redis operation may take before the in-process fallback
            answers instead.
        refresh_interval: seconds between background refreshes of the local view.
        probe_lease: seconds a probe is held at most without news (`renew_probe` extends
            it): a prober that crashes without a verdict blocks the next probe for this
            long, no longer. Defaults to `config.probe_lease`.
        reconnect_delay: seconds before the first reconnection attempt; it doubles up to
            `max_reconnect_delay` while Redis stays away.
        max_connections: the connection pool's size (a URL only).
    """

    def __init__(
        self,
        url: str | Redis,
        config: HealthConfig | None = None,
        *,
        prefix: str | None = None,
        key_ttl: float | None = None,
        timeout: float | None = None,
        refresh_interval: float | None = None,
        probe_lease: float | None = None,
        reconnect_delay: float = 0.5,
        max_reconnect_delay: float = 10.0,
        max_connections: int = 8,
    ) -> None:
        options: dict[str, Any] = {}
        if isinstance(url, str):
            self._url, options = _split_options(url)
            self._where = _redacted(url)
            self._client: Redis | None = None
            self._owns_client = True
        else:
            self._url = ""
            self._where = "a borrowed client"
            self._client = url
            self._owns_client = False

        def option(name: str, given: Any, default: Any) -> Any:
            return given if given is not None else options.get(name, default)

        self._config = config or HealthConfig()
        self._prefix: str = option("prefix", prefix, "majordomo:health:")
        self._key_ttl: float = option("key_ttl", key_ttl, 3600.0)
        self._timeout: float = option("timeout", timeout, 0.25)
        self._refresh_interval: float = option("refresh_interval", refresh_interval, 0.5)
        self._lease: float = option("probe_lease", probe_lease, self._config.probe_lease)
        self._reconnect_delay = reconnect_delay
        self._max_reconnect_delay = max(max_reconnect_delay, reconnect_delay)
        self._max_connections = max_connections
        self._validate()
        try:
            import redis.asyncio  # noqa: F401  (fail at construction, not at the first call)
        except ImportError:
            raise ConfigurationError(
                "RedisHealthStore needs redis-py: pip install 'majordomo-async[redis]'"
            ) from None

        self._owner = uuid.uuid4().hex
        self._tokens = itertools.count(1)
        self._clock = _ServerClock()
        self._index = f"{self._prefix}index"
        self._generation = f"{self._prefix}gen"
        self._scripts: dict[str, AsyncScript] = {}
        self._errors: tuple[type[BaseException], ...] = (TimeoutError, OSError)
        self._view: dict[str, _Seen] = {}
        self._view_gen = ""
        """The generation of the last full refresh ('' before the first)."""
        self._fallback: InMemoryHealthStore | None = None
        self._lock = anyio.Lock(fast_acquire=True)
        """Held by the write-back of the fallback and by every change to the fallback (see
        the class docstring). Made here even outside an event loop: anyio then binds it to
        the running loop on first use."""
        self._poller: asyncio.Task[None] | None = None
        self._loaded: anyio.Event | None = None
        """Set once the background task has read the state for the first time."""
        self._ready = False
        self._closed = False
        self._decided_at = 0.0
        """Server time of the last decision (for tests that replay a run on a model)."""

    def _validate(self) -> None:
        for name in ("_key_ttl", "_timeout", "_refresh_interval", "_lease", "_reconnect_delay"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0):
                raise ConfigurationError(
                    f"RedisHealthStore {name.lstrip('_')} must be positive, got {value!r}"
                )
        if self._key_ttl < self._lease:
            raise ConfigurationError("RedisHealthStore key_ttl must be >= probe_lease")
        if self._max_connections < 1:
            raise ConfigurationError("RedisHealthStore max_connections must be at least 1")

    # ----------------------------------------------------------------- HealthStore

    def now(self) -> float:
        """The Redis server's time (estimated locally), the timeline of every `until`."""
        return self._clock.now()

    @property
    def prefix(self) -> str:
        """Prepended to every key this store writes."""
        return self._prefix

    @property
    def refresh_interval(self) -> float:
        """Seconds between background refreshes of the local view."""
        return self._refresh_interval

    @property
    def probe_lease(self) -> float:
        """Seconds a half-open probe is held at most without news."""
        return self._lease

    @property
    def staleness_bound(self) -> float:
        """Seconds within which this replica sees another replica's change."""
        return self._refresh_interval + self._timeout

    @property
    def degraded(self) -> bool:
        """True while Redis is away and the in-process fallback answers."""
        return self._fallback is not None

    async def admit(self, key: str) -> Admission:
        """See `HealthStore.admit`. Answers from the local view unless taking the probe.

        The first call of a new store waits for the view's first read (at most `timeout`),
        so a replica that starts during an outage does not try a target the fleet benched.
        """
        if not self._ready:
            await self._first_view()
        fallback = self._fallback
        if fallback is not None:
            if not self._lock.locked():
                return self._admit_locally(fallback, key)  # whole: no await
            # A write-back is in progress: it must find the fallback as it left it, so a
            # probe is taken only once it is over (from Redis, if Redis is back).
            state = fallback._states.get(key)
            held = (state.probe, state.lease) if state is not None else None
            admission = fallback._admit(key)
            if admission.probe is None:
                return admission
            assert state is not None and held is not None
            state.probe, state.lease = held
            return await self._take_probe(key)
        seen = self._view.get(key)
        if seen is None or seen.until is None:
            return _ADMITTED
        now = self._clock.now()
        if now < seen.until:
            self._decided_at = now
            return Admission(False, until=seen.until)
        if _probing(seen, now):
            self._decided_at = now
            return _PROBE_IN_FLIGHT
        return await self._take_probe(key)

    async def _take_probe(self, key: str) -> Admission:
        """`admit` of a half-open target: the one caller to take the probe gets a token."""
        while True:
            if self._fallback is None:
                token = self._new_token()
                reply = await self._run("admit", key, self._lease, token)
                if reply is not None:
                    tag = reply[0]
                    if tag == "probe":
                        return Admission(True, probe=token)
                    if tag == "busy":
                        return _PROBE_IN_FLIGHT
                    if tag == "refused":
                        return Admission(False, until=_float(reply[5]))
                    return _ADMITTED
            async with self._lock:
                fallback = self._fallback
                if fallback is not None:
                    return self._admit_locally(fallback, key)
            # Redis answered again while this waited for the write-back: ask it.

    async def record_failure(
        self, key: str, retry_after: float | None, probe: str | None = None
    ) -> Bench | None:
        """See `HealthStore.record_failure`. Always counted in Redis, for the whole fleet."""
        if not self._ready:
            await self._first_view()
        config = self._config
        hint = min(retry_after, config.max_retry_after) if retry_after else 0.0
        while True:
            if self._fallback is None:
                reply = await self._run(
                    "fail",
                    key,
                    repr(hint),
                    config.failure_threshold,
                    repr(config.base_cooldown),
                    repr(config.cooldown_factor),
                    repr(config.max_cooldown),
                    probe or "",
                )
                if reply is not None:
                    tag = reply[0]
                    if tag == "counted":
                        return None
                    return Bench(float(reply[5]), new=tag == "benched")
            async with self._lock:
                fallback = self._fallback
                if fallback is not None:
                    return fallback._record_failure(key, retry_after, probe)
            # Redis answered again while this waited for the write-back: count it there.

    async def record_success(self, key: str, probe: str | None = None) -> None:
        """See `HealthStore.record_success`. Free for a target with no state in the view.

        Any success resets the target, its probe included (whoever holds it).
        """
        while True:
            fallback = self._fallback
            if fallback is None:
                seen = self._view.get(key)
                if seen is None or seen.healthy:
                    return
                if await self._run("success", key) is not None:
                    return
            elif key not in fallback._states:
                return  # nothing to forget
            async with self._lock:
                fallback = self._fallback
                if fallback is not None:
                    fallback._states.pop(key, None)
                    return

    async def release_probe(self, key: str, probe: str) -> None:
        """See `HealthStore.release_probe`. Only the probe's holder can give it back."""
        while True:
            if self._fallback is None and await self._run("release", key, probe) is not None:
                return
            async with self._lock:
                fallback = self._fallback
                if fallback is not None:
                    fallback._release(key, probe)
                    return

    async def renew_probe(self, key: str, probe: str) -> bool:
        """See `HealthStore.renew_probe`. Extends the lease by `probe_lease` from now."""
        while True:
            if self._fallback is None:
                reply = await self._run("renew", key, self._lease, probe)
                if reply is not None:
                    return reply[0] == "renewed"
            async with self._lock:
                fallback = self._fallback
                if fallback is not None:
                    return await fallback.renew_probe(key, probe)  # never suspends

    async def snapshot(self) -> Mapping[str, tuple[int, int, float | None, bool]]:
        """See `HealthStore.snapshot`. Reads the whole state from Redis (one round trip)."""
        if self._poller is None:
            self._start()
        if self._fallback is None:
            reply = await self._refresh(force=True)
            if reply is not None:
                now = float(reply[0])
                return {
                    key: (seen.failures, seen.benchings, seen.until, _probing(seen, now))
                    for key, seen in self._view.items()
                    if not seen.healthy
                }
        return await self._degraded_store().snapshot()

    # ----------------------------------------------------------------- lifecycle

    async def refresh(self) -> None:
        """Bring the local view up to date now (the background task does it regularly)."""
        if self._poller is None:
            self._start()
        if self._fallback is None:
            await self._refresh(force=True)

    async def aclose(self) -> None:
        """Stop the background refresh and close the connections this store opened.

        Idempotent. A closed store keeps answering, in process, from its last view.
        """
        if self._closed:
            return
        self._closed = True
        self._degraded_store()
        if self._loaded is not None:
            self._loaded.set()  # nobody waits for a first read that will not come
        poller, self._poller = self._poller, None
        # Wait for it without taking its cancellation as ours, and insist: on Python 3.11,
        # asyncio.wait_for (used inside redis-py) can swallow a cancellation that races
        # with a result.
        while poller is not None and not poller.done():
            poller.cancel()
            await asyncio.wait([poller], timeout=0.1)
        client, self._client = self._client, None
        if client is not None and self._owns_client:
            await client.aclose()

    async def __aenter__(self) -> RedisHealthStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "degraded" if self.degraded else "ok"
        return f"<RedisHealthStore {self._where} prefix={self.prefix!r} {state}>"

    # ----------------------------------------------------------------- Redis

    def _connect(self) -> dict[str, AsyncScript]:
        """The scripts, bound to a client created on first use (inside the event loop)."""
        if self._scripts:
            return self._scripts
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        self._errors = (TimeoutError, OSError, RedisError)
        client = self._client
        if client is None:
            # No retries inside redis-py: a failed operation falls back at once, and the
            # background task does the reconnecting.
            pool = BlockingConnectionPool.from_url(
                self._url,
                max_connections=self._max_connections,
                timeout=self._timeout,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                retry=Retry(NoBackoff(), 0),
                decode_responses=True,
            )
            client = self._client = Redis.from_pool(pool)
        self._scripts = {name: client.register_script(text) for name, text in _SCRIPTS.items()}
        return self._scripts

    async def _call(
        self, script: str, keys: list[str], args: Sequence[str | int | float]
    ) -> list[str]:
        """Run one script within the timeout; its answer as text. Raises on any failure."""
        scripts = self._connect()
        with anyio.fail_after(self._timeout):
            sent = time.monotonic()
            raw = await scripts[script](keys=keys, args=args)
            received = time.monotonic()
        reply = [_text(item) for item in raw]
        self._clock.observe(float(reply[0 if script == "refresh" else 2]), sent, received)
        return reply

    async def _run(self, script: str, key: str, *args: str | int | float) -> list[str] | None:
        """Run a script on `key` and fold its answer into the view; None if Redis failed."""
        if self._fallback is not None:
            return None
        keys = [f"{self._prefix}t:{key}", self._index, self._generation]
        try:
            reply = await self._call(script, keys, (key, repr(self._key_ttl), *args))
        except self._errors as exc:
            self._degrade(exc)
            return None
        self._see(key, reply)
        return reply

    async def _refresh(self, *, force: bool) -> list[str] | None:
        """Read the fleet's state (only if it changed, unless `force`) into the view."""
        if self._fallback is not None:
            return None
        try:
            reply = await self._call_refresh("" if force else self._view_gen)
        except self._errors as exc:
            self._degrade(exc)
            return None
        self._see_all(reply)
        return reply

    async def _call_refresh(self, known_gen: str) -> list[str]:
        return await self._call(
            "refresh", [self._index, self._generation], (known_gen, f"{self._prefix}t:")
        )

    # ----------------------------------------------------------------- the local view

    def _see(self, key: str, reply: list[str]) -> None:
        """Fold one script's answer (tag, gen, now, f, b, u, p, o) into the view."""
        gen = int(reply[1])
        self._decided_at = float(reply[2])
        current = self._view.get(key)
        # An answer can arrive after a refresh that already saw a later state.
        if current is None or current.gen <= gen:
            self._view[key] = _Seen.parse(reply[3:8], gen)

    def _see_all(self, reply: list[str]) -> None:
        """Fold a refresh's answer (now, gen, then target, f, b, u, p, o per target) in.

        A script's answer that arrives after a refresh may be newer than it (a higher
        generation): such entries are kept. Generation 0 means the state is gone (expired
        or flushed); generations are then seeded from the server clock in microseconds,
        so only an entry whose generation is above the refresh's time is newer.
        """
        gen_text = reply[1]
        gen = int(gen_text) or math.floor(float(reply[0]) * 1e6)
        view = self._view
        if len(reply) == 2 and gen_text == self._view_gen and gen_text != "0":
            # Unchanged: only forget the resets the last full refresh already covers.
            for key in [key for key, seen in view.items() if seen.healthy and seen.gen <= gen]:
                del view[key]
            return
        fresh = {
            reply[index]: _Seen.parse(reply[index + 1 : index + 6], gen)
            for index in range(2, len(reply), 6)
        }
        fresh.update({key: seen for key, seen in view.items() if seen.gen > gen})
        self._view = fresh
        self._view_gen = gen_text

    # ----------------------------------------------------------------- fallback

    def _new_token(self) -> str:
        """A probe token no other store of the fleet hands out."""
        return f"{self._owner}:{next(self._tokens)}"

    def _admit_locally(self, fallback: InMemoryHealthStore, key: str) -> Admission:
        """`admit` on the fallback, whole (no await), with a probe token of this store's."""
        admission = fallback._admit(key)
        if admission.probe is None:
            return admission
        # Named like the tokens Redis hands out, so it stays unique when written back.
        token = fallback._states[key].probe = self._new_token()
        return Admission(True, probe=token)

    def _degraded_store(self) -> InMemoryHealthStore:
        """The in-process store, created from the last view when Redis goes away."""
        fallback = self._fallback
        if fallback is None:
            config = attrs.evolve(self._config, probe_lease=self._lease)
            fallback = self._fallback = InMemoryHealthStore(config, self._clock)
            # Seeded with what the fleet knew, so benched targets stay benched and a probe
            # out stays out (its holder can still report it) until its lease ends.
            for key, seen in self._view.items():
                if seen.healthy:
                    continue
                state = fallback._states[key] = _KeyState()
                state.failures = seen.failures
                state.benchings = seen.benchings
                state.until = seen.until
                if seen.probe is not None and seen.lease is not None:
                    state.probe, state.lease = seen.probe, seen.lease
        return fallback

    def _degrade(self, error: BaseException) -> None:
        if self._fallback is not None or self._closed:
            return
        self._degraded_store()
        logger.warning(
            "health store: Redis at %s did not answer (%s); using in-process health "
            "state until it is back",
            self._where,
            type(error).__name__,
            extra={"majordomo_health_store": self._where},
        )

    async def _reconnect(self) -> bool:
        """Try Redis again; on success write back what was learned and leave the fallback.

        The write-back holds the lock (see the class docstring): a change to the fallback
        made meanwhile waits for it, then goes to Redis, so it is not dropped with the
        fallback.
        """
        fallback = self._fallback
        if fallback is None:
            return True
        try:
            if self._client is not None and self._owns_client:
                # Connections from before the outage may be dead without knowing it yet:
                # start afresh rather than fail again on each of them.
                await self._client.connection_pool.disconnect()
            await self._call_refresh("")  # is it back? (changes to the fallback go on)
        except self._errors:
            return False
        async with self._lock:
            # Still the same fallback: only this method (run by the poller alone) drops it.
            try:
                # And it does not change while the lock is held.
                for key, state in list(fallback._states.items()):
                    now = self._clock.now()
                    left = "" if state.until is None else repr(max(state.until - now, 0.0))
                    probing = state.probe is not None and now < state.lease
                    lease = repr(state.lease - now) if probing else ""
                    keys = [f"{self._prefix}t:{key}", self._index, self._generation]
                    args = (
                        key,
                        repr(self._key_ttl),
                        state.failures,
                        state.benchings,
                        left,
                        lease,
                        state.probe or "",
                    )
                    await self._call("seed", keys, args)
                reply = await self._call_refresh("")
            except self._errors:
                return False
            self._fallback = None
            self._view = {}
            self._see_all(reply)
        logger.info(
            "health store: Redis at %s answers again; health state is shared again",
            self._where,
            extra={"majordomo_health_store": self._where},
        )
        return True

    # ----------------------------------------------------------------- background

    def _start(self) -> None:
        if self._closed:
            return
        self._loaded = anyio.Event()
        self._poller = asyncio.get_running_loop().create_task(
            self._poll(self._loaded), name=f"majordomo health refresh ({self._where})"
        )

    async def _first_view(self) -> None:
        """Start the background task and wait for its first read of the state."""
        if self._poller is None:
            self._start()
        if self._loaded is not None:
            await self._loaded.wait()
        self._ready = True

    async def _poll(self, loaded: anyio.Event) -> None:
        """Refresh the view every `refresh_interval`; while Redis is away, reconnect."""
        delay = self._reconnect_delay
        while not self._closed:
            pause = self._refresh_interval
            try:
                if self._fallback is None:
                    await self._refresh(force=False)
                    if self.degraded:  # Redis just went away
                        pause = delay
                elif await self._reconnect():
                    delay = self._reconnect_delay
                else:
                    pause, delay = delay, min(delay * 2, self._max_reconnect_delay)
            except Exception:
                # A bug must not end the refreshing silently, nor spin.
                logger.exception("health store: the background refresh failed")
                pause = self._max_reconnect_delay
            loaded.set()
            await anyio.sleep(pause)


def _probing(seen: _Seen, now: float) -> bool:
    return seen.lease is not None and now < seen.lease
