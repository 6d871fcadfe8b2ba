"""The redis backend's counters: one hash per counter, `<prefix>counter:<key>` holding the
count `n` and the window's end `end` (by the store's clock), counted by a Lua script in one
round trip (atomic on the server, so every instance sharing the server shares the count).
The key expires with its window (PEXPIRE), so counters never pile up."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar

import redis.asyncio as aioredis

from oauthd.clock import Clock
from oauthd.store.base import Count, Counters

T = TypeVar("T")


class RedisStore(Protocol):
    """What the counters use of `oauthd.store.redis.RedisStore`."""

    clock: Clock
    prefix: str
    client: aioredis.Redis

    async def call(self, operation: Awaitable[T]) -> T: ...


# Atomically: open a new window if none is open at ARGV[1] (now), of ARGV[2] seconds,
# then add one; return {count, milliseconds until the window ends}.
_ADD = """
local now = tonumber(ARGV[1])
local ends = tonumber(redis.call('HGET', KEYS[1], 'end'))
if not ends or ends <= now then
  ends = now + tonumber(ARGV[2])
  redis.call('HSET', KEYS[1], 'n', 0, 'end', string.format('%.6f', ends))
  redis.call('PEXPIRE', KEYS[1], math.ceil((ends - now) * 1000))
end
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
return {n, math.ceil((ends - now) * 1000)}
"""

# Atomically: one less in the window open at ARGV[1] (now), if there is one and it is above 0.
_TAKE_BACK = """
local ends = tonumber(redis.call('HGET', KEYS[1], 'end'))
if not ends or ends <= tonumber(ARGV[1]) then return 0 end
if tonumber(redis.call('HGET', KEYS[1], 'n')) > 0 then
  redis.call('HINCRBY', KEYS[1], 'n', -1)
end
return 1
"""


class RedisCounters(Counters):
    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._prefix = f"{store.prefix}counter:"
        self._add = store.client.register_script(_ADD)
        self._take_back = store.client.register_script(_TAKE_BACK)

    async def add(self, key: str, window: float) -> Count:
        now = self._store.clock.now()
        answer: Any = self._add(keys=[self._prefix + key], args=[repr(now), repr(window)])
        n, ms = await self._store.call(answer)
        return Count(int(n), int(ms) / 1000)

    async def take_back(self, key: str) -> None:
        now = self._store.clock.now()
        answer: Any = self._take_back(keys=[self._prefix + key], args=[repr(now)])
        await self._store.call(answer)

    async def read(self, key: str) -> Count:
        n, ends = await self._store.call(self._store.client.hmget(self._prefix + key, "n", "end"))
        now = self._store.clock.now()
        if n is None or ends is None or float(ends) <= now:
            return Count(0, 0.0)
        return Count(int(n), float(ends) - now)

    async def reset(self, key: str) -> None:
        await self._store.call(self._store.client.delete(self._prefix + key))
