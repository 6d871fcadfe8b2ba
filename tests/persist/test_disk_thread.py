"""`DiskThread`: calls run in order on one thread, results and errors come back to the
loop, a caller that stopped waiting is left alone, `stop` lets queued calls finish."""

from __future__ import annotations

import asyncio
import errno
import gc
import threading

import pytest

from oauthd.persist.disk_thread import DiskThread


async def test_calls_run_in_order_on_one_thread_and_return_their_results() -> None:
    worker = DiskThread("test-disk")
    seen: list[tuple[int, str]] = []

    def call(n: int) -> int:
        seen.append((n, threading.current_thread().name))
        return n * 10

    results = await asyncio.gather(*(worker.run(call, n) for n in range(5)))
    worker.stop()
    assert results == [0, 10, 20, 30, 40]
    assert [n for n, _ in seen] == [0, 1, 2, 3, 4]
    assert {name for _, name in seen} == {"test-disk"}


async def test_an_error_reaches_the_caller_and_the_thread_goes_on() -> None:
    worker = DiskThread("test-disk")

    def fail() -> None:
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(OSError, match="Input/output error"):
        await worker.run(fail)
    assert await worker.run(lambda: "still here") == "still here"
    worker.stop()


async def test_a_cancelled_caller_does_not_stop_the_call_or_the_next() -> None:
    worker = DiskThread("test-disk")
    gate, done = threading.Event(), []
    first = worker.run(lambda: gate.wait(5) and done.append(1))
    first.cancel()
    second = worker.run(lambda: done.append(2))
    gate.set()
    await second
    worker.stop()
    assert done == [1, 2]


async def test_stop_lets_queued_calls_finish_and_refuses_new_ones() -> None:
    worker = DiskThread("test-disk")
    done: list[int] = []
    pending = [worker.run(done.append, n) for n in range(3)]
    worker.stop()
    assert done == [0, 1, 2]
    await asyncio.gather(*pending)
    worker.stop()  # idempotent
    with pytest.raises(RuntimeError):
        worker.run(done.append, 4)


async def test_a_thread_dropped_without_stop_ends_when_it_is_collected() -> None:
    worker = DiskThread("test-disk-dropped")
    await worker.run(lambda: None)
    thread = worker._thread
    del worker
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()
