"""The memory and file backends' counters (the contract they share with every backend is in
tests/store/test_base_contract.py): bounded memory under a flood of distinct keys."""

from __future__ import annotations

from oauthd.clock import FakeClock
from oauthd.store import MemoryCounters


async def test_ended_windows_are_forgotten_first_when_full() -> None:
    clock = FakeClock()
    counters = MemoryCounters(clock, max_keys=4)
    await counters.add("old-1", 10)
    await counters.add("old-2", 10)
    await counters.add("live", 100)
    await counters.add("live", 100)
    clock.advance(10)
    await counters.add("new-1", 10)
    await counters.add("new-2", 10)  # full: the two ended windows go
    assert len(counters) == 3
    assert (await counters.read("live")).value == 2


async def test_a_flood_of_live_keys_stays_bounded() -> None:
    counters = MemoryCounters(FakeClock(), max_keys=100)
    for i in range(1000):
        await counters.add(f"user:{i}", 900)
    assert len(counters) <= 100
    assert (await counters.read("user:999")).value == 1  # the newest are kept
