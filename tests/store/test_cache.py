"""The read cache of grants and MCP session bindings (`oauthd/store/cache.py`).

First on the memory store with a listener driven by the test (what the cache does with
invalidations, in-flight reads, its bound, its own writes and a listener that fails);
then on Redis and PostgreSQL with two stores on one namespace, two "instances": a change
made through one is seen by the other's very next read, a read racing a change is not
kept, and a listener that loses its connection turns the cache off until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from oauthd.audit import Audit
from oauthd.clock import FakeClock
from oauthd.model import Grant
from oauthd.store import MemoryStore, Store
from oauthd.store import cache as cache_module
from oauthd.store.cache import CachedTable, ReadCache, attach
from tests.support.postgres import DSN, open_postgres, postgres_cleanup, postgres_probe
from tests.support.records import make_grant, make_mcp_session
from tests.support.redis_backend import REDIS_URL, open_redis, redis_cleanup, redis_probe
from tests.support.services import StateRef, service_missing
from tests.support.wait import eventually

WITHIN = 10.0  # seconds a listener may take to (re)connect on a busy machine


# -- on the memory store, with a listener the test drives ------------------------------------


class Listener:
    """A `Listen` that subscribes at once (unless told to fail) and then hears from its
    "server" every 20 ms (unless `silent`); the test delivers the invalidations itself, and
    answers confirmations itself when `confirming` is off."""

    def __init__(self) -> None:
        self.sessions = 0
        self.fail: Exception | None = None
        self.end = asyncio.Event()
        self.silent = False
        self.grace = 0.0
        self.confirming = True  # answer every confirmation at once
        self.confirms: list[asyncio.Future[None]] = []  # asked for, not answered

    async def __call__(self, cache: ReadCache) -> None:
        self.sessions += 1
        if self.fail is not None:
            raise self.fail
        cache.up()
        self.end.clear()
        while not self.end.is_set():
            if not self.silent:
                cache.alive()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.end.wait(), 0.02)

    async def confirm(self) -> None:
        if self.confirming:
            return
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.confirms.append(answer)
        await answer


@dataclass
class Local:
    store: Store
    cache: ReadCache
    listener: Listener
    clock: FakeClock

    @property
    def grants(self) -> CachedTable[Grant]:
        assert isinstance(self.store.grants, CachedTable)
        return self.store.grants


@pytest.fixture
async def local() -> AsyncIterator[Local]:
    clock = FakeClock()
    store = MemoryStore(clock)
    listener = Listener()
    cache = attach(store, clock, listener, size=3, timeout=1.0)
    assert cache is not None
    await eventually(lambda: cache.ready, WITHIN)
    yield Local(store, cache, listener, clock)
    await cache.close()


async def test_a_found_record_is_served_from_memory_until_invalidated(local: Local) -> None:
    grant = make_grant()
    await local.store.grants.add(grant)
    assert await local.store.grants.get(grant.id) == grant
    assert (local.cache.hits, local.cache.misses) == (0, 1)
    assert await local.store.grants.get(grant.id) is not None
    assert local.cache.hits == 1
    local.cache.invalidate(Grant.KIND, grant.id)
    assert await local.store.grants.get(grant.id) == grant
    assert local.cache.misses == 2
    assert await local.store.grants.get("absent") is None
    assert await local.store.grants.get("absent") is None
    assert local.cache.misses == 4  # nothing negative is kept


async def test_the_other_kinds_are_not_cached(local: Local) -> None:
    assert not isinstance(local.store.clients, CachedTable)
    assert isinstance(local.store.mcp_sessions, CachedTable)
    assert attach(MemoryStore(local.clock), local.clock, Listener(), size=0, timeout=1) is None


async def test_expiry_is_checked_on_every_hit(local: Local) -> None:
    grant = make_grant(expires_at=local.clock.now() + 10)
    await local.store.grants.add(grant)
    assert await local.store.grants.get(grant.id) is not None
    assert await local.store.grants.get(grant.id) is not None
    hits = local.cache.hits
    local.clock.advance(10)
    assert await local.store.grants.get(grant.id) is None
    assert local.cache.hits == hits


async def test_the_least_recently_used_go_first(local: Local) -> None:
    grants = [make_grant() for _ in range(4)]
    for grant in grants:
        await local.store.grants.add(grant)
    for grant in grants[:3]:
        await local.store.grants.get(grant.id)
    await local.store.grants.get(grants[0].id)  # a hit: the most recently used now
    await local.store.grants.get(grants[3].id)  # the fourth pushes out grants[1]
    hits = local.cache.hits
    for grant in (grants[0], grants[2], grants[3]):
        await local.store.grants.get(grant.id)
    assert local.cache.hits == hits + 3
    await local.store.grants.get(grants[1].id)
    assert local.cache.hits == hits + 3


async def test_a_read_that_raced_an_invalidation_is_not_kept(
    local: Local, monkeypatch: pytest.MonkeyPatch
) -> None:
    grant = make_grant()
    await local.store.grants.add(grant)
    inner = local.grants.inner
    read = inner.get

    async def racing(key: str) -> Grant | None:
        found = await read(key)  # the old record, read before the change...
        local.cache.invalidate(Grant.KIND, key)  # ...whose invalidation comes meanwhile
        return found

    monkeypatch.setattr(inner, "get", racing)
    assert await local.store.grants.get(grant.id) == grant  # returned once, as uncached
    monkeypatch.undo()
    misses = local.cache.misses
    await local.store.grants.get(grant.id)
    assert local.cache.misses == misses + 1, "the raced read was kept"


async def test_a_read_that_spans_a_reconnect_is_not_kept(
    local: Local, monkeypatch: pytest.MonkeyPatch
) -> None:
    grant = make_grant()
    await local.store.grants.add(grant)
    inner = local.grants.inner
    read = inner.get

    async def spanning(key: str) -> Grant | None:
        found = await read(key)
        local.cache.down()
        local.cache.up()
        return found

    monkeypatch.setattr(inner, "get", spanning)
    await local.store.grants.get(grant.id)
    monkeypatch.undo()
    misses = local.cache.misses
    await local.store.grants.get(grant.id)
    assert local.cache.misses == misses + 1


async def test_own_writes_drop_the_key_and_wait_for_their_confirmation(local: Local) -> None:
    local.listener.confirming = False
    grant = make_grant()
    await local.store.grants.add(grant)
    await local.store.grants.get(grant.id)
    write = asyncio.create_task(
        local.store.grants.update(grant.id, lambda g: dataclasses.replace(g, user="bob"))
    )
    await eventually(lambda: len(local.listener.confirms) == 1, WITHIN)
    found = await local.store.grants.get(grant.id)  # dropped at once, before the echo
    assert found is not None and found.user == "bob"
    # Another instance's invalidation of the same key (of an earlier write of theirs,
    # heard only now) must not stand in for this write's own.
    local.cache.invalidate(Grant.KIND, grant.id)
    await asyncio.sleep(0.05)
    assert not write.done(), "released by someone else's invalidation"
    local.listener.confirms.pop().set_result(None)
    updated = await asyncio.wait_for(write, 1)
    assert updated is not None and updated.user == "bob"


async def test_the_confirmation_is_asked_for_after_the_write(
    local: Local, monkeypatch: pytest.MonkeyPatch
) -> None:
    local.listener.confirming = False
    grant = make_grant()
    await local.store.grants.add(grant)
    inner = local.grants.inner
    delete = inner.delete
    asked_during: list[int] = []

    async def slow(key: str, *, audit: Audit | None = None) -> bool:
        await asyncio.sleep(0.05)
        asked_during.append(len(local.listener.confirms))
        return await delete(key, audit=audit)

    monkeypatch.setattr(inner, "delete", slow)
    write = asyncio.create_task(local.store.grants.delete(grant.id))
    await eventually(lambda: len(local.listener.confirms) == 1, WITHIN)
    assert asked_during == [0]  # not while the write was in flight
    local.listener.confirms.pop().set_result(None)
    assert await asyncio.wait_for(write, 1)


async def test_writes_that_change_nothing_do_not_wait(local: Local) -> None:
    local.listener.confirming = False
    local.listener.grace = 5.0
    grant = make_grant()
    await local.store.grants.add(grant)
    await asyncio.wait_for(local.store.grants.update(grant.id, lambda g: g), 0.5)
    await asyncio.wait_for(local.store.grants.take("absent"), 0.5)
    await asyncio.wait_for(local.store.grants.delete("absent"), 0.5)
    assert local.listener.confirms == []


async def test_writes_that_end_a_record_or_an_access_token_wait_the_grace(local: Local) -> None:
    local.listener.grace = 0.2

    async def took(write: Awaitable[Any]) -> float:
        started = time.monotonic()
        await write
        return time.monotonic() - started

    grants = [make_grant() for _ in range(3)]
    for grant in grants:
        await local.store.grants.add(grant)
    used = await took(local.store.grants.update(grants[0].id, lambda g: replace_used(g)))
    assert used < 0.2
    void = b"void"
    voided = await took(
        local.store.grants.update(grants[0].id, lambda g: dataclasses.replace(g, access_hash=void))
    )
    assert voided >= 0.2
    assert await took(local.store.grants.delete(grants[1].id)) >= 0.2
    assert await took(local.store.grants.take(grants[2].id)) >= 0.2
    local.listener.end.set()  # even while this cache is down: the others' is waited for
    local.listener.fail = ConnectionError("refused")
    await eventually(lambda: not local.cache.ready, WITHIN)
    await local.store.grants.add(grants[1])
    assert await took(local.store.grants.delete(grants[1].id)) >= 0.2


def replace_used(grant: Grant) -> Grant:
    return dataclasses.replace(grant, last_used_at=grant.last_used_at + 1)


async def test_a_lost_echo_clears_the_whole_cache(
    local: Local, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache_module, "ECHO_WITHIN", 0.1)
    local.listener.confirming = False
    kept, changed = make_grant(), make_grant()
    for grant in (kept, changed):
        await local.store.grants.add(grant)
        await local.store.grants.get(grant.id)
    with caplog.at_level(logging.WARNING, "oauthd.store"):
        assert await local.store.grants.delete(changed.id)
    assert [r.event for r in caplog.records] == ["store.cache_echo_late"]  # type: ignore[attr-defined]
    misses = local.cache.misses
    await local.store.grants.get(kept.id)
    assert local.cache.misses == misses + 1


async def test_a_silent_listener_stops_the_hits_within_the_freshness_window(
    local: Local,
) -> None:
    grant = make_grant()
    await local.store.grants.add(grant)
    await local.store.grants.get(grant.id)
    hits = local.cache.hits
    assert await local.store.grants.get(grant.id) is not None
    assert local.cache.hits == hits + 1
    local.listener.silent = True  # the connection went quiet; nothing detected it yet
    started = time.monotonic()
    await eventually(lambda: not local.cache.fresh(), WITHIN)
    assert time.monotonic() - started <= cache_module.FRESH_WITHIN + 0.5
    assert local.cache.ready
    hits, skips = local.cache.hits, local.cache.stale_skips
    assert await local.store.grants.get(grant.id) == grant  # from the backend
    assert (local.cache.hits, local.cache.stale_skips) == (hits, skips + 1)
    local.listener.silent = False  # heard again (in order: whatever came meanwhile first)
    await eventually(local.cache.fresh, WITHIN)
    assert await local.store.grants.get(grant.id) is not None
    assert local.cache.hits == hits + 1


async def test_while_the_listener_is_down_every_read_goes_to_the_backend(
    local: Local, caplog: pytest.LogCaptureFixture
) -> None:
    grant = make_grant()
    await local.store.grants.add(grant)
    await local.store.grants.get(grant.id)
    local.listener.fail = ConnectionError("refused")
    with caplog.at_level(logging.INFO, "oauthd.store"):
        local.listener.end.set()  # the connection ends; reconnecting fails a few times
        await eventually(lambda: local.listener.sessions >= 3, WITHIN)
        assert not local.cache.ready
        hits = local.cache.hits
        for _ in range(3):
            assert await local.store.grants.get(grant.id) == grant
        assert local.cache.hits == hits
        write = local.store.grants.update(grant.id, lambda g: dataclasses.replace(g, user="x"))
        await asyncio.wait_for(write, 0.5)  # nothing to wait for
        local.listener.fail = None
        await eventually(lambda: local.cache.ready, WITHIN)
    events = [getattr(r, "event", "") for r in caplog.records]
    assert events == ["store.cache_off", "store.cache_on"], events
    await local.store.grants.get(grant.id)
    found = await local.store.grants.get(grant.id)
    assert local.cache.hits == hits + 1 and found is not None and found.user == "x"


async def test_a_listener_bug_does_not_stop_it(local: Local) -> None:
    local.listener.fail = RuntimeError("a bug")
    local.listener.end.set()
    await eventually(lambda: local.listener.sessions >= 3, WITHIN)
    local.listener.fail = None
    await eventually(lambda: local.cache.ready, WITHIN)


async def test_close_stops_the_listener(local: Local) -> None:
    await local.cache.close()
    assert not local.cache.ready
    sessions = local.listener.sessions
    await asyncio.sleep(0.2)
    assert local.listener.sessions == sessions


def test_the_listeners_map_messages_to_kinds_and_keys() -> None:
    from oauthd.store.postgres_notify import PostgresInvalidations
    from oauthd.store.redis_tracking import RedisInvalidations

    heard: list[tuple[str, str] | None] = []

    class Heard:
        def invalidate(self, kind: str, key: str) -> None:
            heard.append((kind, key))

        def flush(self) -> None:
            heard.append(None)

    kinds = ("grants", "mcp_sessions")
    listener = RedisInvalidations("redis://127.0.0.1:1/0", "p:", kinds, 1.0)
    cache: Any = Heard()
    listener._deliver(cache, [b"p:grants:g1", b"p:clients:c1", b"q:grants:g2"])
    listener._deliver(cache, [b"p:mcp_sessions:s1"])
    listener._deliver(cache, None)  # FLUSHDB / FLUSHALL
    assert heard == [("grants", "g1"), ("mcp_sessions", "s1"), None]
    heard.clear()
    PostgresInvalidations._deliver(cache, "mine", '["mine", "grants", "g1"]')
    PostgresInvalidations._deliver(cache, "mine", '["other", "grants", "g2"]')
    PostgresInvalidations._deliver(cache, "mine", '["mine", null, null]')  # TRUNCATE
    PostgresInvalidations._deliver(cache, "mine", "not json")  # to be safe: everything
    assert heard == [("grants", "g1"), None, None]


async def test_the_listeners_confirm_only_with_their_own_answer() -> None:
    """A confirmation is released by its own pong or marker, by nothing else."""
    from oauthd.store.postgres_notify import MARK, PostgresInvalidations
    from oauthd.store.redis_tracking import RedisInvalidations

    loop = asyncio.get_running_loop()
    redis = RedisInvalidations("redis://127.0.0.1:1/0", "p:", ("grants",), 1.0)
    mine, earlier = loop.create_future(), loop.create_future()
    redis._pings = {7: (time.monotonic(), earlier), 8: (time.monotonic(), mine)}
    redis._answered(b"9")  # an unknown number
    redis._answered(b"")  # a plain PING's pong
    redis._answered(b"7")
    assert earlier.done() and not mine.done()
    redis._answered(b"8")
    assert mine.done()

    cache: Any = ReadCache(FakeClock(), Listener())
    cache.wrap(MemoryStore(FakeClock()).grants)
    postgres = PostgresInvalidations("postgresql://127.0.0.1:1/test", 1.0)
    postgres._schema = "mine"
    answer = loop.create_future()
    postgres._marks["12.3"] = answer
    postgres._heard(cache, '["mine", "grants", "g1"]')  # an invalidation, anyone's
    postgres._heard(cache, f'["mine", "{MARK}", "12.4"]')  # someone else's marker
    postgres._heard(cache, f'["other", "{MARK}", "12.3"]')  # another schema's
    assert not answer.done()
    epoch = cache.epoch
    postgres._heard(cache, f'["mine", "{MARK}", "12.3"]')
    assert answer.done() and cache.epoch == epoch  # a marker flushes nothing


# -- Redis and PostgreSQL: two instances on one namespace ------------------------------------


@dataclass(frozen=True)
class Shared:
    name: str
    open: Callable[[StateRef, FakeClock], Awaitable[Store]]
    probe: Callable[[], Awaitable[str | None]]
    cleanup: Callable[[StateRef], Awaitable[None]]


SHARED = {
    "redis": Shared("redis", open_redis, redis_probe, redis_cleanup),
    "postgres": Shared("postgres", open_postgres, postgres_probe, postgres_cleanup),
}


@dataclass
class Pair:
    name: str
    a: Store
    b: Store
    clock: FakeClock

    @staticmethod
    def cache(store: Store) -> ReadCache:
        cache = getattr(store, "read_cache", None)
        assert isinstance(cache, ReadCache)
        return cache


@pytest.fixture(params=list(SHARED))
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Pair]:
    backend = SHARED[request.param]
    if (reason := await backend.probe()) is not None:
        service_missing(f"{backend.name}: {reason}")
    state = StateRef(tmp_path, f"oauthd-test-{uuid.uuid4().hex}")
    clock = FakeClock()
    stores: list[Store] = []
    try:
        stores.append(await backend.open(state, clock))
        stores.append(await backend.open(state, clock))
        for store in stores:
            await eventually(lambda s=store: Pair.cache(s).ready, WITHIN)  # type: ignore[misc]
        yield Pair(backend.name, stores[0], stores[1], clock)
    finally:
        for store in stores:
            await store.close()
        await backend.cleanup(state)


async def cached_on(store: Store, key: str) -> Grant:
    """Read until the record is served from the cache (a first read racing the
    invalidation of the write that made it is not kept)."""
    cache = Pair.cache(store)
    for _ in range(200):
        hits = cache.hits
        found = await store.grants.get(key)
        assert found is not None
        if cache.hits > hits:
            return found
        await asyncio.sleep(0.001)
    raise AssertionError("never served from the cache")


async def seen_by_b(
    pair: Pair,
    read: Callable[[], Awaitable[Any]],
    ok: Callable[[Any], bool],
    *,
    revocation: bool = False,
) -> bool:
    """B's next read (`read`) satisfies `ok`: True. Redis: always (the PING ordering), and
    on PostgreSQL after a revocation (A waited `REVOKE_GRACE`). On PostgreSQL, after any
    other change, B's copy of the invalidation may come a little after A's (each
    listener's server process sends its own): then False, once a read within a second
    satisfied it."""
    if ok(await read()):
        return True
    assert pair.name == "postgres" and not revocation, (
        "B read the old record after A's write returned"
    )
    deadline = time.monotonic() + 1.0
    while not ok(await read()):
        assert time.monotonic() < deadline, "B never saw the change"
        await asyncio.sleep(0.001)
    return False


async def test_a_change_on_one_instance_is_seen_by_the_others_next_read(pair: Pair) -> None:
    """B reads right after A's write returned, with no sleep in between. Redis: always the
    new state (A's confirming PING was answered after every listener's copy was queued).
    PostgreSQL: the same for revocations (deletes, takes, an access token voided: A waited
    `REVOKE_GRACE` after its own copy came); after other changes each listener's copy is
    sent by its own server process once that process runs after the commit, so B's may
    trail A's by that process's wake-up; such late rounds are counted (and B must see the
    change as soon as its copy came)."""
    grant = make_grant()
    await pair.a.grants.add(grant)
    late = 0

    async def b_sees(ok: Callable[[Grant | None], bool], revocation: bool) -> None:
        nonlocal late
        read = lambda: pair.b.grants.get(grant.id)  # noqa: E731
        if not await seen_by_b(pair, read, ok, revocation=revocation):
            late += 1

    for round_ in range(200):
        await cached_on(pair.b, grant.id)
        match round_ % 4:
            case 0:
                used = float(round_)
                await pair.a.grants.update(
                    grant.id, lambda g, u=used: dataclasses.replace(g, last_used_at=u)
                )
                await b_sees(lambda g, u=used: g is not None and g.last_used_at == u, False)
            case 1:
                assert await pair.a.grants.delete(grant.id)
                await b_sees(lambda g: g is None, True)
                await pair.a.grants.add(grant)
            case 2:
                assert await pair.a.grants.take(grant.id) is not None
                await b_sees(lambda g: g is None, True)
                await pair.a.grants.add(grant)
            case _:
                void = uuid.uuid4().bytes
                await pair.a.grants.update(
                    grant.id, lambda g, v=void: dataclasses.replace(g, access_hash=v)
                )
                await b_sees(lambda g, v=void: g is not None and g.access_hash == v, True)
    print(f"{pair.name}: B read the old record right after A's write in {late} of 200 rounds")


async def test_session_bindings_are_cached_and_invalidated_too(pair: Pair) -> None:
    binding = make_mcp_session()
    await pair.a.mcp_sessions.put(binding)
    cache = Pair.cache(pair.b)
    for _ in range(200):
        hits = cache.hits
        await pair.b.mcp_sessions.get(binding.session_key)
        if cache.hits > hits:
            break
        await asyncio.sleep(0.001)
    assert cache.hits > 0
    assert await pair.a.mcp_sessions.delete(binding.session_key)
    await seen_by_b(
        pair,
        lambda: pair.b.mcp_sessions.get(binding.session_key),
        lambda b: b is None,
        revocation=True,
    )


async def test_an_in_flight_read_racing_a_change_is_not_kept(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    grant = make_grant()
    await pair.a.grants.add(grant)
    table = pair.b.grants
    assert isinstance(table, CachedTable)
    read = table.inner.get
    heard = Pair.cache(pair.b)

    async def racing(key: str) -> Grant | None:
        found = await read(key)  # the old record...
        epoch = heard.epoch
        await pair.a.grants.update(key, lambda g: dataclasses.replace(g, user="bob"))
        # ...and A's change reaches B before this read's answer is handled
        await eventually(lambda: any(r.stale for r in table._cached.reads.get(key, ())), WITHIN)
        assert heard.epoch == epoch
        return found

    monkeypatch.setattr(table.inner, "get", racing)
    old = await pair.b.grants.get(grant.id)
    monkeypatch.undo()
    assert old is not None and old.user == grant.user
    now = await pair.b.grants.get(grant.id)
    assert now is not None and now.user == "bob"


async def test_own_writes_are_seen_at_once(pair: Pair) -> None:
    grant = make_grant()
    await pair.b.grants.add(grant)
    await cached_on(pair.b, grant.id)
    await pair.b.grants.update(grant.id, lambda g: dataclasses.replace(g, user="carol"))
    found = await pair.b.grants.get(grant.id)
    assert found is not None and found.user == "carol"
    assert await pair.b.grants.delete(grant.id)
    assert await pair.b.grants.get(grant.id) is None


async def test_expiry_is_honoured_on_a_hit(pair: Pair) -> None:
    grant = make_grant(expires_at=pair.clock.now() + 30)
    await pair.a.grants.add(grant)
    await cached_on(pair.b, grant.id)
    pair.clock.advance(30)
    hits = Pair.cache(pair.b).hits
    assert await pair.b.grants.get(grant.id) is None
    assert Pair.cache(pair.b).hits == hits


async def kill_listener(pair: Pair, store: Store) -> None:
    """End the listener's connection from the server side."""
    listener: Any = Pair.cache(store).listener
    if pair.name == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            assert listener.client_id is not None
            assert await client.client_kill_filter(_id=listener.client_id) == 1
        finally:
            await client.aclose()
    else:
        import psycopg

        async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn:
            assert listener.backend_pid is not None
            cur = await conn.execute("SELECT pg_terminate_backend(%s)", (listener.backend_pid,))
            assert (await cur.fetchone()) == (True,)


async def test_a_lost_listener_turns_the_cache_off_until_it_is_back(pair: Pair) -> None:
    grant = make_grant()
    await pair.a.grants.add(grant)
    await cached_on(pair.b, grant.id)
    cache = Pair.cache(pair.b)
    await kill_listener(pair, pair.b)
    await eventually(lambda: not cache.ready, WITHIN)
    # Bypassed while down: A's change is read from the backend, nothing is kept.
    await pair.a.grants.update(grant.id, lambda g: dataclasses.replace(g, user="dave"))
    hits = cache.hits
    if not cache.ready:
        found = await pair.b.grants.get(grant.id)
        assert found is not None and found.user == "dave"
        assert cache.hits == hits
    await eventually(lambda: cache.ready, WITHIN)  # reconnected by itself
    found = await cached_on(pair.b, grant.id)
    assert found.user == "dave"
    await pair.a.grants.update(grant.id, lambda g: dataclasses.replace(g, user="erin"))
    await seen_by_b(
        pair, lambda: pair.b.grants.get(grant.id), lambda g: g is not None and g.user == "erin"
    )


async def listener_connected(pair: Pair, ident: int) -> bool:
    if pair.name == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            return any(int(c["id"]) == ident for c in await client.client_list())
        finally:
            await client.aclose()
    import psycopg

    async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn:
        cur = await conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (ident,))
        return await cur.fetchone() is not None


