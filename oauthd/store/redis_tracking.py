"""The redis backend's invalidation listener for the read cache (`store/cache.py`):
server-assisted client-side caching ("client tracking") in broadcast mode.

One connection of its own (not from the pool), in RESP2: `CLIENT TRACKING ON REDIRECT
<its own id> BCAST PREFIX <prefix>grants: PREFIX <prefix>mcp_sessions:`, then `SUBSCRIBE
__redis__:invalidate`. From then on the server publishes, on that channel, the name of
every key under those prefixes that any client changes, deletes or lets expire, and a nil
message when the database is flushed (`FLUSHDB`, `FLUSHALL`): the cache drops the key, or
everything. BCAST messages of a command are written to every tracking connection in one
step, before the command's reply is sent (Redis's `beforeSleep`).

A PING every `HEARTBEAT` seconds (allowed in subscribed mode; its pong comes through the
same stream) must be answered within the store's timeout; a connection that went silent
(a frozen server, a dead network path) is dropped like a closed one, and the cache is
bypassed until a new one has subscribed.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.maint_notifications import MaintNotificationsConfig

from oauthd.store.base import finish_within
from oauthd.store.cache import HEARTBEAT, ReadCache

CHANNEL = "__redis__:invalidate"


class RedisInvalidations:
    """A `Listen` for `ReadCache`: one tracking connection per session."""

    def __init__(self, url: str, prefix: str, kinds: tuple[str, ...], timeout: float) -> None:
        self._timeout = timeout
        self._pool = aioredis.ConnectionPool.from_url(
            url,
            protocol=2,  # invalidations as pub/sub messages on the connection itself
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )
        self._prefixes = [(f"{prefix}{kind}:".encode(), kind) for kind in kinds]
        self.client_id: int | None = None  # the server's id of the live connection
        self._heard = 0.0  # monotonic time of the last message on it

    async def __call__(self, cache: ReadCache) -> None:
        conn = self._pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            await finish_within(self._subscribe(conn), self._timeout)
            cache.up()
            await self._serve(conn, cache)
        finally:
            self.client_id = None
            await conn.disconnect(nowait=True)

    async def _subscribe(self, conn: AbstractConnection) -> None:
        await conn.connect()  # type: ignore[no-untyped-call]
        await conn.send_command("CLIENT", "ID")
        client_id = int(await conn.read_response())
        prefixes = [word for prefix, _ in self._prefixes for word in (b"PREFIX", prefix)]
        await conn.send_command(
            "CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST", *prefixes
        )
        await conn.read_response()  # OK (an error reply is raised)
        await conn.send_command("SUBSCRIBE", CHANNEL)
        reply = await conn.read_response()
        if not (isinstance(reply, list) and reply[:1] == [b"subscribe"]):
            raise ConnectionError(f"unexpected answer to SUBSCRIBE: {reply!r}")
        self.client_id = client_id

    async def _serve(self, conn: AbstractConnection, cache: ReadCache) -> None:
        """Deliver messages until the connection fails or stays silent."""
        reader = asyncio.create_task(self._read(conn, cache), name="oauthd-cache-redis-reader")
        patience = max(HEARTBEAT, self._timeout)
        try:
            while True:
                pinged = time.monotonic()
                await finish_within(conn.send_command("PING", check_health=False), self._timeout)
                await asyncio.wait({reader}, timeout=patience)
                if reader.done():
                    reader.result()  # the connection's error
                    raise ConnectionError("the listener stopped")
                if self._heard < pinged:
                    raise TimeoutError(f"no answer to PING within {patience:g}s")
        finally:
            reader.cancel()
            await asyncio.wait({reader}, timeout=self._timeout)

    async def _read(self, conn: AbstractConnection, cache: ReadCache) -> None:
        while True:
            reply: Any = await conn.read_response(timeout=math.inf)
            self._heard = time.monotonic()
            if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                self._deliver(cache, reply[2])

    def _deliver(self, cache: ReadCache, names: list[bytes] | None) -> None:
        if names is None:  # the database was flushed
            cache.flush()
            return
        for name in names:
            for prefix, kind in self._prefixes:
                if name.startswith(prefix):
                    cache.invalidate(kind, name[len(prefix) :].decode())
                    break
