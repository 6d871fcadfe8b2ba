"""The record counts `/metrics` shows (`oauthd_records`), read so that a scrape stays
fast at any size.

Counting is free in memory, but on a shared backend it walks the keyspace or the table:
at a million grants a Redis census takes seconds. So a scrape starts a census (unless one
runs, or the last one ended too recently: each waits CENSUS_SPACING times as long as the
last one took) and waits for it at most CENSUS_WAIT; a census that takes longer finishes
in the background, and the scrape shows the counts of the last one that finished. A
failed census (the store is down) keeps the last counts: monitoring matters most during an
outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("oauthd.metrics")

CENSUS_WAIT = 1.0  # seconds a scrape waits for a census before showing the last counts
CENSUS_SPACING = 10.0  # a census that took T seconds is not started again within 10 T


class RecordSource(Protocol):
    """The store, as far as the metrics see it."""

    async def census(self) -> dict[str, int]: ...


class Census:
    def __init__(
        self, source: RecordSource, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._source = source
        self._monotonic = monotonic
        self.counts: dict[str, int] = {}
        self.failing = False  # the last census failed: `counts` are older than it
        self._running: asyncio.Task[None] | None = None
        self._next_at = -float("inf")
        self._closed = False

    async def read(self) -> dict[str, int]:
        """The counts, as fresh as CENSUS_WAIT allows."""
        if self._running is not None and self._running.done():
            self._running = None  # cancelled before it ran (its `finally` never did)
        if self._running is None and not self._closed and self._monotonic() >= self._next_at:
            self._running = asyncio.create_task(self._count(), name="records-census")
        if self._running is not None:
            await asyncio.wait({self._running}, timeout=CENSUS_WAIT)
        return self.counts

    async def _count(self) -> None:
        started = self._monotonic()
        try:
            self.counts = await self._source.census()
            self.failing = False
        except Exception as exc:  # the store is down: the last counts stay
            self.failing = True
            log.debug("record census failed: %s", exc, extra={"event": "metrics.census"})
        finally:
            took = self._monotonic() - started
            self._next_at = self._monotonic() + CENSUS_SPACING * took
            self._running = None

    async def close(self) -> None:
        self._closed = True  # no census starts on a store being closed
        if self._running is not None:
            self._running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._running
