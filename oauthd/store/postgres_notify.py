"""The postgres backend's invalidation listener for the read cache (`store/cache.py`).

Schema version 2 (`sql/002_invalidation.sql`) has triggers that `pg_notify` the channel
`oauthd_invalidate` with `[schema, kind, key]` (JSON) for every UPDATE or DELETE of a
grant or MCP session binding row, and `[schema, null, null]` on TRUNCATE. The listener
is one connection of its own (not from the pool: `_closed_by_server` takes any data on an
idle pooled connection for the server's goodbye) that runs `LISTEN oauthd_invalidate`
and keeps the notifications of its own schema, the one `oauthd_records` resolves to on
its `search_path`, as the pool's queries do. PostgreSQL delivers a notification to every
listener when the writing transaction commits, so before the writer's client has its
answer.

When no notification came for `HEARTBEAT` seconds it runs `SELECT 1`, which must be
answered within the store's timeout: a connection that went silent is dropped like a
closed one, and the cache is bypassed until a new one is listening.
"""

from __future__ import annotations

from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.conninfo import make_conninfo

from oauthd.store.base import finish_within
from oauthd.store.cache import HEARTBEAT, ReadCache

CHANNEL = "oauthd_invalidate"
_SCHEMA = (
    "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.oid = to_regclass('oauthd_records')"
)


class PostgresInvalidations:
    """A `Listen` for `ReadCache`: one `LISTEN` connection per session."""

    def __init__(self, dsn: str, timeout: float) -> None:
        self._conninfo = make_conninfo(dsn, connect_timeout=max(2, round(timeout)))
        self._timeout = timeout
        self.backend_pid: int | None = None  # the server process of the live connection

    async def __call__(self, cache: ReadCache) -> None:
        conn = await finish_within(
            AsyncConnection.connect(self._conninfo, autocommit=True), self._timeout
        )
        try:
            schema = await finish_within(self._listen(conn), self._timeout)
            cache.up()
            while True:
                async for notice in conn.notifies(timeout=HEARTBEAT):
                    self._deliver(cache, schema, notice.payload)
                await finish_within(conn.execute("SELECT 1"), self._timeout)
        finally:
            self.backend_pid = None
            await conn.close()

    async def _listen(self, conn: AsyncConnection[Any]) -> str:
        cur = await conn.execute(_SCHEMA)
        row = await cur.fetchone()
        if row is None:
            raise LookupError("no table oauthd_records on the search_path")
        await conn.execute(f"LISTEN {CHANNEL}")
        self.backend_pid = conn.info.backend_pid
        return str(row[0])

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
