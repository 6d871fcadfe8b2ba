"""The record counts of /metrics: a slow census never holds a scrape longer than
CENSUS_WAIT, finishes in the background, and is not started again too soon."""

from __future__ import annotations

import asyncio

import pytest

from oauthd import metrics_census
from oauthd.metrics_census import Census


class SlowStore:
    def __init__(self) -> None:
        self.started = 0
        self.release = asyncio.Event()

    async def census(self) -> dict[str, int]:
        self.started += 1
        await self.release.wait()
        return {"grants": self.started}


async def test_a_slow_census_answers_with_the_last_counts_and_lands_for_the_next_scrape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics_census, "CENSUS_WAIT", 0.05)
    monkeypatch.setattr(metrics_census, "CENSUS_SPACING", 1e6)  # one census in this test
    store = SlowStore()
    census = Census(store)
    assert await asyncio.wait_for(census.read(), 1) == {}  # nothing counted yet
    assert await asyncio.wait_for(census.read(), 1) == {}  # the same census, still running
    assert store.started == 1
    store.release.set()
    await asyncio.sleep(0)
    assert await census.read() == {"grants": 1}  # the next scrape has it
    assert not census.failing
    await census.close()
    assert await census.read() == {"grants": 1} and store.started == 1  # none after close


async def test_a_census_is_spaced_by_ten_times_its_duration() -> None:
    now = [100.0]
    store = SlowStore()
    store.release.set()

    class Timed(SlowStore):
        async def census(self) -> dict[str, int]:
            now[0] += 2.0  # this census takes two seconds
            return await store.census()

    census = Census(Timed(), monotonic=lambda: now[0])
    assert await census.read() == {"grants": 1}
    now[0] += 19.0  # 19 s after a 2 s census: too soon
    assert await census.read() == {"grants": 1} and store.started == 1
    now[0] += 1.0
    assert await census.read() == {"grants": 2}


async def test_close_stops_a_running_census() -> None:
    store = SlowStore()
    census = Census(store)
    scrape = asyncio.create_task(census.read())
    for _ in range(2):  # the scrape starts the census, which starts counting
        await asyncio.sleep(0)
    assert store.started == 1
    await census.close()
    assert await asyncio.wait_for(scrape, 1) == {}  # the scrape ends with the census
    store.release.set()
    await asyncio.sleep(0)
    assert census.counts == {}  # cancelled: it never lands
