"""`Limiter`: fixed windows over the store's counters, failing over to this process while
the store cannot count."""

from __future__ import annotations

import asyncio
import logging

import pytest

from oauthd.clock import FakeClock
from oauthd.oauth.ratelimit import Limit, Limiter, retry_after, too_many
from oauthd.store import Count, Counters, MemoryCounters, Unavailable

LIMIT = Limit("test", 3, 60)


class FlakyCounters(Counters):
    """Counters in memory that raise `Unavailable` while `down`."""

    def __init__(self, clock: FakeClock) -> None:
        self.inner = MemoryCounters(clock)
        self.down = False
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise Unavailable("redis: no answer within 2s")

    async def add(self, key: str, window: float) -> Count:
        self._check()
        return await self.inner.add(key, window)

    async def take_back(self, key: str) -> None:
        self._check()
        await self.inner.take_back(key)

    async def read(self, key: str) -> Count:
        self._check()
        return await self.inner.read(key)

    async def reset(self, key: str) -> None:
        self._check()
        await self.inner.reset(key)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def shared(clock: FakeClock) -> FlakyCounters:
    return FlakyCounters(clock)


@pytest.fixture
def limiter(shared: FlakyCounters, clock: FakeClock) -> Limiter:
    return Limiter(shared, clock)


async def test_count_says_when_the_limit_is_used_up(limiter: Limiter, clock: FakeClock) -> None:
    assert await limiter.count(LIMIT, "k") is None
    assert await limiter.count(LIMIT, "k") is None
    clock.advance(10)
    assert await limiter.count(LIMIT, "k") == pytest.approx(50)  # the third: used up
    assert await limiter.count(LIMIT, "other") is None


async def test_admit_refuses_only_what_is_over(limiter: Limiter, clock: FakeClock) -> None:
    assert [await limiter.admit(LIMIT, "k") for _ in range(3)] == [None, None, None]
    assert await limiter.admit(LIMIT, "k") == pytest.approx(60)
    clock.advance(60)
    assert await limiter.admit(LIMIT, "k") is None


async def test_take_back_undoes_one_admitted_attempt(limiter: Limiter) -> None:
    for _ in range(3):
        assert await limiter.admit(LIMIT, "k") is None
        await limiter.take_back(LIMIT, "k")  # e.g. the right password
    assert [await limiter.admit(LIMIT, "k") for _ in range(3)] == [None, None, None]
    assert await limiter.admit(LIMIT, "k") is not None


async def test_concurrent_attempts_get_no_more_than_the_limit(limiter: Limiter) -> None:
    waits = await asyncio.gather(*(limiter.admit(LIMIT, "k") for _ in range(50)))
    assert sum(w is None for w in waits) == 3


async def test_forget_starts_over(limiter: Limiter) -> None:
    for _ in range(4):
        await limiter.admit(LIMIT, "k")
    await limiter.forget(LIMIT, "k")
    assert await limiter.admit(LIMIT, "k") is None


async def test_known_over_needs_no_io(
    limiter: Limiter, shared: FlakyCounters, clock: FakeClock
) -> None:
    assert limiter.known_over(LIMIT, "k") is None
    for _ in range(3):
        await limiter.count(LIMIT, "k")
    calls = shared.calls
    assert limiter.known_over(LIMIT, "k") == pytest.approx(60)
    assert limiter.known_over(LIMIT, "other") is None
    assert shared.calls == calls
    clock.advance(60)
    assert limiter.known_over(LIMIT, "k") is None


async def test_an_unavailable_store_fails_over_to_this_process(
    limiter: Limiter, shared: FlakyCounters, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither open (no limit) nor closed (an error): the limit still holds, per process."""
    shared.down = True
    with caplog.at_level(logging.WARNING, "oauthd.ratelimit"):
        assert await limiter.count(LIMIT, "k") is None
        calls = shared.calls
        assert await limiter.count(LIMIT, "k") is None
        assert shared.calls == calls  # for a moment, the store is not waited on again
        limiter._shared_down_until = 0.0  # the moment has passed: tried, still down
        assert await limiter.count(LIMIT, "k") is not None
        assert shared.calls == calls + 1
        assert await limiter.admit(LIMIT, "k") is not None
        await limiter.forget(LIMIT, "k")
        assert await limiter.admit(LIMIT, "k") is None
    warnings = [r for r in caplog.records if r.name == "oauthd.ratelimit"]
    assert len(warnings) == 1  # once a minute, not once per failure
    assert "redis: no answer" in warnings[0].reason  # type: ignore[attr-defined]
    limiter._shared_down_until = 0.0
    shared.down = False  # back: the shared counts again
    assert (await shared.inner.read("test:k")).value == 0
    assert await limiter.admit(LIMIT, "k") is None
    assert (await shared.inner.read("test:k")).value == 1


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert retry_after(0.01) == {"Retry-After": "1"}
    assert retry_after(59.2) == {"Retry-After": "60"}
    page = too_many("Slow down.", 30, page=True)
    assert (page.status, page.headers, page.delivery.value) == (429, {"Retry-After": "30"}, "page")
    assert too_many("slow down", 5).delivery.value == "json"