async def test_close_ends_the_listener_connection(pair: Pair) -> None:
    listener: Any = Pair.cache(pair.b).listener
    ident = listener.client_id if pair.name == "redis" else listener.backend_pid
    assert ident is not None and await listener_connected(pair, ident)
    await pair.b.close()
    assert not Pair.cache(pair.b).ready
    deadline = time.monotonic() + WITHIN
    while await listener_connected(pair, ident):
        assert time.monotonic() < deadline, "the listener's connection is still open"
        await asyncio.sleep(0.01)


class Proxy:
    """A TCP relay to the backend that can go silent: while `frozen`, what either side
    sends is held (the connections stay open), as on a dead network path."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = 0
        self.connections = 0
        self.open = asyncio.Event()
        self.open.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers += [writer, up_writer]
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                await self.open.wait()
                sink.write(data)
                await sink.drain()
        sink.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for writer in self._writers:
            writer.close()


async def test_a_silent_listener_connection_stops_the_hits_at_once(pair: Pair) -> None:
    """B's listener connection goes silent (nothing closed, nothing detected yet): within
    `FRESH_WITHIN` B reads from the backend again, so A's change is seen."""
    cache = Pair.cache(pair.b)
    listener: Any = cache.listener
    if pair.name == "redis":
        proxy = Proxy(int(listener._pool.connection_kwargs.get("port", 6379)))
        await proxy.start()
        listener._pool.connection_kwargs["port"] = proxy.port
        listener._pool.connection_kwargs["host"] = "127.0.0.1"
    else:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        proxy = Proxy(int(conninfo_to_dict(listener._conninfo).get("port") or 5432))
        await proxy.start()
        listener._conninfo = make_conninfo(listener._conninfo, host="127.0.0.1", port=proxy.port)
    try:
        await kill_listener(pair, pair.b)  # it reconnects, through the proxy
        await eventually(lambda: proxy.connections > 0 and cache.ready, WITHIN)
        grant = make_grant()
        await pair.a.grants.add(grant)
        await cached_on(pair.b, grant.id)
        await asyncio.sleep(2 * cache_module.PING_EVERY)
        assert cache.fresh(), "an idle healthy listener stays fresh"
        proxy.open.clear()
        silenced = time.monotonic()
        await pair.a.grants.update(grant.id, lambda g: dataclasses.replace(g, user="frank"))
        while True:
            found = await pair.b.grants.get(grant.id)
            assert found is not None
            if found.user == "frank":
                break
            elapsed = time.monotonic() - silenced
            assert elapsed < cache_module.FRESH_WITHIN + 0.5, "B kept serving the old record"
            await asyncio.sleep(0.01)
        proxy.open.set()  # heard again, or replaced once found dead: hits come back
        found = await cached_on(pair.b, grant.id)
        assert found.user == "frank"
    finally:
        await proxy.close()
