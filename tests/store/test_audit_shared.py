"""The shared backends' trail (`oauthd/store/audit.py`, on redis and postgres) beyond the
contract: `[audit] enabled = false` keeps the log line only, the offline reader lists
every instance's chain, and a second writer on one chain (a misconfigured twin, a write
that landed after its timeout) is refused by the server, never forking the chain."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from oauthd.audit import AuditEvent, verify
from tests.support.audit_records import chain_lines, open_shared, reader_of
from tests.support.backends import StoreHarness, open_harness
from tests.support.records import make_grant

EVENT = AuditEvent("token_issued", user="alice", client_id="app")
# Where each backend's reader says it found the other instance's one record.
FOUND_AT: dict[str, Callable[[str], bool]] = {
    "redis": lambda where: where.startswith("stream entry "),
    "postgres": lambda where: where == "row n=1",
}


@pytest.fixture(params=["redis", "postgres"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreHarness]:
    async for h in open_harness(request.param, tmp_path):
        yield h


async def test_disabled_keeps_no_record_and_logs_the_line(
    harness: StoreHarness, caplog: pytest.LogCaptureFixture
) -> None:
    store = await open_shared(harness, "quiet", enabled=False)
    try:
        with caplog.at_level("INFO", logger="oauthd.audit"):
            await store.grants.add(make_grant(), audit=EVENT)
            await store.audit.append(EVENT)
        assert [r.getMessage() for r in caplog.records if r.name == "oauthd.audit"] == [
            "token issued",
            "token issued",
        ]
        assert await chain_lines(harness, "quiet") == []
        assert await store.grants.count() == 1
    finally:
        await store.close()


async def test_the_reader_lists_every_instances_chain(harness: StoreHarness) -> None:
    other = await open_shared(harness, "instance-b")
    try:
        await harness.store.audit.append(EVENT)
        await other.grants.add(make_grant(), audit=EVENT)
        reader = reader_of(harness)
        try:
            assert await reader.chains() == sorted([harness.store.audit.chain.name, "instance-b"])
            [(where, _)] = [item async for item in reader.lines("instance-b")]
            assert FOUND_AT[harness.name](where), where
        finally:
            await reader.close()
    finally:
        await other.close()


async def test_a_head_moved_by_another_writer_is_read_again_not_forked(
    harness: StoreHarness,
) -> None:
    chain = harness.store.audit.chain.name
    twin = await open_shared(harness, chain)  # a misconfigured second instance, same chain
    try:
        await harness.store.grants.add(make_grant(), audit=EVENT)
        await twin.grants.add(make_grant(), audit=EVENT)
        taken = make_grant()
        await harness.store.grants.put(taken)
        # the first instance's head is stale: the record's position is taken, the whole
        # step is refused, and it runs again after reading the head
        assert await harness.store.grants.take(taken.key, audit=EVENT) == taken
        verdict = verify(chain, await chain_lines(harness, chain))
        assert verdict.ok and verdict.records == 3, verdict
        assert await harness.store.grants.get(taken.key) is None
    finally:
        await twin.close()


async def test_another_writer_on_the_same_chain_is_refused_by_the_server(
    harness: StoreHarness,
) -> None:
    """Every kind of audited step (a record alone, add, put, update, delete) checks the
    head on the server: two instances on one chain name alternate without a fork."""
    chain = harness.store.audit.chain.name
    twin = await open_shared(harness, chain)
    try:
        grants = [make_grant() for _ in range(4)]
        for store in (harness.store, twin, harness.store, twin):
            await store.audit.append(EVENT)
        await harness.store.grants.add(grants[0], audit=EVENT)
        await twin.grants.put(grants[1], audit=EVENT)
        await harness.store.grants.put(grants[2], audit=EVENT)
        await twin.grants.add(grants[3], audit=EVENT)
        renamed = await harness.store.grants.update(
            grants[1].key, lambda g: replace(g, user="bob"), audit=EVENT
        )
        assert renamed is not None and renamed.user == "bob"
        assert await twin.grants.delete(grants[0].key, audit=EVENT)
        verdict = verify(chain, await chain_lines(harness, chain))
        assert verdict.ok and verdict.records == 10, verdict
    finally:
        await twin.close()
