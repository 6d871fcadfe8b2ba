"""The shared backends' trail (`oauthd/store/audit.py`, on redis and postgres) beyond the
contract: `[audit] enabled = false` keeps the log line only, and the offline reader lists
every instance's chain."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from oauthd.audit import AuditEvent
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
