"""`RedisHealthStore`: one health state for a fleet of replicas, shared through Redis.

Data model. Every key starts with the store's key prefix: the configured `prefix`
(default "majordomo:health:") in braces, "{majordomo:health:}", so that it is a Redis
Cluster hash tag and every key of a store hashes to one slot (a prefix that already holds
a hash tag, "svc:{health}:", is used as it is):

- `{key prefix}t:{target}`: a hash per target with state: `f` consecutive failures, `b`
  benchings, `u` end of the cooldown, `p` end of the half-open probe's lease, `o` the
  probe's token (`{store id}:{n}`: unique across the fleet; only its holder ends the probe).
- `{key prefix}index`: a sorted set of the targets with state, scored by when their hash
  expires, so a replica can list the whole state in one round trip.
- `{key prefix}gen`: a generation number bumped by every change, so an idle refresh costs
  one GET inside one script.

Every change is one Lua script (atomic on the server) whose keys are all declared (passed
in KEYS, never built inside the script), and every script reads the time from Redis
(`TIME`): cooldowns and leases are on the server's timeline, whatever the replicas' clocks
say. Every key gets a TTL of `key_ttl` past the end of its cooldown, from the script that
creates it on.

Every change is also published, by the script that makes it, on the channel
`{key prefix}events` (the target, the new generation and the new state). Each replica
subscribes and folds what it hears into its local view at once, so a bench or a recovery
reaches the whole fleet within a network hop, not at the next poll. The poll every
`refresh_interval` stays, as the fallback for a lost subscription or a missed message.

The hot path does not wait for Redis: each replica answers from its local view, kept
current by the subscription, the background poll and the answers to its own scripts. A
healthy (or only failing) target is admitted from the view with no await at all, and a
benched one is refused from it; only taking the half-open probe (a token with a lease, so
a crashed prober does not block probes forever), renewing or giving it back, recording
failures, and resetting a target that has state go to Redis.

If Redis is unreachable or slow, every operation gives up after `timeout` and the store
switches to an `InMemoryHealthStore` seeded with the last view, tells its observer (and
logs one warning), and reconnects in the background with exponential backoff; what it
learned meanwhile is written back (where Redis has nothing newer) when Redis answers
again. The write-back holds a lock that changes to the fallback wait for, so none is lost
(`RedisHealthStore`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import attrs

from ._exceptions import ConfigurationError
from ._health import Admission, Bench, HealthConfig, InMemoryHealthStore, _KeyState
from ._hooks import logger

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub
    from redis.asyncio.cluster import RedisCluster
    from redis.commands.core import AsyncScript

__all__ = ["RedisHealthStore", "RedisStoreEvent", "store_from_url"]

_ADMITTED: Final = Admission(True)
_PROBE_IN_FLIGHT: Final = Admission(False)

# --------------------------------------------------------------------------- URL options

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(text)


def _cert_reqs(text: str) -> str:
    if text not in ("none", "optional", "required"):
        raise ValueError(text)
    return text


# The store's own options (taken out of the URL), with the converter of each value and
# what a bad value is told it should be.
_STORE_OPTIONS: Final[Mapping[str, tuple[Callable[[str], Any], str]]] = {
    "prefix": (str, "a string"),
    "key_ttl": (_number, "a number of seconds"),
    "timeout": (_number, "a number of seconds"),
    "refresh_interval": (_number, "a number of seconds"),
    "probe_lease": (_number, "a number of seconds"),
    "max_connections": (_count, "a whole number"),
    "pubsub": (_flag, "yes or no"),
    "cluster": (_flag, "yes or no"),
}
# Options left in the URL for redis-py, checked here with the same rules redis-py applies
# later (so a bad one fails at construction, not at the first call that needs Redis).
_CLIENT_OPTIONS: Final[Mapping[str, tuple[Callable[[str], Any], str]]] = {
    "db": (_count, "a whole number"),
    "client_name": (str, "a string"),
    "health_check_interval": (_count, "a whole number of seconds"),
    "socket_keepalive": (_flag, "yes or no"),
}
_TLS_OPTIONS: Final[Mapping[str, tuple[Callable[[str], Any], str]]] = {
    "ssl_cert_reqs": (_cert_reqs, "none, optional or required"),
    "ssl_ca_certs": (str, "a file name"),
    "ssl_certfile": (str, "a file name"),
    "ssl_keyfile": (str, "a file name"),
    "ssl_check_hostname": (_flag, "yes or no"),
}
# Options redis-py would take that this store sets itself, or that belong elsewhere.
_REFUSED: Final[Mapping[str, str]] = {
    "socket_timeout": "this store sets it from timeout=",
    "socket_connect_timeout": "this store sets it from timeout=",
    "password": "put credentials in the URL (redis://user:password@host)",
    "username": "put credentials in the URL (redis://user:password@host)",
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

# Scripts on one target. KEYS: state hash, index, generation (every key a script touches:
# declared, and sharing the store's hash tag). ARGV[1]: target, ARGV[2]: key_ttl in
# seconds, ARGV[3]: the channel changes are published on ('' for none); the rest is per
# script. Every answer is {tag, generation, now, f, b, u, p, o}.
#
# Every change calls bump() once, after changing the hash and before keep(): bump()
# creates the generation with a TTL if it is missing, and keep() then stretches every
# TTL to cover the hash's, so no key is ever left without one.
_TARGET = (
    _TIME
    + """
