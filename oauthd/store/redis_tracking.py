"""The redis backend's invalidation listener for the read cache (`store/cache.py`):
server-assisted client-side caching ("client tracking") in broadcast mode.

One connection of its own (not from the pool), in RESP2: `CLIENT TRACKING ON REDIRECT
<its own id> BCAST PREFIX <prefix>grants: PREFIX <prefix>mcp_sessions:`, then `SUBSCRIBE
__redis__:invalidate`. From then on the server publishes, on that channel, the name of
every key under those prefixes that any client changes, deletes or lets expire, and a nil
message when the database is flushed (`FLUSHDB`, `FLUSHALL`): the cache drops the key, or
everything. BCAST messages of a command are queued for every tracking connection in the
`beforeSleep` of the event-loop turn that ran the command, before its reply is written.

PINGs go on the same connection (allowed in subscribed mode; the pong comes through the
same stream, as `["pong", <argument>]`), each with a number of its own:

- a heartbeat every `PING_EVERY` seconds: every message keeps the cache fresh
  (`cache.alive`), and a ping not answered within the store's timeout ends the session
  (a frozen server, a dead network path), like a closed connection: the cache is bypassed
  until a new one has subscribed;
- a write's confirmation (`confirm`): sent once the write's reply came, so Redis reads
  it after the write's turn, whose invalidations it had already queued for every tracking
  connection (ours included, ahead of the pong). When the pong is here, this process's
  copy was delivered, and every other instance's is in its socket. Nobody else's
  invalidation of the same key can stand in for it.
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
from oauthd.store.cache import PING_EVERY, ReadCache

CHANNEL = "__redis__:invalidate"


class RedisInvalidations:
    """A `Listen` for `ReadCache`: one tracking connection per session."""

    grace = 0.0  # the PING ordering covers every instance (module docstring)

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
        self._conn: AbstractConnection | None = None  # the live, subscribed connection
        self._sent = 0  # the number of the last PING sent
        # PINGs not answered yet: when each was sent, and the future its pong sets
        self._pings: dict[int, tuple[float, asyncio.Future[None]]] = {}

    async def __call__(self, cache: ReadCache) -> None:
        conn = self._pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            await finish_within(self._subscribe(conn), self._timeout)
            self._conn = conn
            cache.up()
            await self._serve(conn, cache)
        finally:
            self._conn = None
            self.client_id = None
            pings, self._pings = self._pings, {}
            for _, answer in pings.values():
                if not answer.done():
                    answer.set_exception(ConnectionError("the listener's connection ended"))
                    answer.exception()  # retrieved: nobody may be waiting for it
            await conn.disconnect(nowait=True)

    async def confirm(self) -> None:
        conn = self._conn
        if conn is None:
            return  # not subscribed: nothing is cached, nothing to confirm
        await self._ping(conn)

    def _ping(self, conn: AbstractConnection) -> asyncio.Future[None]:
        """Send a PING (in a task of its own, so a write that blocks does not hold the
        caller) and return the future its pong sets."""
        self._sent += 1
        number = self._sent
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings[number] = (time.monotonic(), answer)
        sending = asyncio.ensure_future(
            finish_within(conn.send_command("PING", number, check_health=False), self._timeout)
        )

        def sent(task: asyncio.Future[None]) -> None:
            if task.cancelled() or task.exception() is not None:
                self._pings.pop(number, None)
                if not answer.done():
                    answer.set_exception(ConnectionError("PING not sent"))
                    answer.exception()  # retrieved: nobody may be waiting for it

        sending.add_done_callback(sent)
        return answer

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
        """Deliver messages and ping every `PING_EVERY` seconds until the connection fails
        or a ping stays unanswered for the store's timeout."""
        reader = asyncio.create_task(self._read(conn, cache), name="oauthd-cache-redis-reader")
        try:
            while True:
                self._ping(conn)
                await asyncio.wait({reader}, timeout=PING_EVERY)
                if reader.done():
                    reader.result()  # the connection's error
                    raise ConnectionError("the listener stopped")
                if self._pings:
                    oldest = min(sent for sent, _ in self._pings.values())
                    if time.monotonic() - oldest > self._timeout:
                        raise TimeoutError(f"no answer to PING within {self._timeout:g}s")
        finally:
            reader.cancel()
            await asyncio.wait({reader}, timeout=self._timeout)

    async def _read(self, conn: AbstractConnection, cache: ReadCache) -> None:
        while True:
            reply: Any = await conn.read_response(timeout=math.inf)
            cache.alive()
            if not (isinstance(reply, list) and reply):
                continue
            if reply[0] == b"message" and len(reply) == 3:
                self._deliver(cache, reply[2])
            elif reply[0] == b"pong" and len(reply) == 2:
                self._answered(reply[1])

    def _answered(self, number: bytes) -> None:
        try:
            _, answer = self._pings.pop(int(number))
        except (KeyError, ValueError):
            return
        if not answer.done():
            answer.set_result(None)

    def _deliver(self, cache: ReadCache, names: list[bytes] | None) -> None:
        if names is None:  # the database was flushed
            cache.flush()
            return
        for name in names:
            for prefix, kind in self._prefixes:
                if name.startswith(prefix):
                    cache.invalidate(kind, name[len(prefix) :].decode())
                    break
