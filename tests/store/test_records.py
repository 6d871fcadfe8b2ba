"""`RecordMap`: freeze (writes land in an overlay that reads see first), the frozen
iterator (the state at freeze time), tombstones, size accounting, the chunked merge on
thaw (cancelled or not), and one scan at a time."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oauthd.store import records
from oauthd.store.records import RecordMap


def filled(**items: str) -> RecordMap[str]:
    m: RecordMap[str] = RecordMap()
    for key, value in items.items():
        m.set(key, value)
    return m


async def base_values(m: RecordMap[str]) -> list[str]:
    """What the base dict holds now (seen through the iterator of a fresh scan)."""
    async with m.frozen() as values:
        return sorted(values)


async def test_set_get_pop_and_len() -> None:
    m = filled(a="1", b="2")
    assert (m.get("a"), m.get("b"), m.get("c"), len(m)) == ("1", "2", None, 2)
    m.set("a", "1'")  # replacing does not grow
    assert (m.get("a"), len(m)) == ("1'", 2)
    assert m.pop("a") == "1'"
    assert (m.pop("a"), m.pop("nope"), m.get("a"), len(m)) == (None, None, None, 1)
    m.load("c", "3")
    assert (m.get("c"), len(m)) == ("3", 2)


async def test_reads_during_a_freeze_see_new_writes() -> None:
    m = filled(a="1", b="2", c="3")
    async with m.frozen():
        m.set("a", "1'")
        m.set("d", "4")
        assert m.pop("b") == "2"
        assert (m.get("a"), m.get("b"), m.get("c"), m.get("d")) == ("1'", None, "3", "4")
        assert len(m) == 3


async def test_the_frozen_iterator_sees_the_state_at_freeze_time() -> None:
    m = filled(a="1", b="2", c="3")
    async with m.frozen() as values:
        first = next(values)  # a scan already under way
        m.set("a", "1'")
        m.pop("b")
        m.pop("c")
        m.set("c", "3'")
        m.set("d", "4")
        assert sorted([first, *values]) == ["1", "2", "3"]


async def test_tombstones_hide_revive_and_count() -> None:
    m = filled(a="1")
    async with m.frozen():
        assert m.pop("a") == "1"
        assert (m.get("a"), len(m), m.pop("a")) == (None, 0, None)  # no double decrement
        m.set("a", "again")
        assert (m.get("a"), len(m)) == ("again", 1)
        m.set("new", "x")
        assert m.pop("new") == "x"  # a key that only ever lived in the overlay
        assert (m.get("new"), m.pop("new"), m.pop("never"), len(m)) == (None, None, None, 1)
    assert await base_values(m) == ["again"]
    assert len(m) == 1


async def test_thaw_merges_the_overlay_into_the_base() -> None:
    m = filled(a="1", b="2", c="3")
    async with m.frozen():
        m.set("a", "1'")
        m.pop("b")
        m.set("d", "4")
    assert await base_values(m) == ["1'", "3", "4"]
    m.set("e", "5")  # no overlay after thaw: straight into the base
    assert await base_values(m) == ["1'", "3", "4", "5"]
    assert len(m) == 4


async def test_the_chunked_merge_keeps_writes_made_while_it_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(records, "MERGE_CHUNK", 2)
    m = filled(**{f"k{i}": "old" for i in range(10)})
    await m.acquire_scan()
    m.freeze()
    for i in range(10):
        m.set(f"k{i}", "frozen-write")
    thaw = asyncio.create_task(m.thaw())
    await asyncio.sleep(0)  # the first chunks are merged; the rest still in the overlay
    assert not thaw.done()
    for i in range(0, 10, 2):
        m.set(f"k{i}", "thaw-write")  # some merged already, some not
    m.pop("k9")
    assert len(m) == 9
    await thaw
    expected = {f"k{i}": "thaw-write" if i % 2 == 0 else "frozen-write" for i in range(9)}
    assert {f"k{i}": m.get(f"k{i}") for i in range(9)} == expected
    assert m.get("k9") is None
    assert await base_values(m) == sorted(expected.values())


async def test_a_cancelled_thaw_still_merges_everything_and_releases_the_scan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(records, "MERGE_CHUNK", 2)
    m = filled(gone="x")
    await m.acquire_scan()
    m.freeze()
    for i in range(10):
        m.set(f"k{i}", str(i))
    m.pop("gone")
    thaw = asyncio.create_task(m.thaw())
    await asyncio.sleep(0)
    assert not thaw.done()
    thaw.cancel()
    with pytest.raises(asyncio.CancelledError):
        await thaw
    async with asyncio.timeout(1):  # the scan lock was released
        assert await base_values(m) == sorted(str(i) for i in range(10))
    assert len(m) == 10


async def test_a_scan_that_fails_or_is_cancelled_still_thaws() -> None:
    m = filled(a="1")
    with pytest.raises(RuntimeError):
        async with m.frozen():
            m.set("b", "2")
            raise RuntimeError("snapshot write failed")

    async def scan() -> None:
        async with m.frozen():
            m.set("c", "3")
            await asyncio.Event().wait()

    task = asyncio.create_task(scan())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(1):
        assert await base_values(m) == ["1", "2", "3"]


async def test_a_second_scan_waits_for_the_first() -> None:
    m = filled(a="1")
    order: list[str] = []
    release_first = asyncio.Event()

    async def first() -> None:
        async with m.frozen():
            order.append("first in")
            await release_first.wait()
            m.set("b", "2")
            order.append("first out")

    async def second() -> None:
        async with m.frozen() as values:
            order.append("second in")
            assert sorted(values) == ["1", "2"]  # sees what the first merged

    tasks = [asyncio.create_task(first()), asyncio.create_task(second())]
    for _ in range(5):
        await asyncio.sleep(0)
    assert order == ["first in"]
    release_first.set()
    await asyncio.gather(*tasks)
    assert order == ["first in", "first out", "second in"]


async def test_a_scan_given_up_before_freezing_releases_the_lock() -> None:
    m = filled(a="1")
    await m.acquire_scan()
    m.release_scan()
    async with asyncio.timeout(1):
        assert await base_values(m) == ["1"]


async def test_freeze_requires_the_scan() -> None:
    m = filled(a="1")
    with pytest.raises(AssertionError):
        m.freeze()


# A random mix of writes, freezes and thaws against a plain dict.
operations = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.sampled_from("abcdef"), st.integers(0, 9)),
        st.tuples(st.just("pop"), st.sampled_from("abcdef"), st.just(0)),
        st.tuples(st.just("toggle"), st.just(""), st.just(0)),  # freeze or thaw
    ),
    max_size=60,
)


async def run_against_model(ops: list[tuple[str, str, int]]) -> None:
    m: RecordMap[int] = RecordMap()
    model: dict[str, int] = {}
    frozen_view: list[int] | None = None
    scan = None
    for op, key, value in ops:
        if op == "set":
            m.set(key, value)
            model[key] = value
        elif op == "pop":
            assert m.pop(key) == model.pop(key, None)
        elif scan is None:
            await m.acquire_scan()
            scan, frozen_view = m.freeze(), list(model.values())
        else:
            assert sorted(scan) == sorted(frozen_view or [])
            await m.thaw()
            scan = None
        assert len(m) == len(model)
        assert {k: m.get(k) for k in "abcdef"} == {k: model.get(k) for k in "abcdef"}
    if scan is not None:
        await m.thaw()
    async with m.frozen() as values:
        assert sorted(values) == sorted(model.values())


@settings(max_examples=300, deadline=None)
@given(operations)
def test_behaves_like_a_dict_through_any_freeze_and_thaw(
    ops: list[tuple[str, str, int]],
) -> None:
    asyncio.run(run_against_model(ops))


async def test_a_value_read_recently_never_outlives_a_change() -> None:
    m: RecordMap[tuple[str]] = RecordMap(lambda v: v, lambda row: (row[0],))  # fresh on unpack
    m.set("a", ("1",))
    first = m.get("a")
    assert m.get("a") is first  # kept unpacked while it stays the same
    m.set("a", ("2",))
    assert m.get("a") == ("2",)
    m.pop("a")
    assert m.get("a") is None
    m.set("b", ("3",))
    assert m.get("b") == ("3",)
    async with m.frozen():
        m.set("b", ("4",))  # into the overlay
        assert m.get("b") == ("4",)
        m.pop("b")
        assert m.get("b") is None
    assert m.get("b") is None


def test_the_values_kept_unpacked_are_bounded() -> None:
    m: RecordMap[str] = RecordMap()
    for i in range(records.RECENT * 2):
        m.set(str(i), str(i))
        assert m.get(str(i)) == str(i)
    assert len(m._recent) == records.RECENT
    assert m.get("0") == "0"  # evicted, read again from the base
