"""`RedisBudget`: rpm/tpm windows shared by a fleet of processes, through Redis.

It implements `SharedBudget` (see `_limits`) on the Redis of a `RedisHealthStore`: the
same client, the same per-operation timeout, and the same key prefix, so every key
carries the store's Redis Cluster hash tag (`RedisHealthStore.key_prefix`) and every
script runs whole on the node that owns the store's slot.

Data model, per limited name ("provider/model-id" or "provider"), under the key prefix:

- `budget:log:{name}`: a sorted set, one member per reservation (its id, unique across
  the fleet: `{budget id}:{n}`), scored by the Redis server time it was granted at.
- `budget:tokens:{name}`: a hash, reservation id -> its tokens (the estimate, then the
  count the provider reported).
- `budget:sum:{name}`: the tokens of the whole log, kept by every script that adds,
  corrects, cancels or expires an entry (and counted again from the hash if it was lost).
- `budget:pause:{name}`: when a pause ends (server time); it expires then.

Windows are sliding: an entry granted at server time t counts in [t, t + 60 s), so there
are at most `rpm` entries (and `tpm` tokens, unless one request alone is larger) in any
60 s interval: not fixed minutes, and not a token bucket (which lets twice the rate
through in a minute). Every operation is one Lua script that reads the time from Redis
(`TIME`), never from a client: the fleet's hosts may disagree on the time, the windows
do not. The log, tokens and sum keys live as long as the newest entry's window and a
little more (`_SLACK`); the pause key as long as the pause. An idle budget leaves
nothing behind.

Every method raises (TimeoutError after the store's `timeout`, OSError, or a redis-py
error) when Redis does not answer; the caller then answers from its own windows. While
the store is degraded (its own calls to Redis failed and it has not reconnected yet),
they raise at once instead of each waiting out the timeout.
"""

from __future__ import annotations

import itertools
import math
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Final, final

import anyio
import attrs

from ._redis_store import _TIME, RedisHealthStore, _text

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster
    from redis.commands.core import AsyncScript

__all__ = ["RedisBudget"]

_WINDOW: Final = 60.0
"""Seconds of the rpm and tpm windows (fixed: the limits are per minute)."""
_SLACK: Final = 2.0
"""Seconds the keys outlive the newest entry's window (no key lingers much longer)."""

# --------------------------------------------------------------------------- Lua

# The scripts on one name's window. KEYS: the log, the tokens, the sum, the pause (every
# key a script touches: declared, and sharing the store's hash tag). ARGV[1]: the window
# and ARGV[2]: the keys' slack past it, in seconds; the rest is per script.
_WINDOW_LUA = (
    _TIME
    + """
local window = tonumber(ARGV[1])
local slack = tonumber(ARGV[2])
local cutoff = fmt(now - window)
local function int(x)
  return string.format('%d', x)
end
-- Entries that left the window go, and their tokens with them. Inclusive: an entry
-- granted at t counts in [t, t + window).
local function trim()
  local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff)
  if #gone == 0 then return end
  local freed = 0
  -- In chunks: unpack() has a limit on how many values it spreads.
  for i = 1, #gone, 512 do
    local chunk = {unpack(gone, i, math.min(i + 511, #gone))}
    for _, t in ipairs(redis.call('HMGET', KEYS[2], unpack(chunk))) do
      freed = freed + (tonumber(t) or 0)
    end
    redis.call('HDEL', KEYS[2], unpack(chunk))
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
  redis.call('DECRBY', KEYS[3], int(freed))
end
-- The tokens in the window. A sum that is missing or negative (evicted alone, edited by
-- hand) is counted again from the entries, so it cannot drift for good.
local function total()
  local sum = tonumber(redis.call('GET', KEYS[3]))
  if sum == nil or sum < 0 then
    sum = 0
    for _, t in ipairs(redis.call('HVALS', KEYS[2])) do sum = sum + (tonumber(t) or 0) end
    redis.call('SET', KEYS[3], int(sum))
  end
  return sum
end
-- Called last by every script: the keys live as long as the newest entry's window, and
-- the slack; an empty log leaves nothing behind (and a later sum starts from zero).
local function settle()
  local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if #newest == 0 then
    redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
    return
  end
  local ms = math.ceil((tonumber(newest[2]) + window + slack - now) * 1000)
  redis.call('PEXPIRE', KEYS[1], ms)
  redis.call('PEXPIRE', KEYS[2], ms)
  redis.call('PEXPIRE', KEYS[3], ms)
end
"""
)

