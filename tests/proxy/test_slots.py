"""oauthd/proxy/slots.py: free slots taken without waiting, waiters served first come first
served, and no slot lost or doubled when a waiter gives up (its timeout) at the moment a
slot is handed to it. Through the daemon: test_relay_slots.py."""

from __future__ import annotations

import asyncio

import pytest

from oauthd.proxy.slots import CallSlots


def test_free_slots_are_taken_at_once_until_none_is_left() -> None:
    slots = CallSlots(2)
    assert slots.take_now() and slots.take_now()
    assert not slots.take_now()
    slots.free()
    assert slots.take_now()


async def test_waiters_get_freed_slots_in_turn_and_newcomers_queue_behind_them() -> None:
    slots = CallSlots(1)
    assert slots.take_now()
    first = asyncio.ensure_future(slots.wait())
    second = asyncio.ensure_future(slots.wait())
    await asyncio.sleep(0)
    slots.free()
    await asyncio.sleep(0)
    assert first.done() and not second.done()
    assert not slots.take_now()  # one still waits: it comes first
    slots.free()
    await asyncio.sleep(0)
    assert second.done()
    slots.free()
    assert slots.take_now()  # back to one free slot, never two
    assert not slots.take_now()


async def test_a_waiter_that_times_out_holds_no_slot() -> None:
    slots = CallSlots(1)
    assert slots.take_now()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await slots.wait()
    slots.free()
    assert slots.take_now()
    assert not slots.take_now()


async def test_a_slot_handed_to_a_waiter_cancelled_meanwhile_goes_to_the_next() -> None:
    slots = CallSlots(1)
    assert slots.take_now()
    leaving = asyncio.ensure_future(slots.wait())
    staying = asyncio.ensure_future(slots.wait())
    await asyncio.sleep(0)
    slots.free()  # handed to `leaving`, which has not run yet ...
    leaving.cancel()  # ... and is cancelled before it does
    await asyncio.sleep(0)
    assert leaving.cancelled()
    await asyncio.sleep(0)
    assert staying.done() and not staying.cancelled()
    assert not slots.take_now()  # `staying` holds the one slot
    slots.free()
    assert slots.take_now()
