"""The postgres backend's audit trail (`oauthd/store/postgres_audit.py`) beyond the
contract: retention, a write whose outcome was unknown, a head that moved under the
instance (the primary key refuses the fork); `tests/store/test_audit_shared.py` has the
trail that is off and the reader."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from oauthd.audit import AuditEvent, verify
from oauthd.store import Unavailable
from oauthd.store.postgres import PostgresStore
from tests.support.audit_records import chain_lines, open_shared
from tests.support.backends import StoreHarness, open_harness
from tests.support.records import NOW, make_grant

EVENT = AuditEvent("token_issued", user="alice", client_id="app")


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[StoreHarness]:
    async for h in open_harness("postgres", tmp_path):
        yield h


async def test_retention_deletes_old_rows_and_keeps_each_chains_last(
    harness: StoreHarness,
) -> None:
    store, other = harness.store, await open_shared(harness, "instance-b")
    try:
        for _ in range(3):
            await store.audit.append(EVENT)
            await other.audit.append(EVENT)
        trail = store.audit
        assert await trail.expire(NOW - 3600) == 0
        assert await trail.expire(NOW + trail.retention + 60) == 4  # 2 of each chain
        await store.grants.add(make_grant(), audit=EVENT)
        for chain in (trail.chain.name, "instance-b"):
            verdict = verify(chain, await chain_lines(harness, chain))
            assert verdict.ok and verdict.first == 3, verdict
        assert verify(trail.chain.name, await chain_lines(harness, trail.chain.name)).last == 4
    finally:
        await other.close()


@pytest.mark.parametrize("landed", [True, False], ids=["landed", "lost"])
async def test_a_write_whose_outcome_was_unknown_leaves_no_fork_nor_gap(
    harness: StoreHarness, landed: bool
) -> None:
    store = harness.store
    assert isinstance(store, PostgresStore)
    real = store.connections.run
    failures: list[bool] = []

    async def unanswered(operation: Any, *, read: bool = False) -> Any:
        if read or not (failures and failures.pop()):
            return await real(operation, read=read)
        if landed:
            await real(operation)
        raise Unavailable("postgres: no answer within 5s")  # the caller cannot know which

    store.connections.run = unanswered  # type: ignore[method-assign]
    await store.grants.add(make_grant(), audit=EVENT)
    failures.append(True)
    with pytest.raises(Unavailable):
        await store.grants.put(make_grant(), audit=EVENT)
    await store.grants.put(make_grant(), audit=EVENT)
    verdict = verify(store.audit.chain.name, await chain_lines(harness, store.audit.chain.name))
    assert verdict.ok and verdict.records == 2 + landed, verdict
