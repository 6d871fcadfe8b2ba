"""Event-loop lag: a timer that should fire every PROBE_EVERY seconds fires late by as
long as something held the loop (a long callback, a garbage collection). The worst
lateness of each WINDOW is reported to the metrics (`oauthd_event_loop_lag_seconds`), so
that a stall between two scrapes is seen whatever the scrape interval."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

PROBE_EVERY = 0.1
WINDOW = 10.0

Report = Callable[[float], None]


@dataclass(slots=True)
class LagProbe:
    report: Report
    every: float = PROBE_EVERY
    window: float = WINDOW

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        worst, window_end = 0.0, loop.time() + self.window
        while True:
            due = loop.time() + self.every
            await asyncio.sleep(self.every)
            now = loop.time()
            worst = max(worst, now - due)
            if now >= window_end:
                self.report(worst)
                worst, window_end = 0.0, now + self.window


@contextlib.asynccontextmanager
async def watching(report: Report) -> AsyncIterator[None]:
    """Probe the running loop while the block runs; `report` gets each window's worst."""
    task = asyncio.create_task(LagProbe(report).run(), name="loop-lag")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