local ttl_ms = math.ceil(tonumber(ARGV[2]) * 1000)
local function generation()
  return redis.call('GET', KEYS[3]) or '0'
end
local function fields()
  local s = redis.call('HMGET', KEYS[1], 'f', 'b', 'u', 'p', 'o')
  return {s[1] or '', s[2] or '', s[3] or '', s[4] or '', s[5] or ''}
end
local function bump()
  if redis.call('EXISTS', KEYS[3]) == 0 then
    -- Seeded from the clock: a generation that expired and comes back is never one
    -- a replica has already seen.
    redis.call('SET', KEYS[3], clock[1] .. string.format('%06d', tonumber(clock[2])),
               'PX', ttl_ms)
  end
  local gen = fmt(redis.call('INCR', KEYS[3]))
  if ARGV[3] ~= '' then
    -- pcall: a user that may not publish (an ACL without the channel) still records
    -- the change; the fleet then learns of it at its next poll.
    local s = fields()
    redis.pcall('PUBLISH', ARGV[3],
                cjson.encode({ARGV[1], gen, fmt(now), s[1], s[2], s[3], s[4], s[5]}))
  end
  return gen
end
local function keep(until_)
  local ms = math.ceil((math.max((until_ or now) - now, 0) + tonumber(ARGV[2])) * 1000)
  redis.call('PEXPIRE', KEYS[1], ms)
  redis.call('ZADD', KEYS[2], fmt(now + ms / 1000), ARGV[1])
  -- The index and the generation outlive every hash (spelled out: every key a KEYS[i]).
  if redis.call('PTTL', KEYS[2]) < ms then redis.call('PEXPIRE', KEYS[2], ms) end
  if redis.call('PTTL', KEYS[3]) < ms then redis.call('PEXPIRE', KEYS[3], ms) end
end
local function reply(tag, gen)
  local s = fields()
  return {tag, gen or generation(), fmt(now), s[1], s[2], s[3], s[4], s[5]}
end
"""
)

# ARGV[4]: probe lease in seconds, ARGV[5]: the token the probe gets if this caller takes it.
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
redis.call('HSET', KEYS[1], 'p', fmt(now + tonumber(ARGV[4])), 'o', ARGV[5])
local gen = bump()
keep(nil)
return reply('probe', gen)
"""
)

# ARGV[4]: retry-after hint (clamped), ARGV[5..8]: threshold, base cooldown, factor, cap,
# ARGV[9]: the caller's probe token ('' for none).
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
local hint = tonumber(ARGV[4])
local live = p ~= nil and now < p
local tag
if u and now < u then
  -- Benched already: a late failure may extend the cooldown, never escalate it.
  tag = 'extended'
  u = math.max(u, now + hint)
  redis.call('HSET', KEYS[1], 'f', f, 'u', fmt(u))
elseif live and s[5] ~= ARGV[9] then
  -- Someone else's probe is out: this failure counts, but only the probe ends it.
  tag = 'counted'
  redis.call('HSET', KEYS[1], 'f', f)
elseif live or f >= tonumber(ARGV[5]) then
  tag = 'benched'
  b = b + 1
  local factor, cap = tonumber(ARGV[7]), tonumber(ARGV[8])
  local cooldown = cap
  if not (factor > 1 and b - 1 > 64) then
    cooldown = math.min(tonumber(ARGV[6]) * factor ^ (b - 1), cap)
  end
  u = now + math.max(cooldown, hint)
  redis.call('HSET', KEYS[1], 'f', f, 'b', b, 'u', fmt(u))
  redis.call('HDEL', KEYS[1], 'p', 'o')
else
  tag = 'counted'
  redis.call('HSET', KEYS[1], 'f', f)
end
local gen = bump()
keep(u)
return reply(tag, gen)
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

# ARGV[4]: the caller's probe token: only the probe's holder gives it back.
_RELEASE = (
    _TARGET
    + """
local gen = nil
if redis.call('HGET', KEYS[1], 'o') == ARGV[4] then
  redis.call('HDEL', KEYS[1], 'p', 'o')
  gen = bump()
  keep(nil)
end
return reply('ok', gen)
"""
)

# ARGV[4]: probe lease in seconds, ARGV[5]: the caller's probe token. Only the holder of a
# live lease extends it ('renewed'); anyone else learns it has lost the probe ('lost').
_RENEW = (
    _TARGET
    + """
local s = redis.call('HMGET', KEYS[1], 'p', 'o')
local p = tonumber(s[1])
if s[2] ~= ARGV[5] or not p or now >= p then return reply('lost') end
redis.call('HSET', KEYS[1], 'p', fmt(now + tonumber(ARGV[4])))
local gen = bump()
keep(nil)
return reply('renewed', gen)
"""
)

