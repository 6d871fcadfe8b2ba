"""`DiskThread`: one thread that runs blocking file calls in the order they were asked for,
for the journal's writes and fsyncs.

Lighter than a one-worker `ThreadPoolExecutor` with `run_in_executor`: no
`concurrent.futures.Future` (its condition lock and callbacks, taken on both threads) per
call, only a queue entry and one `call_soon_threadsafe`. The journal calls it once per
group commit; less Python on the worker is less time the event loop waits for the GIL.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def _work(jobs: queue.SimpleQueue[_Job | None]) -> None:
    while (job := jobs.get()) is not None:
        loop, future, call, args = job
        try:
            result, error = call(*args), None
        except BaseException as exc:  # handed to the caller, as an executor would
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_settle, future, result, error)
        del job, future, result, error


class DiskThread:
    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        # The thread holds the queue, not this object: one that is dropped without `stop`
        # (a store never closed) ends its thread when it is collected. A daemon thread, so
        # that it never holds up the interpreter's exit either.
        self._thread = threading.Thread(target=_work, args=(self._jobs,), name=name, daemon=True)
        weakref.finalize(self, self._jobs.put, None)
        self._started = False
        self._stopped = False

    def run(self, call: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """`call(*args)` on the thread, after what was asked before; its result or error."""
        if self._stopped:
            raise RuntimeError("disk thread stopped")
        if not self._started:
            self._started = True
            self._thread.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, call, args))
        return future

    def stop(self) -> None:
        """Let what was asked finish, then end the thread (waits for it); idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._started:
            self._jobs.put(None)
            self._thread.join()
