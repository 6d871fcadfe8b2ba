"""The redis backend's audit trail (`oauthd/store/redis_audit.py`) beyond the contract:
retention, a write whose outcome was unknown, a chain without its head key
(`tests/store/test_audit_shared.py`: a trail that is off, the reader, a twin)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis

from oauthd.audit import AuditEvent, ChainHead, verify
from oauthd.cli.audit import _checked
from oauthd.store import Unavailable, redis_audit
from oauthd.store.redis import RedisStore
from oauthd.store.redis_audit import RedisAuditReader, RedisTrail
from tests.support.audit_records import chain_lines
from tests.support.backends import StoreHarness, open_harness
from tests.support.records import make_grant
from tests.support.redis_backend import REDIS_URL

EVENT = AuditEvent("token_issued", user="alice", client_id="app")


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[StoreHarness]:
    async for h in open_harness("redis", tmp_path):
        yield h


async def test_retention_trims_old_entries_and_keeps_the_last(harness: StoreHarness) -> None:
    store = harness.store
    for _ in range(3):
        await store.audit.append(EVENT)
    trail = store.audit
    assert await trail.expire(time.time() - 3600) == 0  # nothing is that old yet
    assert await trail.expire(time.time() + trail.retention + 60) == 2
    await store.grants.add(make_grant(), audit=EVENT)  # the chain goes on from the last
    lines = await chain_lines(harness, trail.chain.name)
    verdict = verify(trail.chain.name, lines)
    assert verdict.ok and (verdict.first, verdict.last) == (3, 4), verdict


@pytest.mark.parametrize("landed", [True, False], ids=["landed", "lost"])
async def test_a_write_whose_outcome_was_unknown_leaves_no_fork_nor_gap(
    harness: StoreHarness, landed: bool
) -> None:
    store = harness.store
    assert isinstance(store, RedisStore)
    real = store.call
    failures: list[bool] = []

    async def unanswered(operation: Any) -> Any:
        if not (failures and failures.pop()):
            return await real(operation)
        if landed:
            await real(operation)
        else:
            operation.close()
        raise Unavailable("redis: no answer within 2s")  # the caller cannot know which

    store.call = unanswered  # type: ignore[method-assign]
    await store.grants.add(make_grant(), audit=EVENT)  # the head is read first
    failures.append(True)  # the put's MULTI/EXEC: ran or not, unanswered
    with pytest.raises(Unavailable):
        await store.grants.put(make_grant(), audit=EVENT)
    await store.grants.put(make_grant(), audit=EVENT)  # the head is read back first
    lines = await chain_lines(harness, store.audit.chain.name)
    verdict = verify(store.audit.chain.name, lines)
    assert verdict.ok and verdict.records == 2 + landed, verdict


async def test_a_stream_written_before_its_head_key_is_checked_by_its_last_entry(
    harness: StoreHarness,
) -> None:
    """A chain written by an older oauthd has no head key: the server compares with the
    stream's last entry instead, then keeps the key from there on."""
    store = harness.store
    assert isinstance(store, RedisStore)
    trail = store.audit
    assert isinstance(trail, RedisTrail)
    await store.grants.add(make_grant(), audit=EVENT)
    await store.client.delete(trail.head_key)  # as an older oauthd left it
    await store.grants.put(make_grant(), audit=EVENT)
    assert await store.client.get(trail.head_key) == trail.chain.head.hash.encode()
    await store.client.delete(trail.head_key)
    trail.chain.restore(ChainHead())  # a stale head: refused on the server, read again
    await store.audit.append(EVENT)
    verdict = verify(trail.chain.name, await chain_lines(harness, trail.chain.name))
    assert verdict.ok and verdict.records == 3, verdict


