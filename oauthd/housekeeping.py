"""Background housekeeping: drop expired records from memory now and then.

Expired records are already invisible to every read; purging only frees memory, so a
failed purge is logged and retried on the next round. A backend outage is logged once
when it is first seen and once when a purge works again, not on every round."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from oauthd.store import Store, Unavailable

log = logging.getLogger("oauthd.housekeeping")

PURGE_EVERY = 60.0


async def _purge_forever(store: Store) -> None:
    unavailable = False  # the last round met an unavailable store (already logged)
    while True:
        await asyncio.sleep(PURGE_EVERY)
        try:
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


@contextlib.asynccontextmanager
async def housekeeping(store: Store) -> AsyncIterator[None]:
    """Purge `store` every PURGE_EVERY seconds while the block runs."""
    task = asyncio.create_task(_purge_forever(store), name="purge-expired")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
