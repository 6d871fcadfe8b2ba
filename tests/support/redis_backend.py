"""The redis backend in the contract suite (`tests.support.backends.BACKENDS`): a server at
`OAUTHD_TEST_REDIS_URL` (default `redis://127.0.0.1:6379/0`), one key prefix per test."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from oauthd.clock import FakeClock
from oauthd.store import Store
from oauthd.store.redis import RedisStore

if TYPE_CHECKING:
    from tests.support.configs import TomlValue
    from tests.support.services import StateRef

REDIS_URL = os.environ.get("OAUTHD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def prefix(state: StateRef) -> str:
    return f"{state.namespace}:"


async def open_redis(state: StateRef, clock: FakeClock) -> Store:
    return RedisStore(clock, REDIS_URL, prefix=prefix(state), pool_size=20, timeout=2.0)


def redis_storage(state: StateRef) -> dict[str, TomlValue]:
    return {"backend": "redis", "redis_url": REDIS_URL, "redis_prefix": prefix(state)}


async def redis_probe() -> str | None:
    """Why the test server is unreachable, or None when it answers."""
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        return f"no Redis at {REDIS_URL}: {exc}"
    finally:
        await client.aclose()
    return None


async def redis_cleanup(state: StateRef) -> None:
    """Delete every key the test wrote (its prefix only: other runs may share the server)."""
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix(state)}*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start : start + 1000])
    finally:
        await client.aclose()


def redis_writes(store: Store) -> int:
    assert isinstance(store, RedisStore)
    return store.writes


async def redis_dump(state: StateRef) -> dict[str, bytes]:
    """Every key the test wrote, as Redis serializes it (`DUMP`: any type), by name."""
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix(state)}*", count=1000)]
        return {f"redis {k.decode()}": await client.dump(k) or b"" for k in keys}
    finally:
        await client.aclose()