# Write back what a replica learned while Redis was away, unless Redis knows better.
# ARGV[4..6]: failures, benchings, seconds left of the cooldown ('' if not benched);
# ARGV[7..8]: seconds left of a live probe's lease ('' if none), and its token.
_SEED = (
    _TARGET
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return reply('kept') end
local left = tonumber(ARGV[6])
local u = nil
if left then u = now + left end
redis.call('HSET', KEYS[1], 'f', ARGV[4], 'b', ARGV[5])
if u then redis.call('HSET', KEYS[1], 'u', fmt(u)) end
local lease = tonumber(ARGV[7])
if lease then redis.call('HSET', KEYS[1], 'p', fmt(now + lease), 'o', ARGV[8]) end
local gen = bump()
keep(u)
return reply('seeded', gen)
"""
)

# Step one of a refresh: the targets with state, unless the generation is the one the
# caller already has. KEYS: index, generation. ARGV[1]: the caller's generation.
# Answer: {now, gen, 'same'} or {now, gen, 'changed', target...}. Generation '0' (the
# state is gone: expired or flushed) is never 'same', so a view of it is always redone.
_LIST = (
    _TIME
    + """
local gen = redis.call('GET', KEYS[2]) or '0'
if gen == ARGV[1] and gen ~= '0' then return {fmt(now), gen, 'same'} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now))
local out = {fmt(now), gen, 'changed'}
for _, target in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  table.insert(out, target)
end
return out
"""
)

# Step two: the state of the listed targets, read at one generation. KEYS: index,
# generation, then one state hash per target; ARGV: the targets, in the same order (the
# hashes are declared, not built from the names here, so the script runs on a cluster).
# Answer: {now, gen, n, n targets the index has but the caller did not list, then
# target, f, b, u, p, o for each listed target with state}.
_READ = (
    _TIME
    + """
local out = {fmt(now), redis.call('GET', KEYS[2]) or '0'}
local listed = {}
local entries = {}
for i, target in ipairs(ARGV) do
  listed[target] = true
  local s = redis.call('HMGET', KEYS[i + 2], 'f', 'b', 'u', 'p', 'o')
  if s[1] then
    table.insert(entries, target)
    for j = 1, 5 do table.insert(entries, s[j] or '') end
  end
end
local unlisted = {}
for _, target in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. fmt(now), '+inf')) do
  if not listed[target] then table.insert(unlisted, target) end
