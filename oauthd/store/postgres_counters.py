"""The postgres backend's counters: rows of `oauthd_counters(key, count, window_end)`
(schema version 3), counted by one upsert per event: atomic on the server (the row is
locked by `ON CONFLICT DO UPDATE`), so every instance on the database shares the count.
`PostgresStore.purge_expired` deletes the rows whose window ended."""

from __future__ import annotations

from typing import Any, Protocol

from oauthd.clock import Clock
from oauthd.store.base import Count, Counters
from oauthd.store.postgres_connection import Connections


class PostgresStore(Protocol):
    """What the counters use of `oauthd.store.postgres.PostgresStore`."""

    clock: Clock
    connections: Connections


_ADD = (
    "INSERT INTO oauthd_counters AS c (key, count, window_end) "
    "VALUES (%(key)s, 1, %(now)s + %(window)s) "
    "ON CONFLICT (key) DO UPDATE SET "
    "count = CASE WHEN c.window_end <= %(now)s THEN 1 ELSE c.count + 1 END, "
    "window_end = CASE WHEN c.window_end <= %(now)s THEN EXCLUDED.window_end "
    "ELSE c.window_end END "
    "RETURNING count, window_end"
)
PURGE = "DELETE FROM oauthd_counters WHERE window_end <= %s"


class PostgresCounters(Counters):
    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    def _params(self, key: str, **more: Any) -> dict[str, Any]:
        return {"key": key, "now": self._store.clock.now(), **more}

    async def add(self, key: str, window: float) -> Count:
        params = self._params(key, window=window)
        rows = await self._store.connections.write(_ADD, params)
        count, ends = rows[0]
        return Count(int(count), float(ends) - params["now"])

    async def take_back(self, key: str) -> None:
        await self._store.connections.write(
            "UPDATE oauthd_counters SET count = count - 1 "
            "WHERE key = %(key)s AND window_end > %(now)s AND count > 0",
            self._params(key),
        )

    async def read(self, key: str) -> Count:
        params = self._params(key)
        rows = await self._store.connections.read(
            "SELECT count, window_end FROM oauthd_counters "
            "WHERE key = %(key)s AND window_end > %(now)s",
            params,
        )
        if not rows:
            return Count(0, 0.0)
        count, ends = rows[0]
        return Count(int(count), float(ends) - params["now"])

    async def reset(self, key: str) -> None:
        await self._store.connections.write(
            "DELETE FROM oauthd_counters WHERE key = %(key)s", {"key": key}
        )
