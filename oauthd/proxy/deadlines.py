"""`ReadDeadlines`: the upstream read timeout, without a loop timer per read.

aiohttp's `sock_read` re-arms a timer on every read from the upstream, several times per
proxied request; at proxy rates that costs more than the bearer check. Here a handler arms
its `Watch` only while it waits for the upstream (the answer's headers, then each chunk)
and disarms it as soon as the wait ends; one sweeper task, ticking at a quarter of the
timeout (at most once a second), cancels the handlers that have been waiting too long. A
wait therefore ends between `timeout` and `timeout + tick`. Because a watch is armed only
around an upstream wait, the cancellation can only land there, never inside a store write.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass
from typing import Any

IDLE = math.inf  # `waiting_since` of a watch that is not waiting for the upstream


@dataclass(slots=True, eq=False)
class Watch:
    task: asyncio.Task[Any]
    waiting_since: float = IDLE
    expired: bool = False


class ReadDeadlines:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._tick = min(1.0, timeout / 4)
        self._watches: set[Watch] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    def watch(self) -> Watch:
        """A watch for the calling handler; `release` it when the request is done."""
        task = asyncio.current_task()
        assert task is not None
        watch = Watch(task)
        self._watches.add(watch)
        return watch

    def release(self, watch: Watch) -> None:
        self._watches.discard(watch)

    def expired(self, watch: Watch) -> bool:
        """After a `CancelledError`: True if this sweeper caused it and nobody else also
        cancelled the task (the sweeper's cancellation is then withdrawn, so the handler can
        answer); False if another cancellation (a shutdown, say) must go on."""
        if not watch.expired:
            return False
        return watch.task.uncancel() == 0

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._tick)
            limit = loop.time() - self.timeout
            for watch in self._watches:
                if watch.waiting_since < limit and not watch.expired:
                    watch.expired = True
                    watch.task.cancel()