end
table.insert(out, tostring(#unlisted))
for _, target in ipairs(unlisted) do table.insert(out, target) end
for _, item in ipairs(entries) do table.insert(out, item) end
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
    "list": _LIST,
    "read": _READ,
}
_READS_PER_REFRESH: Final = 3
"""Reads of step two before a refresh settles for what it has (targets keep appearing)."""

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


@attrs.frozen
class _Read:
    """What one refresh read: the fleet's state at generation `gen` (server time `now`)."""

    now: float
    gen: str
    rows: list[tuple[str, list[str]]] | None
    """(target, its five fields) per target with state; None: unchanged since the last."""
    unread: frozenset[str] = frozenset()
    """Targets that got state while it read, faster than it could read them: left out of
    `rows` (the view keeps what it knows of them; the next poll reads them)."""


@attrs.frozen
class RedisStoreEvent:
    """Something that happened to a `RedisHealthStore`, told to its `observer`.

    `kind` is one of:

    - "degraded": Redis did not answer within `timeout` (`error` says how); the store
      answers from its in-process fallback until Redis is back.
    - "resynced": Redis answers again; `written_back` targets learned meanwhile were
      written back, and health state is shared again after `seconds` of outage.
    - "round_trip": one Lua script (`operation`: "admit", "fail", "success", "release",
      "renew", "seed", "list" or "read") answered in `seconds`.
    - "subscribed": this replica hears the fleet's changes as they happen.
    - "unsubscribed": it no longer does (`error`, if any, says why); the background poll
      still brings changes in, every `refresh_interval`, until it subscribes again.
    """

    kind: Literal["degraded", "resynced", "round_trip", "subscribed", "unsubscribed"]
    store: str
    """Where the store's Redis is (its URL without credentials or query)."""
    operation: str | None = None
    """The script of a "round_trip"."""
    seconds: float | None = None
    """A "round_trip"'s duration, or a "resynced" store's time without Redis."""
    error: BaseException | None = None
    """What went wrong ("degraded", "unsubscribed")."""
    written_back: int | None = None
    """Targets written back to Redis on "resynced"."""


RedisStoreObserver = Callable[[RedisStoreEvent], object]
"""Called with every `RedisStoreEvent`, inline on the event loop: keep it quick."""


def _float(text: str) -> float | None:
    return float(text) if text else None


def _text(value: object) -> str:
    # A borrowed client may not decode responses.
    return value.decode() if isinstance(value, bytes) else str(value)


def _has_hash_tag(prefix: str) -> bool:
    """Whether `prefix` holds a Redis Cluster hash tag (a non-empty `{...}`, by Redis's
    rule: the first "{" and the first "}" after it)."""
    start = prefix.find("{")
    return start >= 0 and prefix.find("}", start + 1) > start + 1


def _key_prefix(prefix: str) -> str:
    """The start of every key of a store with `prefix`: the prefix as a hash tag."""
    return prefix if _has_hash_tag(prefix) else f"{{{prefix}}}"


def _redacted(url: str) -> str:
    """`url` without its credentials or query (for log lines and messages)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "(an invalid URL)"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _accepted(scheme: str) -> str:
    names = [*_STORE_OPTIONS, *_CLIENT_OPTIONS, *(_TLS_OPTIONS if scheme == "rediss" else ())]
    return ", ".join(sorted(names))


def _split_options(url: str) -> tuple[str, dict[str, Any]]:
    """Check `url` and take this store's options out of its query; the rest stays for
    redis-py.

    Every option is checked here, so a bad one fails at construction rather than at the
    first call that records a failure (when failover is needed). Messages name the
    option, never the URL (it may hold a password).

    Raises:
        ConfigurationError: an unknown, refused, repeated or invalid option, a port or
            database that is not a number, or an unsupported scheme.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        raise ConfigurationError("health store URL: the port is not a number") from None
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError(
            f"unsupported health store {_redacted(url)!r}: use redis://, rediss://, "
            "unix:// or 'memory'"
        )
    if scheme == "unix":
        if not parts.path:
            raise ConfigurationError("health store URL: unix:// needs the socket's path")
    elif parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise ConfigurationError(
            f"health store URL: the database (the path) must be a number, got {parts.path!r}"
        )
    options = {**_STORE_OPTIONS, **_CLIENT_OPTIONS, **_TLS_OPTIONS}
    ours: dict[str, Any] = {}
    theirs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in seen:
            raise ConfigurationError(f"health store URL option {name} is given twice")
        seen.add(name)
        refused = _REFUSED.get(name)
        if refused is not None:
            raise ConfigurationError(
                f"health store URL option {name} is not accepted ({refused}); "
                f"accepted: {_accepted(scheme)}"
            )
        spec = options.get(name)
        if spec is None:
            raise ConfigurationError(
                f"unknown health store URL option {name!r}; accepted: {_accepted(scheme)}"
            )
        if name in _TLS_OPTIONS and scheme != "rediss":
            raise ConfigurationError(f"health store URL option {name} needs a rediss:// URL")
        convert, expected = spec
        try:
            converted = convert(value)
        except ValueError:
            raise ConfigurationError(
                f"health store URL option {name}={value!r} is not {expected}"
            ) from None
        if name in _STORE_OPTIONS:
            ours[name] = converted
        else:
            theirs.append((name, value))
    if ours.get("cluster") and (parts.path.strip("/") or "0") != "0":
        raise ConfigurationError("health store URL: a Redis Cluster has only database 0")
    return urlunsplit(parts._replace(query=urlencode(theirs))), ours


def store_from_url(
    url: str, config: HealthConfig, *, observer: RedisStoreObserver | None = None
) -> RedisHealthStore | None:
    """The store a `MAJORDOMO_HEALTH_STORE` value names (None: the in-process default).

    Args:
        url: "memory" (or empty) for the in-process store, or a Redis URL with options
            (see `RedisHealthStore`).
        config: the Registry's health config.
        observer: told of the store's state changes (see `RedisStoreEvent`).

    Raises:
        ConfigurationError: an unknown scheme or option, an invalid option value, or the
            `redis` extra is not installed.
    """
    url = url.strip()
    if url in ("", "memory", "memory://"):
        return None
    return RedisHealthStore(url, config, observer=observer)


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
    answer comes from a local view of the fleet's state. Every change is published by the
    script that makes it, and each replica folds what it hears into its view at once (a
    millisecond or two on loopback). A background task also polls every
    `refresh_interval`, so even with the subscription lost, what another replica changed
    is seen within `refresh_interval + timeout` (0.75 s by default); what this replica
    changed is seen at once. Taking the probe always asks Redis, so there is exactly one
    probe per expired cooldown (or expired lease) across the fleet, whatever the view says.

    The first `admit` of a new store waits for the view's first read (one round trip,
    at most `timeout`), so a replica started during an outage knows what the fleet knows.

    If Redis does not answer within `timeout`, the store carries on in process (seeded
    from its last view, probes and their leases included), tells its observer and logs one
    warning, and reconnects in the background; calls never fail or stall because of Redis.

    Locking. Reading and updating the local view or the in-process fallback never awaits
    in between, so each such step is atomic on the event loop and takes no lock: the hot
    path (admitting or refusing from the view, or from the fallback while Redis is away)
    is lock-free and await-free, and so is folding a published change into the view. Changes
    in Redis are atomic Lua scripts. What spans an `await` holds one
    `anyio.Lock(fast_acquire=True)` (uncontended, it does not even yield to the event
    loop):

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

    Redis Cluster: every script declares every key it touches, and every key of a store
    carries the store's hash tag (see `key_prefix`), so each script runs on the one node
    that owns the store's slot. Pass `cluster=yes` in the URL (or `cluster=True`), or
    borrow a `redis.asyncio.RedisCluster`.

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
        url: a Redis URL (`redis://[[user]:password@]host:port/db`, `rediss://`,
            `unix://`) whose query may also set `prefix`, `key_ttl`, `timeout`,
            `refresh_interval`, `probe_lease`, `max_connections`, `pubsub` and `cluster`
            (and, for redis-py, `db`, `client_name`, `health_check_interval`,
            `socket_keepalive` and, with `rediss://`, `ssl_cert_reqs`, `ssl_ca_certs`,
            `ssl_certfile`, `ssl_keyfile`, `ssl_check_hostname`); anything else is a
            `ConfigurationError` here, not at the first call. Or a `redis.asyncio.Redis`
            or `RedisCluster` client, borrowed (not closed).
        config: thresholds and cooldowns; pass the same one as the Registry's `health=`.
        prefix: prepended to every key, so several services can share one database.
        key_ttl: seconds a target's state outlives its last change (or the end of its
            cooldown): state nobody touches expires.
        timeout: seconds any one Redis operation may take before the in-process fallback
            answers instead.
        refresh_interval: seconds between background polls of the fleet's state (the
            fallback of the subscription to changes).
        probe_lease: seconds a probe is held at most without news (`renew_probe` extends
            it): a prober that crashes without a verdict blocks the next probe for this
            long, no longer. Defaults to `config.probe_lease`.
        reconnect_delay: seconds before the first reconnection attempt; it doubles up to
            `max_reconnect_delay` while Redis stays away.
        max_connections: the connection pool's size (a URL only; per node on a cluster).
        pubsub: publish every change and subscribe to the fleet's (default True). Turn it
            off for a Redis user that may not use Pub/Sub: changes from other replicas
            then arrive with the poll.
        cluster: the URL names a node of a Redis Cluster (a URL only).
        observer: called with a `RedisStoreEvent` when the store degrades, resyncs,
            subscribes or loses its subscription, and after every round trip to Redis.
            It runs inline on the event loop; an exception it raises is logged and ignored.
    """

    def __init__(
        self,
        url: str | Redis | RedisCluster,
        config: HealthConfig | None = None,
        *,
        prefix: str | None = None,
        key_ttl: float | None = None,
        timeout: float | None = None,
        refresh_interval: float | None = None,
        probe_lease: float | None = None,
        reconnect_delay: float = 0.5,
        max_reconnect_delay: float = 10.0,
        max_connections: int | None = None,
        pubsub: bool | None = None,
        cluster: bool | None = None,
        observer: RedisStoreObserver | None = None,
    ) -> None:
        options: dict[str, Any] = {}
        self._client: Redis | RedisCluster | None
        if isinstance(url, str):
            self._url, options = _split_options(url)
            self._where = _redacted(url)
            self._client = None
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
        self._max_connections: int = option("max_connections", max_connections, 8)
        self._pubsub_on: bool = option("pubsub", pubsub, True)
        self._cluster: bool = option("cluster", cluster, False)
        self._observer = observer
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
        self._keys = _key_prefix(self._prefix)
        self._index = f"{self._keys}index"
        self._generation = f"{self._keys}gen"
        self._channel = f"{self._keys}events"
        self._publish_to = self._channel if self._pubsub_on else ""
        self._scripts: dict[str, AsyncScript] = {}
        self._errors: tuple[type[BaseException], ...] = (TimeoutError, OSError)
        self._read_timeouts: tuple[type[BaseException], ...] = ()
        self._refusals: tuple[type[BaseException], ...] = ()
        self._refusal_told = False
        self._sub_client: Redis | None = None
        """The subscription's own client (for a URL), without a read timeout: it waits."""
        self._view: dict[str, _Seen] = {}
        self._view_gen = ""
        """The generation of the last full refresh ('' before the first, or to redo it)."""
        self._read_gen = 0
        """The last full refresh's generation as a number: an answer or a published change
        of that generation or older is already in the view (or superseded there)..."""
        self._unread: frozenset[str] = frozenset()
        """... except for these targets, which that refresh could not read."""
        self._fallback: InMemoryHealthStore | None = None
        self._degraded_at = 0.0
        self._lock = anyio.Lock(fast_acquire=True)
        """Held by the write-back of the fallback and by every change to the fallback (see
        the class docstring). Made here even outside an event loop: anyio then binds it to
        the running loop on first use."""
        self._poller: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = False
        self._wake: anyio.Event | None = None
        """Set to make the poller refresh now (once subscribed: to cover the gap before)."""
        self._loaded: anyio.Event | None = None
        """Set once the background task has read the state for the first time."""
        self._ready = False
        self._closed = False
        self._decided_at = 0.0
        """Server time of the last decision (for tests that replay a run on a model)."""

    def _validate(self) -> None:
        for name in ("_key_ttl", "_timeout", "_refresh_interval", "_lease", "_reconnect_delay"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigurationError(
                    f"RedisHealthStore {name.lstrip('_')} must be positive, got {value!r}"
                )
        if self._key_ttl < self._lease:
            raise ConfigurationError("RedisHealthStore key_ttl must be >= probe_lease")
        if self._max_connections < 1:
            raise ConfigurationError("RedisHealthStore max_connections must be at least 1")
        if self._cluster and not self._owns_client:
            raise ConfigurationError(
                "RedisHealthStore cluster= is for a URL; a borrowed RedisCluster is used as is"
            )

    # ----------------------------------------------------------------- HealthStore

    def now(self) -> float:
        """The Redis server's time (estimated locally), the timeline of every `until`."""
        return self._clock.now()

    @property
    def prefix(self) -> str:
        """The configured prefix (keys start with `key_prefix`, its hash-tagged form)."""
        return self._prefix

    @property
    def key_prefix(self) -> str:
        """The start of every key this store writes: `prefix` in braces ("{prefix}"), a
        Redis Cluster hash tag, unless `prefix` holds a hash tag already."""
        return self._keys

    @property
    def channel(self) -> str:
        """The Pub/Sub channel every change is published on."""
        return self._channel

    @property
    def refresh_interval(self) -> float:
        """Seconds between background polls of the fleet's state."""
        return self._refresh_interval

    @property
    def probe_lease(self) -> float:
        """Seconds a half-open probe is held at most without news."""
        return self._lease

    @property
    def staleness_bound(self) -> float:
        """Seconds within which this replica sees another replica's change, at worst
        (without the subscription: with it, a change arrives within a network hop)."""
        return self._refresh_interval + self._timeout

    @property
    def degraded(self) -> bool:
        """True while Redis is away and the in-process fallback answers."""
        return self._fallback is not None

    @property
    def subscribed(self) -> bool:
        """True while this replica hears the fleet's changes as they are published."""
        return self._subscribed

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
            read = await self._refresh(force=True)
            if read is not None:
                now = read.now
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
        """Stop the background tasks and close the connections this store opened.

        Idempotent. A closed store keeps answering, in process, from its last view.
        """
        if self._closed:
            return
        self._closed = True
        self._degraded_store()
        if self._loaded is not None:
            self._loaded.set()  # nobody waits for a first read that will not come
        poller, self._poller = self._poller, None
        listener, self._listener = self._listener, None
        for task in (poller, listener):
            # Wait for it without taking its cancellation as ours, and insist: on Python
            # 3.11, asyncio.wait_for (used inside redis-py) can swallow a cancellation that
            # races with a result.
            while task is not None and not task.done():
                task.cancel()
                await asyncio.wait([task], timeout=0.1)
        client, self._client = self._client, None
        if client is not None and self._owns_client:
            await client.aclose()
        sub_client, self._sub_client = self._sub_client, None
        if sub_client is not None:
            await sub_client.aclose()

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
        from redis.exceptions import RedisError, ResponseError
        from redis.exceptions import TimeoutError as ReadTimeout

        self._errors = (TimeoutError, OSError, RedisError)
        self._read_timeouts = (ReadTimeout,)
        self._refusals = (ResponseError,)
        client = self._client
        if client is None:
            # No retries inside redis-py: a failed operation falls back at once, and the
            # background task does the reconnecting.
            if self._cluster:
                from redis.asyncio.cluster import RedisCluster

                client = RedisCluster.from_url(
                    self._url,
                    max_connections=self._max_connections,
                    socket_timeout=self._timeout,
                    socket_connect_timeout=self._timeout,
                    retry=Retry(NoBackoff(), 0),
                    decode_responses=True,
                )
            else:
                pool = BlockingConnectionPool.from_url(
                    self._url,
                    max_connections=self._max_connections,
                    timeout=self._timeout,
                    socket_timeout=self._timeout,
                    socket_connect_timeout=self._timeout,
                    retry=Retry(NoBackoff(), 0),
                    decode_responses=True,
                )
                client = Redis.from_pool(pool)
            self._client = client
        self._scripts = {name: client.register_script(text) for name, text in _SCRIPTS.items()}
        return self._scripts

    async def _call(
        self, script: str, keys: Sequence[str], args: Sequence[str | int | float]
    ) -> list[str]:
        """Run one script within the timeout; its answer as text. Raises on any failure."""
        scripts = self._connect()
        with anyio.fail_after(self._timeout):
            sent = time.monotonic()
            raw = await scripts[script](keys=keys, args=args)
            received = time.monotonic()
        reply = [_text(item) for item in raw]
        self._clock.observe(float(reply[0 if script in ("list", "read") else 2]), sent, received)
        if self._observer is not None:
            self._emit(
                RedisStoreEvent(
                    "round_trip", self._where, operation=script, seconds=received - sent
                )
            )
        return reply

    def _shared_client(self) -> tuple[Redis | RedisCluster, float]:
        """This store's client (made on first use) and its per-operation timeout, for what
        shares the store's Redis (`RedisBudget`). Raises ConnectionError once closed."""
        if self._closed:
            raise ConnectionError(f"the health store on {self._where} is closed")
        self._connect()
        assert self._client is not None
        return self._client, self._timeout

    def _state_key(self, target: str) -> str:
        return f"{self._keys}t:{target}"

    def _target_keys(self, target: str) -> list[str]:
        """The keys of a script on one target (every key it touches, declared)."""
        return [self._state_key(target), self._index, self._generation]

    async def _run(self, script: str, key: str, *args: str | int | float) -> list[str] | None:
        """Run a script on `key` and fold its answer into the view; None if Redis failed."""
        if self._fallback is not None:
            return None
        try:
            reply = await self._call(
                script,
                self._target_keys(key),
                (key, repr(self._key_ttl), self._publish_to, *args),
            )
        except self._errors as exc:
            self._degrade(exc)
            return None
        self._see(key, reply)
        return reply

    async def _refresh(self, *, force: bool) -> _Read | None:
        """Read the fleet's state (only if it changed, unless `force`) into the view."""
        if self._fallback is not None:
            return None
        try:
            read = await self._read_state("" if force else self._view_gen)
        except self._errors as exc:
            self._degrade(exc)
            return None
        self._see_all(read)
        return read

    async def _read_state(self, known_gen: str) -> _Read:
        """The fleet's state: one round trip to list it (the only one if it is unchanged
        since `known_gen`), one more to read the listed targets' hashes, declared."""
        listing = await self._call("list", [self._index, self._generation], (known_gen,))
        now, gen = float(listing[0]), listing[1]
        if listing[2] == "same":
            return _Read(now, gen, None)
        targets = listing[3:]
        rows: list[tuple[str, list[str]]] = []
        unread: frozenset[str] = frozenset()
        reads = 0
        while targets:
            keys = [self._index, self._generation, *map(self._state_key, targets)]
            read = await self._call("read", keys, targets)
            now, gen = float(read[0]), read[1]
            count = int(read[2])
            unlisted, rest = read[3 : 3 + count], read[3 + count :]
            rows = [(rest[i], rest[i + 1 : i + 6]) for i in range(0, len(rest), 6)]
            reads += 1
            if not unlisted:
                break
            if reads == _READS_PER_REFRESH:
                unread = frozenset(unlisted)  # the next poll reads again
                break
            # Targets got state since the listing: read again, them included.
            targets = [*targets, *unlisted]
        return _Read(now, gen, rows, unread)

    # ----------------------------------------------------------------- the local view

    def _see(self, key: str, reply: list[str]) -> None:
        """Fold one script's answer (tag, gen, now, f, b, u, p, o) into the view."""
        self._decided_at = float(reply[2])
        self._apply(key, int(reply[1]), reply[3:8])

    def _apply(self, key: str, gen: int, fields: Sequence[str]) -> None:
        """Fold the state of `key` at generation `gen` into the view, unless the view
        has a later one: an answer or a published change can arrive after a refresh that
        already saw a later state, and a target absent from that refresh was healthy then."""
        if gen <= self._read_gen and key not in self._unread:
            return
        current = self._view.get(key)
        if current is None or current.gen <= gen:
            self._view[key] = _Seen.parse(fields, gen)

    def _see_all(self, read: _Read) -> None:
        """Fold a refresh into the view.

        A script's answer or a published change that arrives after a refresh may be newer
        than it (a higher generation): such entries are kept. Generation 0 means the state
        is gone (expired or flushed); generations are then seeded from the server clock in
        microseconds, so only an entry whose generation is above the refresh's time is
        newer.
        """
        gen = int(read.gen) or math.floor(read.now * 1e6)
        view = self._view
        if read.rows is None:
            # Unchanged: only forget the resets the last full refresh already covers.
            for key in [key for key, seen in view.items() if seen.healthy and seen.gen <= gen]:
                del view[key]
            return
        fresh = {target: _Seen.parse(fields, gen) for target, fields in read.rows}
        # Kept: what is newer than the refresh, and what it could not read.
        fresh.update(
            {key: seen for key, seen in view.items() if seen.gen > gen or key in read.unread}
        )
        self._view = fresh
        self._view_gen = "" if read.unread else read.gen
        self._read_gen = gen
        self._unread = read.unread

    def _on_message(self, data: object) -> None:
        """Fold a change another replica (or this one) published into the view. Whole: no
        await, so the view is never seen half-updated."""
        try:
            target, gen, _, *fields = json.loads(_text(data))
            if len(fields) != 5:
                raise ValueError(fields)
            generation = int(gen)
        except (ValueError, TypeError):
            logger.debug("health store: ignored a malformed change message", exc_info=True)
            return
        if self._fallback is None:
            self._apply(str(target), generation, [str(field) for field in fields])

    # ----------------------------------------------------------------- observer

    def _emit(self, event: RedisStoreEvent) -> None:
        observer = self._observer
        if observer is None:
            return
        try:
            observer(event)
        except Exception:
            logger.exception("health store: the observer failed on %s", event.kind)

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
        self._degraded_at = time.monotonic()
        # The subscription goes too: one that looks alive may be on a dead connection.
        # It starts again once Redis is back (`_reconnect`).
        listener = self._listener
        if listener is not None:
            listener.cancel()
        logger.warning(
            "health store: Redis at %s did not answer (%s); using in-process health "
            "state until it is back",
            self._where,
            type(error).__name__,
            extra={"majordomo_health_store": self._where},
        )
        self._emit(RedisStoreEvent("degraded", self._where, error=error))

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
            pool = getattr(self._client, "connection_pool", None)
            if pool is not None and self._owns_client:
                # Connections from before the outage may be dead without knowing it yet:
                # start afresh rather than fail again on each of them. (A cluster client
                # has no single pool: it renews its node connections itself.)
                await pool.disconnect()
            await self._call("list", [self._index, self._generation], ("",))  # is it back?
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
                    args = (
                        key,
                        repr(self._key_ttl),
                        self._publish_to,
                        state.failures,
                        state.benchings,
                        left,
                        lease,
                        state.probe or "",
                    )
                    await self._call("seed", self._target_keys(key), args)
                read = await self._read_state("")
            except self._errors:
                return False
            self._fallback = None
            self._view = {}
            self._see_all(read)
            written_back = len(fallback._states)
        logger.info(
            "health store: Redis at %s answers again; health state is shared again",
            self._where,
            extra={"majordomo_health_store": self._where},
        )
        self._emit(
            RedisStoreEvent(
                "resynced",
                self._where,
                seconds=time.monotonic() - self._degraded_at,
                written_back=written_back,
            )
        )
        self._start_listener()
        return True

    # ----------------------------------------------------------------- background

    def _start(self) -> None:
        if self._closed:
            return
        self._loaded = anyio.Event()
        self._poller = asyncio.get_running_loop().create_task(
            self._poll(self._loaded), name=f"majordomo health refresh ({self._where})"
        )
        self._start_listener()

    def _start_listener(self) -> None:
        listener = self._listener
        if self._closed or not self._pubsub_on or (listener is not None and not listener.done()):
            return
        self._listener = asyncio.get_running_loop().create_task(
            self._listen(), name=f"majordomo health subscription ({self._where})"
        )

    async def _first_view(self) -> None:
        """Start the background task and wait for its first read of the state."""
        if self._poller is None:
            self._start()
        if self._loaded is not None:
            await self._loaded.wait()
        self._ready = True

    async def _poll(self, loaded: anyio.Event) -> None:
        """Refresh the view every `refresh_interval` (or when woken); while Redis is
        away, reconnect."""
        delay = self._reconnect_delay
        while not self._closed:
            # Made before the work: a wake-up that comes during it is not lost.
            wake = self._wake = anyio.Event()
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
            with anyio.move_on_after(pause):
                await wake.wait()

    def _pubsub(self) -> PubSub | None:
        """A Pub/Sub object on a connection of its own (None: the client has none)."""
        self._connect()
        if self._owns_client and not self._cluster:
            client = self._sub_client
            if client is None:
                from redis.asyncio import Redis
                from redis.asyncio.retry import Retry
                from redis.backoff import NoBackoff

                # No read timeout: the subscription waits for news as long as there is
                # none. A dead server closes the connection; a silent one is caught by
                # the scripts' timeout, and the store then resubscribes (see `_degrade`).
                client = self._sub_client = Redis.from_url(
                    self._url,
                    socket_timeout=None,
                    socket_connect_timeout=self._timeout,
                    socket_keepalive=True,
                    retry=Retry(NoBackoff(), 0),
                    decode_responses=True,
                )
            return client.pubsub()
        make: Callable[[], PubSub] | None = getattr(self._client, "pubsub", None)
        return make() if make is not None else None

    async def _listen(self) -> None:
        """Subscribe to the fleet's changes and fold each one into the view as it comes;
        resubscribe, with backoff, when the subscription is lost."""
        delay = self._reconnect_delay
        while not self._closed and self._fallback is None:
            error: BaseException | None = None
            pubsub: PubSub | None = None
            try:
                pubsub = self._pubsub()
                if pubsub is None:
                    logger.debug("health store: the client has no Pub/Sub; polling only")
                    return
                with anyio.fail_after(self._timeout):
                    await pubsub.subscribe(self._channel)
                self._subscribed = True
                self._emit(RedisStoreEvent("subscribed", self._where))
                delay = self._reconnect_delay
                wake = self._wake
                if wake is not None:
                    wake.set()  # a refresh now covers what was published before this
                while True:
                    try:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=None
                        )
                    except self._read_timeouts:
                        # A borrowed client's read timeout: no news yet (redis-py
                        # reconnects and resubscribes on the next read).
                        continue
                    if message is not None and message.get("type") == "message":
                        self._on_message(message["data"])
            except self._errors as exc:
                error = exc
                if isinstance(exc, self._refusals) and not self._refusal_told:
                    # Redis answered, and said no (an ACL without Pub/Sub, say): worth
                    # one warning, as the fleet then shares changes at the poll's pace.
                    self._refusal_told = True
                    logger.warning(
                        "health store: Redis at %s refused the subscription to changes "
                        "(%s); other replicas' changes arrive with the poll, every %s s "
                        "(pubsub=no turns publishing off)",
                        self._where,
                        exc,
                        self._refresh_interval,
                        extra={"majordomo_health_store": self._where},
                    )
            except Exception as exc:
                # A bug must not end the subscription silently, nor spin.
                logger.exception("health store: the subscription failed")
                error = exc
            finally:
                if self._subscribed:
                    self._subscribed = False
                    self._emit(RedisStoreEvent("unsubscribed", self._where, error=error))
                if pubsub is not None:
                    with anyio.CancelScope(shield=True), anyio.move_on_after(self._timeout):
                        await _close(pubsub)
            await anyio.sleep(delay)
            delay = min(delay * 2, self._max_reconnect_delay)


async def _close(pubsub: PubSub) -> None:
    close = getattr(pubsub, "aclose", None) or pubsub.reset
    try:
        await close()
    except Exception:  # the connection is going anyway
        logger.debug("health store: closing the subscription failed", exc_info=True)


def _probing(seen: _Seen, now: float) -> bool:
    return seen.lease is not None and now < seen.lease