# ARGV[3]: the reservation's id, ARGV[4]: its tokens, ARGV[5]: rpm and ARGV[6]: tpm ('' for
# none). Answer: {'1', '0'} (granted, the entry added) or {'0', seconds until a retry
# could succeed} (refused: the latest of the pause's end, the moment an entry leaves so
# that rpm has room, and the moment enough tokens leave so that tpm has room).
_RESERVE = (
    _WINDOW_LUA
    + """
local tokens = tonumber(ARGV[4])
local rpm, tpm = tonumber(ARGV[5]), tonumber(ARGV[6])
trim()
local wait = 0
local paused = tonumber(redis.call('GET', KEYS[4]))
if paused and paused > now then wait = paused - now end
local count = redis.call('ZCARD', KEYS[1])
if rpm and count >= rpm then
  -- Room for one more once the (count - rpm + 1)th oldest entry leaves.
  local entry = redis.call('ZRANGE', KEYS[1], count - rpm, count - rpm, 'WITHSCORES')
  wait = math.max(wait, tonumber(entry[2]) + window - now)
end
local sum = total()
if tpm and sum > 0 and sum + tokens > tpm then
  -- Room once enough of the oldest tokens leave. A request larger than tpm needs them
  -- all gone: it is granted alone, when the window holds no tokens.
  local need = math.min(sum + tokens - tpm, sum)
  local freed, start, last = 0, 0, nil
  while freed < need do
    local batch = redis.call('ZRANGE', KEYS[1], start, start + 255, 'WITHSCORES')
    if #batch == 0 then break end
    local ids = {}
    for i = 1, #batch, 2 do table.insert(ids, batch[i]) end
    for j, t in ipairs(redis.call('HMGET', KEYS[2], unpack(ids))) do
      freed = freed + (tonumber(t) or 0)
      last = tonumber(batch[2 * j])
      if freed >= need then break end
    end
    start = start + 256
  end
  if last then wait = math.max(wait, last + window - now) end
end
if wait > 0 then
  settle()
  return {'0', fmt(wait)}
end
redis.call('ZADD', KEYS[1], fmt(now), ARGV[3])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
redis.call('INCRBY', KEYS[3], ARGV[4])
settle()
return {'1', '0'}
"""
)

# ARGV[3]: the reservation's id, ARGV[4]: its tokens as the provider reported them. An
# entry that left the window (or was cancelled) counts no more: nothing to correct.
_CORRECT = (
    _WINDOW_LUA
    + """
trim()
local old = tonumber(redis.call('HGET', KEYS[2], ARGV[3]))
if old then
  total()  -- first: a sum counted again must count the entry as it was
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
  redis.call('INCRBY', KEYS[3], int(tonumber(ARGV[4]) - old))
end
settle()
return {fmt(now)}
"""
)

# ARGV[3]: the reservation's id: a request never sent leaves the window.
_CANCEL = (
    _WINDOW_LUA
    + """
trim()
local old = tonumber(redis.call('HGET', KEYS[2], ARGV[3]))
if old then
  total()  -- first: a sum counted again must count the entry it takes off
  redis.call('ZREM', KEYS[1], ARGV[3])
  redis.call('HDEL', KEYS[2], ARGV[3])
  redis.call('DECRBY', KEYS[3], int(old))
end
settle()
return {fmt(now)}
"""
)

# KEYS[1]: the pause. ARGV[1]: seconds from now. A pause only extends: an earlier end
# leaves a later one alone. The key expires when the pause ends. Answer: {its end}.
_PAUSE = (
    _TIME
    + """
local seconds = tonumber(ARGV[1])
local ends = now + seconds
local current = tonumber(redis.call('GET', KEYS[1]))
if current and current >= ends then return {fmt(current)} end
redis.call('SET', KEYS[1], fmt(ends), 'PX', math.ceil(seconds * 1000))
return {fmt(ends)}
"""
)

_SCRIPTS: Final = {
    "reserve": _RESERVE,
    "correct": _CORRECT,
    "cancel": _CANCEL,
    "pause": _PAUSE,
}

# --------------------------------------------------------------------------- the budget


def _limit(value: int | None) -> str:
    return "" if value is None else str(int(value))


