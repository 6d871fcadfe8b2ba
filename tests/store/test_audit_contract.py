"""The audit part of the store contract (`oauthd/store/base.py`: every write's `audit=`),
run on every backend: one record per write that changed something, with the event's
fields, in the change's own step; none for a write that changed nothing; one chain that
`verify` passes, also under concurrent writes and across a reopen. Records are read back
through what each backend offers (`tests/support/audit_records.py`)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from oauthd.audit import AuditEvent, verify
from oauthd.model import Record
from oauthd.store import Conflict, Store, Table
from tests.support.audit_records import audit_lines, audit_records
from tests.support.backends import BY_NAME, CONTRACT_BACKENDS, StoreHarness, open_harness
from tests.support.records import make

EVENT = AuditEvent(
    "token_issued",
    user="alice",
    client_id="app-1",
    resource="https://as.example/mcp",
    grant="abcd1234",
    reason="granted",
    detail={"scopes": "read write", "count": 2},
)


@pytest.fixture(params=CONTRACT_BACKENDS)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreHarness]:
    async for h in open_harness(request.param, tmp_path):
        yield h


@pytest.fixture(params=[n for n in CONTRACT_BACKENDS if BY_NAME[n].durable])
async def durable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreHarness]:
    async for h in open_harness(request.param, tmp_path):
        yield h


def grants(store: Store) -> Table[Any]:
    return store.grants


def bumped(record: Record) -> Record:
    return dataclasses.replace(record, created_at=record.created_at + 1)


def carries(record: dict[str, Any], event: AuditEvent) -> bool:
    return all(record.get(name) == value for name, value in event.fields().items())


async def verified(harness: StoreHarness) -> int:
    """The number of records of the store's chain, after checking that it verifies."""
    lines = await audit_lines(harness)
    verdict = verify(harness.store.audit.chain.name, lines)
    assert verdict.ok, verdict.problem
    return verdict.records


async def each_write(t: Table[Any], audit: Any) -> list[str]:
    """One write of each kind, with `audit=`; the names in order."""
    first, second = make("grants"), make("grants")
    await t.add(first, audit=audit)
    await t.put(second, audit=audit)
    assert await t.update(first.key, bumped, audit=audit) is not None
    assert await t.take(first.key, audit=audit) is not None
    assert await t.delete(second.key, audit=audit)
    return ["add", "put", "update", "take", "delete"]


class TestAuditRecords:
    async def test_each_write_kind_writes_one_record_with_the_events_fields(
        self, harness: StoreHarness
    ) -> None:
        t = grants(harness.store)
        before = len(await audit_records(harness))
        done = []
        for name, write in await self._one_at_a_time(t):
            await write()
            done.append(name)
            records = await audit_records(harness)
            assert len(records) == before + len(done), f"after {done}"
            assert carries(records[-1], EVENT), records[-1]
        assert await verified(harness) == before + 5

    @staticmethod
    async def _one_at_a_time(t: Table[Any]) -> list[tuple[str, Any]]:
        first, second = make("grants"), make("grants")

        async def update() -> None:
            assert await t.update(first.key, bumped, audit=EVENT) is not None

        async def take() -> None:
            assert await t.take(first.key, audit=EVENT) is not None

        async def delete() -> None:
            assert await t.delete(second.key, audit=EVENT)

        return [
            ("add", lambda: t.add(first, audit=EVENT)),
            ("put", lambda: t.put(second, audit=EVENT)),
            ("update", update),
            ("take", take),
            ("delete", delete),
        ]

    async def test_a_write_that_changes_nothing_writes_no_record(
        self, harness: StoreHarness
    ) -> None:
        t, record = grants(harness.store), make("grants")
        await t.add(record)  # no audit=: no record
        with pytest.raises(Conflict):
            await t.add(bumped(record), audit=EVENT)
        assert await t.take("absent", audit=EVENT) is None
        assert not await t.delete("absent", audit=EVENT)
        assert await t.update("absent", bumped, audit=EVENT) is None
        assert await t.update(record.key, lambda r: r, audit=EVENT) == record
        assert await audit_records(harness) == []
        await t.put(bumped(record), audit=EVENT)  # the chain starts after the failures
        assert [r["n"] for r in await audit_records(harness)] == [1]
        assert await verified(harness) == 1

    async def test_a_function_audit_gets_the_written_record(self, harness: StoreHarness) -> None:
        t, seen = grants(harness.store), []

        def audit(record: Record) -> AuditEvent:
            seen.append(record)
            return AuditEvent("grant_changed", grant=record.key[:8], detail={"at": 1})

        first, second = make("grants"), make("grants")
        await t.add(first, audit=audit)
        await t.put(second, audit=audit)
        new = await t.update(first.key, bumped, audit=audit)
        taken = await t.take(first.key, audit=audit)
        assert await t.delete(second.key, audit=audit)
        assert seen[:2] == [first, second]
        assert seen[2:] == [new, taken, second]  # the new one, then the removed ones
        records = await audit_records(harness)
        assert [r["grant"] for r in records] == [r.key[:8] for r in seen]
        assert await verified(harness) == 5

    async def test_a_function_returning_none_writes_the_change_without_a_record(
        self, harness: StoreHarness
    ) -> None:
        t = grants(harness.store)
        await each_write(t, lambda _: None)
        assert await audit_records(harness) == []

    async def test_concurrent_audited_writes_make_one_chain_that_verifies(
        self, harness: StoreHarness
    ) -> None:
        t = grants(harness.store)
        records = [make("grants") for _ in range(200)]
        await asyncio.gather(*(t.add(r, audit=EVENT) for r in records))
        assert await verified(harness) == 200
        assert [r["n"] for r in await audit_records(harness)] == list(range(1, 201))

    async def test_append_alone_writes_a_record(self, harness: StoreHarness) -> None:
        await harness.store.audit.append(EVENT)
        await harness.store.audit.append(AuditEvent("login_failed", user="bob"))
        records = await audit_records(harness)
        assert [r["event"] for r in records] == ["token_issued", "login_failed"]
        assert carries(records[0], EVENT)
        assert await verified(harness) == 2


class TestAuditDurability:
    async def test_records_survive_a_reopen_and_the_chain_continues(
        self, durable: StoreHarness
    ) -> None:
        await each_write(grants(durable.store), EVENT)
        await durable.reopen()
        await durable.store.audit.append(EVENT)
        await grants(durable.store).add(make("grants"), audit=EVENT)
        assert [r["n"] for r in await audit_records(durable)] == list(range(1, 8))
        assert await verified(durable) == 7