async def test_a_stream_deleted_by_hand_starts_a_new_chain_instead_of_refusing_writes(
    harness: StoreHarness,
) -> None:
    """The stream decides, not its head key: with the stream gone (an operator's DEL) and
    the key left behind, the next writes are not refused for ever; the chain starts anew
    (verify of a chain that starts at 1 passes)."""
    store = harness.store
    assert isinstance(store, RedisStore)
    trail = store.audit
    assert isinstance(trail, RedisTrail)
    await store.grants.add(make_grant(), audit=EVENT)
    await store.audit.append(EVENT)
    await store.client.delete(trail.stream)
    trail.chain.restore(ChainHead())  # as a restarted instance would read it
    await store.audit.append(EVENT)
    taken = make_grant()
    await store.grants.put(taken)
    assert await store.grants.take(taken.key, audit=EVENT) == taken
    verdict = verify(trail.chain.name, await chain_lines(harness, trail.chain.name))
    assert verdict.ok and (verdict.first, verdict.records) == (1, 2), verdict


async def test_a_record_changed_meanwhile_retries_from_the_same_head(
    harness: StoreHarness,
) -> None:
    """Another instance changes the record between WATCH and EXEC five times in a row (a
    refresh raced on every instance): each retry seals after the head the server still
    has, so the update lands, with no 503 and no gap."""
    store = harness.store
    assert isinstance(store, RedisStore)
    grant = make_grant()
    await store.grants.put(grant)
    name = store.grants.key_name(grant.key)  # type: ignore[attr-defined]
    other = redis.Redis.from_url(REDIS_URL)
    raw = other.get(name)
    calls = 0

    def change(g: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls <= 5:
            other.set(name, raw)  # the WATCHed key changes: EXEC fails, the loop retries
        return replace(g, user="bob")

    try:
        updated = await store.grants.update(grant.key, change, audit=EVENT)
    finally:
        other.close()
    assert updated is not None and updated.user == "bob" and calls == 6
    verdict = verify(store.audit.chain.name, await chain_lines(harness, store.audit.chain.name))
    assert verdict.ok and verdict.records == 1, verdict


async def test_the_streams_are_found_among_many_keys_one_bounded_round_trip_at_a_time(
    harness: StoreHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At a million grants the walk takes many round trips: each has the store's timeout,
    not the walk as a whole (which failed retention at 1M on Redis)."""
    store = harness.store
    assert isinstance(store, RedisStore)
    for _ in range(30):
        await store.grants.add(make_grant())
    await store.audit.append(EVENT)
    await store.client.xadd(f"{store.prefix}audit:other", {"record": b"{}"})
    monkeypatch.setattr(redis_audit, "STREAM_SCAN_COUNT", 5)
    trips = 0

    async def call(operation: Any) -> Any:
        nonlocal trips
        trips += 1
        return await store.call(operation)

    found = await redis_audit.chain_streams(store.client, store.prefix, call)
    assert found == {
        store.audit.chain.name: store.audit.stream,
        "other": f"{store.prefix}audit:other",
    }
    assert trips > 3


async def test_a_record_cut_from_the_streams_end_fails_verify_against_the_head_key(
    harness: StoreHarness,
) -> None:
    store = harness.store
    assert isinstance(store, RedisStore)
    for _ in range(3):
        await store.audit.append(EVENT)
    trail = store.audit
    assert isinstance(trail, RedisTrail)
    reader = RedisAuditReader(REDIS_URL, store.prefix)
    try:
        assert (await _checked(reader, trail.chain.name)).ok
        last = await store.client.xrevrange(trail.stream, count=1)
        await store.client.xdel(trail.stream, last[0][0])
        verdict = await _checked(reader, trail.chain.name)
    finally:
        await reader.close()
    assert verdict.problem is not None and verdict.problem.where == trail.head_key
    assert "cut from its end" in verdict.problem.what
    await store.client.delete(trail.stream)  # the whole stream: its head key stays
    reader = RedisAuditReader(REDIS_URL, store.prefix)
    try:
        assert trail.chain.name in await reader.chains()
        assert not (await _checked(reader, trail.chain.name)).ok
    finally:
        await reader.close()
