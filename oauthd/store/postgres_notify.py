"""The postgres backend's invalidation listener for the read cache (`store/cache.py`).

Schema version 2 (`sql/002_invalidation.sql`) has triggers that `pg_notify` the channel
`oauthd_invalidate` with `[schema, kind, key]` (JSON) for every UPDATE or DELETE of a
grant or MCP session binding row, and `[schema, null, null]` on TRUNCATE. The listener
is one connection of its own (not from the pool: `_closed_by_server` takes any data on an
idle pooled connection for the server's goodbye) that runs `LISTEN oauthd_invalidate`
and keeps the notifications of its own schema, the one `oauthd_records` resolves to on
its `search_path`, as the pool's queries do.

Every `PING_EVERY` seconds it runs `SELECT 1`, which must be answered within the store's
timeout: a connection that went silent is dropped like a closed one, and the cache is
bypassed until a new one is listening. Every notification and every answer keeps the
cache fresh (`cache.alive`).

A write's confirmation (`confirm`): a second connection of the session, used for nothing
else, runs `pg_notify` of a marker `[schema, MARK, <number>]` after the write committed;
PostgreSQL delivers the notifications of different transactions to a listener in the
order they committed, so once the marker is here the write's invalidation is too, and
nobody else's invalidation of the same key can stand in for it. (Other instances ignore
the marker: no cached kind has that name.) Each listener's server process sends what is
queued on its own schedule, so another instance's copy may come a few milliseconds
after ours: hence the `grace` of the writes that end a record (`REVOKE_GRACE`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.conninfo import make_conninfo

from oauthd.store.base import finish_within
from oauthd.store.cache import PING_EVERY, ReadCache

CHANNEL = "oauthd_invalidate"
MARK = "oauthd.confirm"  # the "kind" of a confirmation marker
# Seconds a write that ended a grant or session binding (a revocation) waits after its
# own confirmation, for the other instances' listeners to have theirs: measured on a
# loaded machine, another listener trailed ours by median 0.07 ms, p99 4.3 ms, max 9.7 ms.
REVOKE_GRACE = 0.025
_SCHEMA = (
    "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.oid = to_regclass('oauthd_records')"
)


class PostgresInvalidations:
    """A `Listen` for `ReadCache`: one `LISTEN` connection, and one for confirmation
    markers, per session."""

    grace = REVOKE_GRACE

    def __init__(self, dsn: str, timeout: float) -> None:
        self._conninfo = make_conninfo(dsn, connect_timeout=max(2, round(timeout)))
        self._timeout = timeout
        self.backend_pid: int | None = None  # the server process of the live connection
        self._marker: AsyncConnection[Any] | None = None  # the live session's, for `confirm`
        self._schema = ""
        self._sent = 0  # the number of the last marker sent
        self._marks: dict[str, asyncio.Future[None]] = {}  # markers not heard yet
        self._closing: set[asyncio.Future[Any]] = set()  # late connections being closed

    async def __call__(self, cache: ReadCache) -> None:
        conn = await self._connect()
        try:
            marker = await self._connect()
            try:
                self._schema = await finish_within(self._listen(conn), self._timeout)
                self._marker = marker
                cache.up()
                while True:
                    async for notice in conn.notifies(timeout=PING_EVERY):
                        cache.alive()
                        self._heard(cache, notice.payload)
                    if marker.broken or marker.closed:
                        raise ConnectionError("the marker connection broke")
                    await finish_within(conn.execute("SELECT 1"), self._timeout)
                    cache.alive()
            finally:
                self._marker = None
                marks, self._marks = self._marks, {}
                for answer in marks.values():
                    if not answer.done():
                        answer.set_exception(ConnectionError("the listener ended"))
                        answer.exception()  # retrieved: nobody may be waiting for it
                await marker.close()
        finally:
            self.backend_pid = None
            await conn.close()

    async def _connect(self) -> AsyncConnection[Any]:
        """A new connection within the store's timeout. One that comes after that (or
        after the caller was cancelled) is closed when it does."""
        attempt = asyncio.ensure_future(AsyncConnection.connect(self._conninfo, autocommit=True))
        try:
            return await finish_within(asyncio.shield(attempt), self._timeout)
        except BaseException:
            attempt.add_done_callback(self._close_late)
            raise

    def _close_late(self, attempt: asyncio.Future[AsyncConnection[Any]]) -> None:
        if attempt.cancelled() or attempt.exception() is not None:
            return
        closing = asyncio.ensure_future(attempt.result().close())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def confirm(self) -> None:
        marker = self._marker
        if marker is None:
            return  # not listening: nothing is cached, nothing to confirm
        self._sent += 1
        token = f"{self.backend_pid}.{self._sent}"
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._marks[token] = answer
        try:
            payload = orjson.dumps([self._schema, MARK, token]).decode()
            await marker.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
            await answer
        finally:
            if self._marks.get(token) is answer:
                del self._marks[token]

    async def _listen(self, conn: AsyncConnection[Any]) -> str:
        cur = await conn.execute(_SCHEMA)
        row = await cur.fetchone()
        if row is None:
            raise LookupError("no table oauthd_records on the search_path")
        await conn.execute(f"LISTEN {CHANNEL}")
        self.backend_pid = conn.info.backend_pid
        return str(row[0])

    def _heard(self, cache: ReadCache, payload: str) -> None:
        if MARK in payload:  # cheap test first: most payloads are invalidations
            try:
                where, kind, token = orjson.loads(payload)
            except (orjson.JSONDecodeError, TypeError, ValueError):
                pass
            else:
                if kind == MARK:
                    answer = self._marks.pop(str(token), None) if where == self._schema else None
                    if answer is not None and not answer.done():
                        answer.set_result(None)
                    return
        self._deliver(cache, self._schema, payload)

    @staticmethod
    def _deliver(cache: ReadCache, schema: str, payload: str) -> None:
        try:
            where, kind, key = orjson.loads(payload)
        except (orjson.JSONDecodeError, TypeError, ValueError):
            cache.flush()  # not ours to understand: forget everything, to be safe
            return
        if where != schema:
            return
        if kind is None or key is None:
            cache.flush()
        else:
            cache.invalidate(str(kind), str(key))
