"""oauthd/store/copy.py: the checks around the copy, on memory stores (every backend pair
runs in tests/test_state_copy.py): an empty target first, a count after."""

from __future__ import annotations

import pytest

from oauthd.clock import FakeClock
from oauthd.model import Record
from oauthd.store import MemoryStore
from oauthd.store.copy import CountMismatch, TargetNotEmpty, copy_state
from tests.support.records import NOW, make_client, make_grant


def ignore(kind: str, done: int, total: int) -> None:
    return None


async def test_a_target_with_live_records_is_refused_before_anything_is_written() -> None:
    clock = FakeClock()
    source, target = MemoryStore(clock), MemoryStore(clock)
    await source.grants.put(make_grant(expires_at=NOW + 60))
    await target.clients.put(make_client())
    with pytest.raises(TargetNotEmpty, match=r"\(clients\)") as raised:
        await copy_state(source, target, ignore)
    assert raised.value.kinds == ["clients"] and await target.grants.count() == 0


async def test_expired_records_in_the_target_do_not_make_it_busy() -> None:
    clock = FakeClock()
    source, target = MemoryStore(clock), MemoryStore(clock)
    await source.grants.put(make_grant(expires_at=NOW + 60))
    await target.grants.put(make_grant(expires_at=NOW - 1))
    copied = await copy_state(source, target, ignore)
    assert copied["grants"] == 1 and sum(copied.values()) == 1


async def test_a_merge_expects_at_least_what_was_there_before() -> None:
    clock = FakeClock()
    source, target = MemoryStore(clock), MemoryStore(clock)
    shared = make_grant(expires_at=NOW + 60)
    await source.grants.put(shared)
    await target.grants.put(shared)
    await target.grants.put(make_grant(expires_at=NOW + 60))
    assert (await copy_state(source, target, ignore, merge=True))["grants"] == 1
    assert await target.grants.count() == 2


async def test_a_merge_that_loses_records_already_there_is_a_mismatch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    source, target = MemoryStore(clock), MemoryStore(clock)
    await source.grants.put(make_grant(expires_at=NOW + 60))
    for _ in range(3):
        await target.grants.put(make_grant(expires_at=NOW + 60))

    put = target.grants.put

    async def replace_all(record: Record) -> None:
        for old in [g async for g in target.grants.scan()]:
            await target.grants.delete(old.key)
        await put(record)

    monkeypatch.setattr(target.grants, "put", replace_all)
    with pytest.raises(CountMismatch, match="grants expected 3, found 1"):
        await copy_state(source, target, ignore, merge=True)


async def test_a_record_that_expires_during_the_copy_is_not_expected() -> None:
    clock = FakeClock()
    source, target = MemoryStore(clock), MemoryStore(clock)
    await source.grants.put(make_grant(expires_at=NOW + 1))
    await source.grants.put(make_grant(expires_at=NOW + 60))

    def progress(kind: str, done: int, total: int) -> None:
        if kind == "grants" and done == total:
            clock.advance(2)

    assert (await copy_state(source, target, progress))["grants"] == 2
    assert len([g async for g in target.grants.scan()]) == 1
