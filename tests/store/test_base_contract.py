"""The store contract (`oauthd/store/base.py`), as ONE suite that every backend runs: each
test class takes its store from a fixture parametrised over `tests.support.backends`
(`harness`: every contract backend; `durable_harness`; `file_harness`, ...). Record-level
tests run over all seven tables."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from oauthd.clock import FakeClock
from oauthd.model import Consent, Record, consent_key
from oauthd.persist import journal, snapshot
from oauthd.store import Conflict, FileStore, MemoryStore, Store, Table, Unavailable, memory
from oauthd.store.base import Count
from oauthd.store.file import make_engine
from tests.support.backends import (
    BY_NAME,
    CONTRACT_BACKENDS,
    DURABILITY_BACKENDS,
    FILE_BACKENDS,
    StoreHarness,
    open_harness,
)
from tests.support.records import DAY, KINDS, NOW, make, make_grant, make_mcp_session, nulled
from tests.support.services import service_missing
from tests.support.wait import eventually


def harness_fixture(name: str, backends: list[str], durable: bool = False) -> Callable[..., Any]:
    """The fixture `name`: a store of each of `backends` (a test each); with `durable`, a
    backend that is not skips with its reason."""

    @pytest.fixture(name=name, params=backends)
    async def fixture(
        request: pytest.FixtureRequest, tmp_path: Path
    ) -> AsyncIterator[StoreHarness]:
        backend = BY_NAME[request.param]
        if durable and not backend.durable:
            pytest.skip(backend.why_not_durable)
        async for h in open_harness(request.param, tmp_path):
            yield h

    return fixture


harness = harness_fixture("harness", CONTRACT_BACKENDS)  # every contract backend
durable_harness = harness_fixture("durable_harness", DURABILITY_BACKENDS, durable=True)
file_harness = harness_fixture("file_harness", FILE_BACKENDS)  # journaled and snapshot-only
journaled_harness = harness_fixture("journaled_harness", ["file"])
snapshot_harness = harness_fixture("snapshot_harness", ["file-snapshot"])
every_kind = pytest.mark.parametrize("kind", KINDS)


def table(store: Store, kind: str) -> Table[Any]:
    return {t.kind: t for t in store.tables()}[kind]


def bumped(record: Record) -> Record:
    """A new record with `created_at` one higher (a float field every kind has)."""
    return dataclasses.replace(record, created_at=record.created_at + 1)


class Spy:
    """An update function that records whether it was called."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, record: Record) -> Record:
        self.calls += 1
        return bumped(record)


async def counts(store: Store) -> dict[str, int]:
    return {t.kind: await t.count() for t in store.tables()}


