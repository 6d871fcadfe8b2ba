"""Records as rows: every kind round-trips through its row, a row is a plain tuple the
collector stops tracking, and records created at run time through a table leave nothing
for a full collection to walk (issue #15 item 3: the mechanism, not a timing)."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from oauthd.clock import SystemClock
from oauthd.store.file import FileStore, make_engine
from oauthd.store.records import RecordMap
from oauthd.store.rows import LAYOUTS
from tests.support.records import KINDS, make, make_grant, nulled

FAR = 4e9


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("empty", [False, True], ids=["valued", "nulled"])
def test_every_kind_round_trips_through_an_untracked_row(kind: str, empty: bool) -> None:
    record = nulled(make(kind)) if empty else make(kind)
    layout = LAYOUTS[kind]
    row = layout.pack(record)
    assert type(row) is tuple
    assert layout.unpack(row) == record
    assert layout.expires_at(row) == record.expires_at
    gc.collect()  # a tuple is untracked once its items are, which one collection may find
    gc.collect()  # in the other order
    assert not gc.is_tracked(row), "a field the collector must track: records would cost it"


def test_the_base_dict_is_tracked_from_the_start_so_a_freeze_takes_it() -> None:
    m: RecordMap[str] = RecordMap()
    assert gc.is_tracked(m._base)  # an untracked dict would be tracked (young) on first use


async def test_records_created_at_run_time_leave_nothing_for_a_full_collection(
    tmp_path: Path,
) -> None:
    engine = make_engine(tmp_path, journaled=False, interval=3600, debounce=3600, max_wait=3600)
    store = await FileStore.open(engine, SystemClock())
    try:
        gc.collect()
        before = len(gc.get_objects())
        for _ in range(5000):
            await store.grants.put(make_grant(expires_at=FAR))
        gc.collect()
        gc.collect()
        assert await store.grants.count() == 5000
        assert len(gc.get_objects()) - before < 1000  # not one object per grant
        grant = make_grant(expires_at=FAR)
        await store.grants.put(grant)
        assert await store.grants.get(grant.id) == grant  # a fresh record, equal
    finally:
        await store.close()


@pytest.mark.parametrize(
    "overrides",
    [
        {"previous_refresh_hash": b"", "rotated_at": 0.0},
        {"access_hash": b"a", "refresh_hash": b"r" * 300, "previous_refresh_hash": b"p" * 7},
        {"expires_at": None, "rotated_at": None, "previous_refresh_hash": None},
    ],
)
def test_a_packed_grant_keeps_every_digest_length_and_none(overrides: dict[str, object]) -> None:
    grant = make_grant(**overrides)
    layout = LAYOUTS[grant.KIND]
    assert layout.unpack(layout.pack(grant)) == grant
