"""`CallSlots`: the `upstream.max_connections` calls a resource may have at its upstream at
once. A free slot is taken by a plain call (`take_now`), with no coroutine: that is every
call but those that find all slots busy, which wait in turn (`wait`). An
`asyncio.Semaphore` would cost two coroutines per call on the proxy's hot path."""

from __future__ import annotations

import asyncio
from collections import deque


class CallSlots:
    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()

    def take_now(self) -> bool:
        """A free slot, taken; False when none is free or others already wait for one."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def wait(self) -> None:
        """Wait, first come first served, until a slot is handed over (then it is the
        caller's). Cancelled (a timeout), the caller holds none: a slot handed over at that
        moment goes on to the next waiter."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.free()  # handed over, but its taker has gone
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def free(self) -> None:
        """A slot given back: to the first live waiter, else to the free ones."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1