class TestStore:
    """What every backend promises (fixture `harness`)."""

    # -- get / add / put ------------------------------------------------------------------

    @every_kind
    async def test_add_then_get_returns_an_equal_record(
        self, harness: StoreHarness, kind: str
    ) -> None:
        t, record = table(harness.store, kind), make(kind)
        assert await t.get(record.key) is None
        await t.add(record)
        assert await t.get(record.key) == record
        assert await counts(harness.store) == {k: int(k == kind) for k in KINDS}

    @every_kind
    async def test_add_raises_conflict_on_a_live_key(
        self, harness: StoreHarness, kind: str
    ) -> None:
        t, first = table(harness.store, kind), make(kind)
        await t.add(first)
        with pytest.raises(Conflict):
            await t.add(bumped(first))
        assert await t.get(first.key) == first
        assert await t.count() == 1

    @every_kind
    async def test_add_succeeds_over_an_expired_key(self, harness: StoreHarness, kind: str) -> None:
        t, old = table(harness.store, kind), make(kind, expires_at=NOW + 10)
        await t.add(old)
        harness.clock.advance(10)  # expires_at == now: expired ("at or before")
        new = dataclasses.replace(bumped(old), expires_at=NOW + 100)
        await t.add(new)
        assert await t.get(old.key) == new
        assert await t.count() == 1

    @every_kind
    async def test_put_inserts_and_replaces_whole(self, harness: StoreHarness, kind: str) -> None:
        t, first = table(harness.store, kind), make(kind)
        await t.put(first)
        second = nulled(bumped(first))
        await t.put(second)
        assert await t.get(first.key) == second
        assert await t.count() == 1

    @every_kind
    async def test_put_many_inserts_and_replaces_each_with_its_own_expiry(
        self, harness: StoreHarness, kind: str
    ) -> None:
        t, first = table(harness.store, kind), make(kind)
        await t.put(first)
        records = [nulled(bumped(first)), make(kind, expires_at=NOW + 10), make(kind)]
        await t.put_many(records)
        assert [await t.get(r.key) for r in records] == records
        assert await t.count() == 3
        harness.clock.advance(10)
        assert await t.get(records[1].key) is None
        assert await t.get(records[2].key) == records[2]

    @every_kind
    async def test_none_fields_round_trip_and_none_expiry_never_expires(
        self, harness: StoreHarness, kind: str
    ) -> None:
        t, record = table(harness.store, kind), nulled(make(kind))
        await t.put(record)
        harness.clock.advance(100 * 365 * DAY)
        assert await t.get(record.key) == record
        assert await harness.store.purge_expired() == 0

    async def test_tables_are_separate_even_for_one_key(self, harness: StoreHarness) -> None:
        store = harness.store
        grant, session = make_grant(id="same-key"), make_mcp_session(session_key="same-key")
        await store.grants.add(grant)
        await store.mcp_sessions.add(session)  # no Conflict: another table
        assert await store.mcp_sessions.take("same-key") == session
        assert await store.grants.get("same-key") == grant

    async def test_consents_to_several_resources_are_records_of_their_own(
        self, harness: StoreHarness
    ) -> None:
        """A consent is keyed per (user, client, resource); one to `/mcp` keeps the key of
        format 3 (user and client alone), so that consents stored before it are found."""
        store = harness.store
        notes = Consent("alice", "c1", ("mcp",), NOW, NOW + DAY)
        files = Consent("alice", "c1", ("files:read",), NOW, NOW + DAY, resource="/files/mcp")
        await store.consents.add(notes)
        await store.consents.add(files)  # no Conflict: another key
        assert await store.consents.get(consent_key("alice", "c1", "/mcp")) == notes
        assert await store.consents.get("alice\x1fc1") == notes
        assert await store.consents.get(consent_key("alice", "c1", "/files/mcp")) == files
        assert await store.consents.count() == 2

    # -- take / delete ----------------------------------------------------------------------

    @every_kind
    async def test_take_returns_the_record_once(self, harness: StoreHarness, kind: str) -> None:
        t, record = table(harness.store, kind), make(kind)
        assert await t.take(record.key) is None
        await t.add(record)
        assert await t.take(record.key) == record
        assert await t.get(record.key) is None
        assert await t.take(record.key) is None
        assert await t.count() == 0

    @every_kind
    async def test_concurrent_takes_return_the_record_exactly_once(
        self, harness: StoreHarness, kind: str
    ) -> None:
        t, record = table(harness.store, kind), make(kind)
        await t.add(record)
        taken = await asyncio.gather(*(t.take(record.key) for _ in range(20)))
        assert [r for r in taken if r is not None] == [record]
        assert await t.count() == 0

    @every_kind
    async def test_delete_reports_whether_a_live_record_was_there(
        self, harness: StoreHarness, kind: str
    ) -> None:
        t, record = table(harness.store, kind), make(kind)
        assert await t.delete(record.key) is False
        await t.add(record)
        assert await t.delete(record.key) is True
        assert await t.get(record.key) is None
        assert await t.delete(record.key) is False
        assert await t.count() == 0

    @every_kind
    async def test_delete_of_an_expired_record_returns_false(
        self, harness: StoreHarness, kind: str
    ) -> None:
        t, record = table(harness.store, kind), make(kind, expires_at=NOW + 10)
        await t.add(record)
        harness.clock.advance(10)
        assert await t.delete(record.key) is False
        assert await t.get(record.key) is None

    # -- expiry -----------------------------------------------------------------------------

    @every_kind
    async def test_expired_records_are_invisible_before_purge(
        self, harness: StoreHarness, kind: str
    ) -> None:
        t, record = table(harness.store, kind), make(kind, expires_at=NOW + 60)
        await t.add(record)
        harness.clock.advance(59.5)
        assert await t.get(record.key) == record
        harness.clock.advance(0.5)
        spy = Spy()
        assert await t.get(record.key) is None
        assert await t.take(record.key) is None
        assert await t.update(record.key, spy) is None
        assert spy.calls == 0
        assert await t.count() == 1  # still stored: count includes what is not purged yet

    async def test_purge_expired_removes_only_expired_records(self, harness: StoreHarness) -> None:
        store = harness.store
        expiring = [make(kind, expires_at=NOW + 60) for kind in KINDS]
        live = [make(kind, expires_at=NOW + 61) for kind in KINDS]
        forever = [make(kind, expires_at=None) for kind in KINDS]
        for record in expiring + live + forever:
            await table(store, record.KIND).add(record)
        assert await store.purge_expired() == 0
        assert await store.census() == await counts(store) == dict.fromkeys(KINDS, 3)
        harness.clock.advance(60)
        assert await store.census() == dict.fromkeys(KINDS, 3)  # expired, not purged yet
        assert await store.purge_expired() == len(KINDS)
        assert await store.census() == await counts(store) == dict.fromkeys(KINDS, 2)
        for record in live + forever:
            assert await table(store, record.KIND).get(record.key) == record
        assert await store.purge_expired() == 0

    async def test_purge_keeps_and_does_not_count_a_record_replaced_while_it_ran(
        self, harness: StoreHarness, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        if not isinstance(harness.store, MemoryStore):
            pytest.skip("the interleaving is specific to the in-process tables")
        monkeypatch.setattr(memory, "PURGE_CHUNK", 1)  # yield between records
        store = harness.store
        old = [make_grant(expires_at=NOW + 1) for _ in range(10)]
        for record in old:
            await store.grants.add(record)
        harness.clock.advance(1)
        purge = asyncio.create_task(store.purge_expired())
        for _ in range(3):
            await asyncio.sleep(0)  # the purge is now scanning the grants
        assert not purge.done()
        renewed = dataclasses.replace(old[0], expires_at=NOW + DAY)
        await store.grants.put(renewed)
        assert await purge == len(old) - 1
        assert await store.grants.get(renewed.id) == renewed
        assert await store.grants.count() == 1

    # -- update -----------------------------------------------------------------------------

    @every_kind
    async def test_update_stores_and_returns_the_new_record(
        self, harness: StoreHarness, kind: str
    ) -> None:
        t, record = table(harness.store, kind), make(kind)
        await t.add(record)
        result = await t.update(record.key, bumped)
        assert result == bumped(record)
        assert await t.get(record.key) == result
        assert await t.count() == 1

    @every_kind
    async def test_update_of_an_absent_key_returns_none_without_calling(
        self, harness: StoreHarness, kind: str
    ) -> None:
        t, spy = table(harness.store, kind), Spy()
        assert await t.update("no-such-key", spy) is None
        assert spy.calls == 0
        assert await t.count() == 0

    @every_kind
    async def test_update_returning_its_argument_writes_nothing(
        self, harness: StoreHarness, kind: str
    ) -> None:
        t, record = table(harness.store, kind), make(kind)
        await t.add(record)
        writes = harness.writes()
        assert await t.update(record.key, lambda r: r) == record
        assert await t.get(record.key) == record
        if writes is None:
            pytest.skip(f"{harness.name} cannot count its writes")
        assert harness.writes() == writes

    @every_kind
    async def test_update_must_keep_the_key(self, harness: StoreHarness, kind: str) -> None:
        t, record = table(harness.store, kind), make(kind)
        await t.add(record)
        moved = make(kind)  # same kind, another key
        with pytest.raises(ValueError):
            await t.update(record.key, lambda _: moved)
        assert await t.get(record.key) == record
        assert await t.get(moved.key) is None
        assert await t.count() == 1

    @every_kind
    async def test_concurrent_updates_lose_no_change(
        self, harness: StoreHarness, kind: str
    ) -> None:
        t, record = table(harness.store, kind), make(kind)
        await t.add(record)
        results = await asyncio.gather(*(t.update(record.key, bumped) for _ in range(50)))
        final = await t.get(record.key)
        assert final is not None and final.created_at == record.created_at + 50
        # every update saw a different predecessor: none was computed from a stale copy
        assert sorted(r.created_at for r in results) == [
            record.created_at + i for i in range(1, 51)
        ]

    async def test_update_racing_a_take_never_revives_the_record(
        self, harness: StoreHarness
    ) -> None:
        t, record = harness.store.codes, make("codes")
        await t.add(record)
        updates = [t.update(record.key, bumped) for _ in range(5)]
        taken, *_ = await asyncio.gather(t.take(record.key), *updates)
        assert taken is not None and taken.key == record.key
        assert await t.get(record.key) is None
        assert await t.count() == 0

    # -- scan -------------------------------------------------------------------------------

    @every_kind
    async def test_scan_yields_every_live_record_once_and_no_expired_one(
        self, harness: StoreHarness, kind: str
    ) -> None:
        t = table(harness.store, kind)
        assert [r async for r in t.scan()] == []
        expiring = [make(kind, expires_at=NOW + 60) for _ in range(3)]
        live = [make(kind, expires_at=NOW + 61) for _ in range(5)] + [nulled(make(kind))]
        for record in expiring + live:
            await t.add(record)
        gone = make(kind)
        await t.add(gone)
        await t.delete(gone.key)
        harness.clock.advance(60)
        scanned = [r async for r in t.scan()]
        assert sorted(r.key for r in scanned) == sorted(r.key for r in live)
        assert {r.key: r for r in scanned} == {r.key: r for r in live}

    async def test_scan_is_consistent_under_concurrent_writes(
        self, harness: StoreHarness, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Writes while a scan runs: untouched records come exactly once, a touched one at
        most once and in one of its versions; the memory tables show the start exactly."""
        monkeypatch.setattr(memory, "SCAN_CHUNK", 3)  # many event-loop turns
        t = harness.store.grants
        before = [make_grant(expires_at=NOW + DAY) for _ in range(60)]
        for record in before:
            await t.add(record)
        deleted, updated, untouched = before[:10], before[10:20], before[20:]
        added = [make_grant() for _ in range(10)]

        async def consume() -> list[Record]:
            seen = []
            async for record in t.scan():
                seen.append(record)
                await asyncio.sleep(0)
            return seen

        async def write() -> None:
            for old, new in zip(deleted, added, strict=True):
                await asyncio.sleep(0)
                assert await t.delete(old.key)
                await t.add(new)
            for record in updated:
                await asyncio.sleep(0)
                await t.update(record.key, bumped)

        scanned, _ = await asyncio.gather(consume(), write())
        keys = [r.key for r in scanned]
        assert len(keys) == len(set(keys)), "a record came twice"
        assert {r.key for r in untouched} <= set(keys)
        assert set(keys) <= {r.key for r in before + added}
        versions = {r.key: (r, bumped(r)) for r in updated}
        for record in scanned:
            assert record in versions.get(record.key, (record,))
        if isinstance(harness.store, MemoryStore):
            assert {r.key: r for r in scanned} == {r.key: r for r in before}
        assert await t.count() == 60

    async def test_a_scan_stopped_early_holds_nothing_up(self, harness: StoreHarness) -> None:
        t = harness.store.grants
        for _ in range(10):
            await t.add(make_grant(expires_at=NOW + 60))
        async for _ in t.scan():
            break  # neither closed nor run to the end
        harness.clock.advance(60)
        assert await asyncio.wait_for(harness.store.purge_expired(), 2) == 10
        assert [r async for r in t.scan()] == []

    async def test_scan_lets_the_event_loop_run(
        self, harness: StoreHarness, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(memory, "SCAN_CHUNK", 100)
        t = harness.store.grants
        for _ in range(1000):
            await t.add(make_grant())
        turns = 0

        async def ticker() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        started = turns
        count = 0
        async for _ in t.scan():
            count += 1  # no await here: only the scan itself yields to the loop
        ticking.cancel()
        assert count == 1000
        assert turns - started >= 5, "the scan held the loop for the whole table"

    # -- housekeeping -------------------------------------------------------------------------

    async def test_a_healthy_store_pings_and_reports_healthy(self, harness: StoreHarness) -> None:
        await harness.store.ping()
        status = harness.store.status()
        assert status.healthy and status.detail is None
        assert status.backend == harness.name.split("-")[0]

    async def test_check_reports_a_reachable_backend_healthy(self, harness: StoreHarness) -> None:
        """`check` (/readyz) agrees with `status` on a healthy store, also when asked
        often and at once (shared backends reuse one ping for a second: `Probe`). Backends
        that go away and come back: tests/e2e/test_backend_outage.py."""
        checks = await asyncio.gather(*(harness.store.check() for _ in range(5)))
        checks.append(await harness.store.check())
        for status in checks:
            assert status.healthy and status.detail is None
            assert status.backend == harness.name.split("-")[0]

    async def test_close_is_idempotent(self, harness: StoreHarness) -> None:
        await harness.store.close()
        await harness.store.close()


class TestCounters:
    """The rate limits' counters (`Counters` in oauthd/store/base.py), on every backend
    (fixture `harness`)."""

    async def test_add_counts_from_one_within_a_window(self, harness: StoreHarness) -> None:
        counters = harness.store.counters
        assert await counters.read("login:alice") == Count(0, 0.0)
        first = await counters.add("login:alice", 60)
        assert first.value == 1 and first.resets_in == pytest.approx(60, abs=0.01)
        harness.clock.advance(20)
        for expected in (2, 3):
            count = await counters.add("login:alice", 60)
            assert count.value == expected and count.resets_in == pytest.approx(40, abs=0.01)
        read = await counters.read("login:alice")
        assert read.value == 3 and read.resets_in == pytest.approx(40, abs=0.01)
        assert (await counters.read("login:alice")).value == 3  # reading changes nothing

    async def test_a_new_window_opens_after_one_ends(self, harness: StoreHarness) -> None:
        counters = harness.store.counters
        for _ in range(3):
            await counters.add("k", 60)
        harness.clock.advance(60)
        assert await counters.read("k") == Count(0, 0.0)
        count = await counters.add("k", 30)  # the new window has the new length
        assert count.value == 1 and count.resets_in == pytest.approx(30, abs=0.01)

    async def test_reset_ends_the_window(self, harness: StoreHarness) -> None:
        counters = harness.store.counters
        await counters.add("k", 60)
        await counters.add("k", 60)
        await counters.reset("k")
        await counters.reset("never-counted")
        assert await counters.read("k") == Count(0, 0.0)
        assert (await counters.add("k", 60)).value == 1

    async def test_take_back_undoes_one_add_of_the_open_window(self, harness: StoreHarness) -> None:
        counters = harness.store.counters
        await counters.take_back("k")  # no window open: none is opened
        assert await counters.read("k") == Count(0, 0.0)
        await counters.add("k", 60)
        await counters.add("k", 60)
        await counters.take_back("k")
        assert (await counters.read("k")).value == 1
        await counters.take_back("k")
        await counters.take_back("k")  # never below 0
        assert (await counters.read("k")).value == 0
        count = await counters.add("k", 60)  # the same window goes on
        assert count.value == 1 and count.resets_in == pytest.approx(60, abs=0.01)
        harness.clock.advance(60)
        await counters.take_back("k")  # the window ended: nothing to take back
        assert (await counters.add("k", 60)).value == 1

    async def test_concurrent_adds_and_take_backs_lose_nothing(self, harness: StoreHarness) -> None:
        counters = harness.store.counters
        await asyncio.gather(*(counters.add("k", 60) for _ in range(30)))
        await asyncio.gather(
            *(counters.take_back("k") for _ in range(10)),
            *(counters.add("k", 60) for _ in range(5)),
        )
        assert (await counters.read("k")).value == 25

    async def test_keys_are_separate(self, harness: StoreHarness) -> None:
        counters = harness.store.counters
        for key in ("user:alice", "user:Alice", "address:192.0.2.1", "user:alice:x"):
            assert (await counters.add(key, 60)).value == 1

    async def test_concurrent_adds_each_get_their_own_count(self, harness: StoreHarness) -> None:
        counters = harness.store.counters
        counts_seen = await asyncio.gather(*(counters.add("k", 60) for _ in range(50)))
        assert sorted(c.value for c in counts_seen) == list(range(1, 51))
        assert (await counters.read("k")).value == 50

    async def test_counters_are_not_records(self, harness: StoreHarness) -> None:
        """Never a table's record and never a write of one: no journal record on the file
        backend, nothing for a scan, a count or a copy."""
        writes = harness.writes()
        for i in range(5):
            await harness.store.counters.add(f"k{i}", 60)
        assert harness.writes() == writes
        assert await counts(harness.store) == dict.fromkeys(KINDS, 0)

    async def test_instances_on_a_shared_backend_share_counts(self, harness: StoreHarness) -> None:
        if harness.backend.storage is None:
            pytest.skip(f"{harness.name} keeps its counters in process, by design")
        other = await harness.backend.open(harness.state, harness.clock)
        try:
            await harness.store.counters.add("k", 60)
            assert (await other.counters.add("k", 60)).value == 2
            assert (await harness.store.counters.read("k")).value == 2
            await other.counters.reset("k")
            assert (await harness.store.counters.read("k")).value == 0
        finally:
            await other.close()


class TestDurability:
    """Durable backends return the same records after close and reopen (`durable_harness`,
    which skips the backends that are not durable, with the reason)."""

    async def test_every_kind_survives_a_reopen_equal(self, durable_harness: StoreHarness) -> None:
        h = durable_harness
        records = [make(kind) for kind in KINDS] + [nulled(make(kind)) for kind in KINDS]
        for record in records:
            await table(h.store, record.KIND).add(record)
        before = await counts(h.store)
        store = await h.reopen()
        for record in records:
            assert await table(store, record.KIND).get(record.key) == record
        assert await counts(store) == before == dict.fromkeys(KINDS, 2)

    async def test_updates_deletes_and_takes_survive_a_reopen(
        self, durable_harness: StoreHarness
    ) -> None:
        h = durable_harness
        kept, updated, deleted, taken, replaced = ([make(k) for k in KINDS] for _ in range(5))
        for record in kept + updated + deleted + taken + replaced:
            await table(h.store, record.KIND).add(record)
        for record in updated:
            await table(h.store, record.KIND).update(record.key, bumped)
        for record in deleted:
            assert await table(h.store, record.KIND).delete(record.key)
        for record in taken:
            assert await table(h.store, record.KIND).take(record.key) == record
        for record in replaced:
            await table(h.store, record.KIND).put(nulled(record))
        store = await h.reopen()
        for record in kept:
            assert await table(store, record.KIND).get(record.key) == record
        for record in updated:
            assert await table(store, record.KIND).get(record.key) == bumped(record)
        for record in replaced:
            assert await table(store, record.KIND).get(record.key) == nulled(record)
        for record in deleted + taken:
            assert await table(store, record.KIND).get(record.key) is None
        assert await counts(store) == dict.fromkeys(KINDS, 3)

    async def test_expired_records_stay_expired_after_a_reopen(
        self, durable_harness: StoreHarness
    ) -> None:
        h = durable_harness
        expiring = [make(kind, expires_at=NOW + 60) for kind in KINDS]
        live = [make(kind, expires_at=NOW + 3600) for kind in KINDS]
        for record in expiring + live:
            await table(h.store, record.KIND).add(record)
        h.clock.advance(60)
        store = await h.reopen()
        for record in expiring:
            assert await table(store, record.KIND).get(record.key) is None
        for record in live:
            assert await table(store, record.KIND).get(record.key) == record
        await store.purge_expired()
        assert await counts(store) == dict.fromkeys(KINDS, 1)

    async def test_writes_after_a_reopen_survive_the_next_one(
        self, durable_harness: StoreHarness
    ) -> None:
        h = durable_harness
        first, second = make_grant(), make_grant()
        await h.store.grants.add(first)
        await (await h.reopen()).grants.add(second)
        await h.store.grants.update(first.id, bumped)
        store = await h.reopen()
        assert await store.grants.get(first.id) == bumped(first)
        assert await store.grants.get(second.id) == second


def disk_full(*_: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


class TestFileBackend:
    """What the contract says of the file backend in particular: expiry filtering on load,
    a returned write surviving a crash, disk trouble surfacing as `Unavailable`."""

    async def test_expired_records_are_not_loaded(self, file_harness: StoreHarness) -> None:
        h = file_harness
        expiring = [make(kind, expires_at=NOW + 60) for kind in KINDS]
        live = [make(kind, expires_at=None) for kind in KINDS]
        for record in expiring + live:
            await table(h.store, record.KIND).add(record)
        store = h.store
        assert isinstance(store, FileStore)
        assert await store.engine.save()  # the snapshot holds the records while still live
        h.clock.advance(60)
        store = await h.reopen()
        assert await counts(store) == dict.fromkeys(KINDS, 1)  # not merely invisible

    async def test_a_returned_write_survives_a_crash(self, tmp_path: Path) -> None:
        """Journal mode: no snapshot after the writes, no close; only the journal has them."""

        def engine(name: str) -> Any:
            hour = 3600.0  # no background snapshot during the test
            return make_engine(
                tmp_path / name, journaled=True, interval=hour, debounce=hour, max_wait=hour
            )

        store = await FileStore.open(engine("live"), FakeClock())
        try:
            records = [make(k, expires_at=NOW + DAY) for k in KINDS] + [
                nulled(make(k)) for k in KINDS
            ]
            for record in records:
                await table(store, record.KIND).add(record)
            gone = make_grant()
            await store.grants.add(gone)
            assert await store.grants.take(gone.id) == gone
            expiring = make_grant(expires_at=NOW + 60)
            await store.grants.add(expiring)
            shutil.copytree(tmp_path / "live", tmp_path / "crashed")  # what a power cut leaves
        finally:
            await store.close()
        crashed = await FileStore.open(engine("crashed"), FakeClock(NOW + 60))
        try:
            for record in records:
                assert await table(crashed, record.KIND).get(record.key) == record
            assert await counts(crashed) == dict.fromkeys(KINDS, 2)  # no `gone`, no `expiring`
        finally:
            await crashed.close()

    async def test_a_failed_journal_write_makes_writes_unavailable(
        self, journaled_harness: StoreHarness, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        h = journaled_harness
        store = h.store
        assert isinstance(store, FileStore)
        kept = make_grant()
        await store.grants.add(kept)
        # The disk is full: the journal's fdatasync fails, and so does the fsync of a
        # snapshot (which would otherwise reopen the journal in the background).
        monkeypatch.setattr(journal.os, "fdatasync", disk_full)
        monkeypatch.setattr(journal.os, "fsync", disk_full)

        failed = make_grant()
        with pytest.raises(Unavailable):
            await store.grants.add(failed)
        # a 503 changes nothing (#11): the change whose fsync failed is undone in memory
        assert await store.grants.get(failed.id) is None
        status = store.status()
        assert not status.healthy and status.detail and "journal" in status.detail
        assert await store.check() == status
        with pytest.raises(Unavailable) as pinged:
            await store.ping()
        assert pinged.value.retry_after > 0

        await self._every_write_refused_before_memory(store, kept)

        monkeypatch.undo()  # space again: the next snapshot covers all, the journal reopens
        assert await store.engine.save()
        await eventually(lambda: store.status().healthy, within=5.0)  # after its backoff
        assert (await store.check()).healthy
        later = make_grant()
        await store.grants.add(later)
        store = await h.reopen()
        assert await store.grants.get(kept.id) == kept
        assert await store.grants.get(later.id) == later

    async def test_a_failed_snapshot_makes_writes_unavailable_in_snapshot_mode(
        self, snapshot_harness: StoreHarness, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store = snapshot_harness.store
        assert isinstance(store, FileStore)
        kept = make_grant()
        await store.grants.add(kept)
        monkeypatch.setattr(snapshot.os, "fsync", disk_full)
        assert not await store.engine.save()
        assert not store.status().healthy
        with pytest.raises(Unavailable):
            await store.ping()
        await self._every_write_refused_before_memory(store, kept)
        monkeypatch.undo()
        assert await store.engine.save()
        await store.grants.add(make_grant())
        assert store.status().healthy

    @staticmethod
    async def _every_write_refused_before_memory(store: FileStore, kept: Record) -> None:
        """Each kind of write raises `Unavailable` and changes nothing, not even memory."""
        new, spy = make_grant(), Spy()
        seq, before = store.engine.seq, await counts(store)
        attempts: list[Callable[[], Awaitable[object]]] = [
            lambda: store.grants.add(new),
            lambda: store.grants.put(new),
            lambda: store.grants.put(bumped(kept)),
            lambda: store.grants.take(kept.key),
            lambda: store.grants.update(kept.key, spy),
            lambda: store.grants.delete(kept.key),
        ]
        for attempt in attempts:
            with pytest.raises(Unavailable):
                await attempt()
        assert spy.calls == 0
        assert await store.grants.get(new.id) is None
        assert await store.grants.get(kept.key) == kept
        assert await counts(store) == before
        assert store.engine.seq == seq

    async def test_close_right_after_a_first_change_does_not_hang(
        self, file_harness: StoreHarness
    ) -> None:
        """The saver is cancelled in the very turn its wake-up completes (on Python 3.11,
        `asyncio.wait_for` can swallow that cancellation)."""
        store = await file_harness.reopen()  # a saver task that has not run yet
        await store.grants.add(make_grant())  # dirty, and the saver's wake-up is set
        await asyncio.sleep(0)  # the saver starts waiting with a timeout; the wait is done
        closing = asyncio.create_task(store.close())
        done, _ = await asyncio.wait({closing}, timeout=2)
        assert closing in done, "close() hangs: the snapshot saver ignored its cancellation"


def test_an_absent_service_skips_unless_services_are_required() -> None:
    with pytest.raises(pytest.skip.Exception, match="redis: connection refused"):
        service_missing("redis: connection refused", required=False)
    with pytest.raises(pytest.fail.Exception, match="OAUTHD_REQUIRE_SERVICES=1"):
        service_missing("redis: connection refused", required=True)
