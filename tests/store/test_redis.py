"""The redis backend beyond the contract suite: an unreachable or silent server is
`Unavailable` within the timeout, never another error and never a hang."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.exceptions import ResponseError

from oauthd.clock import FakeClock, SystemClock
from oauthd.config import load_config
from oauthd.store import Unavailable, codec, open_store
from oauthd.store import redis as redis_store
from oauthd.store.redis import RedisStore, RedisTable
from tests.support.backends import open_harness
from tests.support.records import NOW, make_client, make_grant
from tests.support.redis_backend import REDIS_URL

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"


def closed_port() -> int:
    """A local port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A server that accepts connections and never answers."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()


def operations(store: RedisStore) -> list[Callable[[], Awaitable[Any]]]:
    grant = make_grant()

    async def scan() -> None:
        async for _ in store.grants.scan():
            pass

    return [
        store.ping,
        lambda: store.grants.get(grant.id),
        lambda: store.grants.add(grant),
        lambda: store.grants.put(grant),
        lambda: store.grants.take(grant.id),
        lambda: store.grants.update(grant.id, lambda r: r),
        lambda: store.grants.delete(grant.id),
        store.grants.count,
        scan,
        store.purge_expired,
        lambda: store.counters.add("k", 60),
        lambda: store.counters.read("k"),
        lambda: store.counters.reset("k"),
    ]


async def assert_every_call_unavailable(store: RedisStore, limit: float) -> None:
    for operation in operations(store):
        started = time.monotonic()
        with pytest.raises(Unavailable) as raised:
            await operation()
        assert time.monotonic() - started < limit + 0.5
        assert raised.value.retry_after > 0
    status = store.status()
    assert status.backend == "redis" and not status.healthy and status.detail


async def test_a_closed_port_is_unavailable_within_the_timeout() -> None:
    store = RedisStore(FakeClock(), f"redis://127.0.0.1:{closed_port()}/0", timeout=0.5)
    try:
        await assert_every_call_unavailable(store, 0.5)
    finally:
        await store.close()


async def test_a_server_that_never_answers_is_unavailable_within_the_timeout(
    silent_server: int,
) -> None:
    store = RedisStore(FakeClock(), f"redis://127.0.0.1:{silent_server}/0", timeout=0.3)
    try:
        await assert_every_call_unavailable(store, 0.3)
    finally:
        await store.close()


async def test_open_store_opens_the_configured_redis_backend() -> None:
    config = dataclasses.replace(
        load_config(EXAMPLE).storage,
        backend="redis",
        redis_url=f"redis://127.0.0.1:{closed_port()}/0",
        redis_prefix="oauthd-test:",
        redis_pool_size=2,
        timeout=0.5,
    )
    store = await open_store(config, FakeClock())
    try:
        assert isinstance(store, RedisStore)
        assert store.prefix == "oauthd-test:" and store.timeout == 0.5
        with pytest.raises(Unavailable):
            await store.ping()
    finally:
        await store.close()


async def test_a_client_written_before_format_3_is_read_and_updated(tmp_path: Path) -> None:
    """A record written by an oauthd of format 2 (no `last_used_at`) reads with the
    default, and the first use writes the field."""
    async for harness in open_harness("redis", tmp_path):
        store = harness.store
        assert isinstance(store, RedisStore)
        old = dataclasses.replace(make_client(), expires_at=None, last_used_at=None)
        doc = orjson.loads(codec.encode(old))
        del doc["last_used_at"]
        await store.client.set(f"{store.prefix}clients:{old.client_id}", orjson.dumps(doc))
        assert await store.clients.get(old.client_id) == old
        used = await store.clients.update(
            old.client_id, lambda c: dataclasses.replace(c, last_used_at=NOW)
        )
        assert used is not None and (await store.clients.get(old.client_id)) == used


async def test_a_counter_expires_on_the_server_with_its_window(tmp_path: Path) -> None:
    """Counters never pile up: the key of one lives as long as its window."""
    async for harness in open_harness("redis", tmp_path):
        store = harness.store
        assert isinstance(store, RedisStore)
        await store.counters.add("login-user:alice", 60)
        harness.clock.advance(30)
        await store.counters.add("login-user:alice", 60)  # the same window: no new expiry
        ttl = await store.client.pttl(f"{store.prefix}counter:login-user:alice")
        assert 59_000 <= ttl <= 60_000


async def test_with_the_system_clock_a_purge_leaves_expiry_to_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Walking every record every minute would cost more than the daemon at a million
    grants: with the system clock and a server that keeps time, the purge only asks the
    server's time; a server lagging beyond the tolerance makes it walk again."""
    walked: list[str] = []
    walk = RedisTable.purge_expired

    async def spy(table: RedisTable[Any]) -> int:
        walked.append(table.kind)
        return await walk(table)

    monkeypatch.setattr(RedisTable, "purge_expired", spy)
    async for harness in open_harness("redis", tmp_path):
        assert isinstance(harness.store, RedisStore)
        store = RedisStore(SystemClock(), REDIS_URL, prefix=harness.store.prefix)
        try:
            await store.grants.add(make_grant(expires_at=time.time() + 60))
            assert await store.purge_expired() == 0 and walked == []
            monkeypatch.setattr(redis_store, "CLOCK_TOLERANCE", -1.0)  # as if it lagged
            assert await store.purge_expired() == 0
            assert set(walked) == {t.kind for t in store.tables()}
            assert await store.census() == {t.kind: int(t.kind == "grants") for t in store.tables()}
            monkeypatch.setattr(redis_store, "CLOCK_TOLERANCE", 1.0)

            async def refused() -> Any:
                raise ResponseError("NOPERM this user has no permissions to run 'time'")

            monkeypatch.setattr(store.client, "time", refused)
            walked.clear()
            assert await store.purge_expired() == 0 and "grants" in walked  # walks instead
            assert store.status().healthy
        finally:
            await store.close()
        monkeypatch.setattr(redis_store, "CLOCK_TOLERANCE", 1.0)
        await harness.store.purge_expired()  # an injected clock: the server cannot know it
        assert walked.count("grants") == 2