@final
@attrs.define(eq=False)
class RedisBudget:
    """rpm/tpm windows shared by a fleet through the Redis of a `RedisHealthStore`.

    A `SharedBudget`: at most `rpm` requests and `tpm` tokens per name in any 60 s
    interval (sliding, on the Redis server's clock), across every process that uses a
    budget on the same Redis and key prefix. Each operation is one atomic Lua script and
    one round trip, limited to the store's `timeout`; it raises when Redis does not answer
    (at once while the store is degraded), and the caller falls back to its own windows.

    It borrows the store's client and owns nothing: closing the store ends it too (its
    methods then raise). Use it on the store's event loop.

    Example:
        ```python
        async with RedisHealthStore("redis://127.0.0.1:6379/0") as store:
            limits = LimitSet(MonotonicClock(), budget=RedisBudget(store))
        ```

    Args:
        store: the health store whose Redis, timeout and key prefix it shares.
    """

    store: RedisHealthStore = attrs.field(on_setattr=attrs.setters.frozen)
    """The health store whose Redis, timeout and key prefix this budget shares."""
    _owner: str = attrs.field(init=False, factory=lambda: uuid.uuid4().hex, repr=False)
    """This budget's part of every reservation id: unique across the fleet."""
    _ids: Iterator[int] = attrs.field(init=False, factory=lambda: itertools.count(1), repr=False)
    _client: Redis | RedisCluster | None = attrs.field(init=False, default=None, repr=False)
    _scripts: dict[str, AsyncScript] = attrs.field(init=False, factory=dict, repr=False)

    @classmethod
    def for_store(cls, store: RedisHealthStore) -> RedisBudget:
        """The budget on `store`'s Redis (the same as `RedisBudget(store)`)."""
        return cls(store)

    def keys(self, name: str) -> tuple[str, str, str, str]:
        """The keys of `name`'s window: its log, tokens, sum and pause."""
        start = self.store.key_prefix
        return (
            f"{start}budget:log:{name}",
            f"{start}budget:tokens:{name}",
            f"{start}budget:sum:{name}",
            f"{start}budget:pause:{name}",
        )

    async def reserve(
        self, name: str, rpm: int | None, tpm: int | None, tokens: int
    ) -> tuple[bool, float, str]:
        """Take a place for one request of `tokens` (an estimate) in `name`'s windows.

        Granted when the window has room for one more request under `rpm` and for
        `tokens` more under `tpm` (or holds no tokens at all: a request larger than `tpm`
        goes alone), and `name` is not paused.

        Returns:
            (granted, seconds until a retry could succeed (0 when granted), the
            reservation's id for `correct` and `cancel` ("" when refused)).
        """
        reservation = f"{self._owner}:{next(self._ids)}"
        args = (reservation, max(int(tokens), 0), _limit(rpm), _limit(tpm))
        granted, wait = await self._window("reserve", name, args)
        if granted == "1":
            return True, 0.0, reservation
        return False, float(wait), ""

    async def correct(self, name: str, reservation: str, tokens: int) -> None:
        """Replace the tokens of `reservation` by `tokens` (what the provider reported).

        A reservation that has left the window (or was cancelled) is left alone.
        """
        await self._window("correct", name, (reservation, max(int(tokens), 0)))

    async def cancel(self, name: str, reservation: str) -> None:
        """Take `reservation` (a request never sent) out of `name`'s windows."""
        await self._window("cancel", name, (reservation,))

    async def pause(self, name: str, seconds: float) -> None:
        """Refuse every reservation for `name` for `seconds` from now (server time).

        A pause only extends: one that already ends later is left alone.
        """
        if not (math.isfinite(seconds) and seconds > 0):
            return  # nothing to pause (and SET PX takes no infinity)
        await self._call("pause", (self.keys(name)[3],), (repr(float(seconds)),))

    async def _window(self, script: str, name: str, args: Sequence[str | int]) -> list[str]:
        return await self._call(script, self.keys(name), (repr(_WINDOW), repr(_SLACK), *args))

    async def _call(self, script: str, keys: Sequence[str], args: Sequence[str | int]) -> list[str]:
        """Run one script within the store's timeout; its answer as text. Raises on any
        failure."""
        store = self.store
        if store.degraded:
            # The store's own calls failed and it has not reconnected: do not make every
            # request wait out the timeout meanwhile.
            raise ConnectionError(f"Redis is away ({store!r})")
        client, timeout = store._shared_client()
        if client is not self._client:
            # The scripts are bound to a client: the store makes its client on first use.
            self._scripts = {name: client.register_script(text) for name, text in _SCRIPTS.items()}
            self._client = client
        with anyio.fail_after(timeout):
            raw = await self._scripts[script](keys=keys, args=args)
        return [_text(item) for item in raw]
