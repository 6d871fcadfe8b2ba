"""`ReadDeadlines`: the upstream read timeout without a timer per read, and the aiohttp
switch that sends a known-length answer's headers with its body."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from oauthd.proxy.deadlines import IDLE, ReadDeadlines, Watch
from oauthd.proxy.relay import _HeadersWithBody


async def test_a_wait_longer_than_the_timeout_is_cancelled_and_recognised() -> None:
    deadlines = ReadDeadlines(0.2)
    deadlines.start()
    try:
        watch = deadlines.watch()
        started = time.monotonic()
        watch.waiting_since = asyncio.get_running_loop().time()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.sleep(5)
        elapsed = time.monotonic() - started
        assert deadlines.expired(watch)  # ours: withdrawn, the handler may answer
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        assert 0.2 <= elapsed < 1.5, elapsed  # timeout + one tick (0.05 s) + a loaded CI
        deadlines.release(watch)
    finally:
        await deadlines.stop()


async def test_an_idle_watch_is_never_cancelled() -> None:
    """Disarmed (not waiting for the upstream, e.g. writing to the store): left alone."""
    deadlines = ReadDeadlines(0.1)
    deadlines.start()
    try:
        watch = deadlines.watch()
        assert watch.waiting_since == IDLE
        await asyncio.sleep(0.4)
        assert not watch.expired
        deadlines.release(watch)
    finally:
        await deadlines.stop()


async def test_a_wait_that_ends_in_time_is_left_alone() -> None:
    deadlines = ReadDeadlines(1.0)
    deadlines.start()
    try:
        watch = deadlines.watch()
        loop = asyncio.get_running_loop()
        for _ in range(15):  # 15 x 0.1 s of waits: longer than the timeout in all
            watch.waiting_since = loop.time()
            await asyncio.sleep(0.1)
            watch.waiting_since = IDLE
        assert not watch.expired
        deadlines.release(watch)
    finally:
        await deadlines.stop()


async def test_another_cancellation_is_not_taken_for_a_timeout() -> None:
    deadlines = ReadDeadlines(10)
    deadlines.start()
    try:

        async def handler() -> bool:
            watch = deadlines.watch()
            watch.waiting_since = asyncio.get_running_loop().time()
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                return deadlines.expired(watch)
            finally:
                deadlines.release(watch)
            return True

        task = asyncio.create_task(handler())
        await asyncio.sleep(0.05)
        task.cancel()  # a shutdown, say
        assert await task is False
    finally:
        await deadlines.stop()


async def test_a_timeout_never_swallows_another_cancellation() -> None:
    """The sweeper and a shutdown cancel the same task before it runs again: the handler
    must not answer 504 and carry on; the shutdown's cancellation goes on."""
    deadlines = ReadDeadlines(60)
    outcome: list[str] = []
    watches: list[Watch] = []

    async def handler() -> None:
        watch = deadlines.watch()
        watches.append(watch)
        watch.waiting_since = asyncio.get_running_loop().time()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            if not deadlines.expired(watch):
                outcome.append("cancelled")
                raise
            outcome.append("timed out")
        finally:
            deadlines.release(watch)

    task = asyncio.create_task(handler())
    await asyncio.sleep(0.05)  # the handler waits
    watches[0].expired = True  # what the sweeper does...
    task.cancel()
    task.cancel()  # ...and a shutdown, in the same step
    with pytest.raises(asyncio.CancelledError):
        await task
    assert outcome == ["cancelled"]


def test_aiohttp_still_has_the_switch_that_defers_headers() -> None:
    """`_send_headers_immediately` is private to aiohttp (web.Response sets it False); if a
    new aiohttp drops it, known-length answers would silently cost a send more."""
    assert web.StreamResponse._send_headers_immediately is True
    assert web.Response._send_headers_immediately is False
    assert _HeadersWithBody._send_headers_immediately is False
