"""Background housekeeping: drop expired records from memory now and then, and (hourly)
remove the idle client registrations (`AuthServer.remove_idle_clients`).

Expired records are already invisible to every read; purging only frees memory, so a
failed purge is logged and retried on the next round. A backend outage is logged once
when it is first seen and once when a purge works again, not on every round."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable

from oauthd.store import Store, Unavailable

log = logging.getLogger("oauthd.housekeeping")

PURGE_EVERY = 60.0
SWEEP_EVERY = 3600.0  # the idle-client sweep scans clients (and grants): hourly is enough

Sweep = Callable[[], Awaitable[int]]


async def _purge_forever(store: Store, sweep: Sweep | None) -> None:
    unavailable = False  # the last round met an unavailable store (already logged)
    loop = asyncio.get_running_loop()
    swept_at = -math.inf  # the first sweep: in the first round
    while True:
        await asyncio.sleep(PURGE_EVERY)
        try:
            if sweep is not None and loop.time() - swept_at >= SWEEP_EVERY:
                swept_at = loop.time()
                await _sweep(sweep)
            removed = await store.purge_expired()
        except Unavailable as exc:
            if not unavailable:
                log.warning(
                    "purge of expired records skipped: store unavailable",
                    extra={"event": "purge.unavailable", "reason": exc.reason},
                )
            unavailable = True
            continue
        except Exception:
            log.exception("purge of expired records failed", extra={"event": "purge.failed"})
            continue
        if unavailable:
            log.info("purge works again", extra={"event": "purge.resumed"})
            unavailable = False
        if removed:
            log.info("expired records purged", extra={"event": "purge", "removed": removed})


async def _sweep(sweep: Sweep) -> None:
    """One idle-client sweep; a store outage is the purge's to report (it comes next)."""
    removed = await sweep()
    if removed:
        log.info("idle clients removed", extra={"event": "clients.swept", "removed": removed})


@contextlib.asynccontextmanager
async def housekeeping(store: Store, sweep: Sweep | None = None) -> AsyncIterator[None]:
    """Purge `store` every PURGE_EVERY seconds while the block runs, and run `sweep`
    every SWEEP_EVERY seconds (first in the first round)."""
    task = asyncio.create_task(_purge_forever(store, sweep), name="purge-expired")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
