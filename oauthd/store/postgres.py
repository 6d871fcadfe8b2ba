"""The PostgreSQL backend: every table in one SQL table `oauthd_records(kind, key, record
jsonb, expires_at)`, through a bounded psycopg 3 connection pool.

Expiry is a filter on `expires_at > now` (the injected clock's now) in every read, so an
expired record is invisible before the sweeper (`purge_expired`) deletes it. `take` is one
`DELETE ... RETURNING`, `update` a `SELECT ... FOR UPDATE` and a write in one transaction,
`add` an upsert that only replaces an expired row. Any connection, server or timeout
trouble raises `Unavailable`; every operation is bounded by `timeout`.

After a server restart every pooled connection is dead; `Connections`
(`postgres_connection.py`) finds each one before a query is sent on it. The pool tries to
reconnect at least every `RECONNECT_WITHIN` seconds while the server is down
(psycopg_pool's own backoff would grow to minutes), and `check` (/readyz) pings the server
at most once a second (`Probe`), so recovery needs no restart.

A store refuses to open on an older or newer schema (`SchemaError`, exit 78) and says
what to run; the schema and `migrate` are in `postgres_schema.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Generic

import orjson
from psycopg import AsyncConnection
from psycopg.conninfo import make_conninfo
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool

from oauthd.audit import Audit, resolve
from oauthd.clock import Clock
from oauthd.model import (
    AccountLink,
    AccountSession,
    AuthCode,
    Client,
    Consent,
    DeviceFlow,
    Grant,
    McpSession,
    PendingAuthorization,
    RegistrationGroup,
    SigningKey,
    UsedAssertion,
)
from oauthd.store.audit import TrailSettings, logged, trail_settings
from oauthd.store.base import (
    Conflict,
    Probe,
    R,
    Store,
    StoreStatus,
    Table,
    Unavailable,
)
from oauthd.store.cache import CACHE_SIZE, ReadCache, attach
from oauthd.store.codec import decode_many, encode
from oauthd.store.postgres_audit import PostgresTrail
from oauthd.store.postgres_connection import Connections, connect_timeout
from oauthd.store.postgres_counters import PURGE as PURGE_COUNTERS
from oauthd.store.postgres_counters import PostgresCounters
from oauthd.store.postgres_notify import PostgresInvalidations
from oauthd.store.postgres_schema import check_version, schema_version

SCAN_BATCH = 200  # rows fetched per query by `scan` (keyset pagination)
# While the server is down, a pool connection attempt is given up after this long (and a
# new one starts on demand), so the gap between attempts never grows past it.
RECONNECT_WITHIN = 5.0

_LIVE = "(expires_at IS NULL OR expires_at > %(now)s)"
_UPSERT = (
    "INSERT INTO oauthd_records (kind, key, record, expires_at) "
    "VALUES (%(kind)s, %(key)s, %(record)s::jsonb, %(expires_at)s) "
    "ON CONFLICT (kind, key) DO UPDATE "
    "SET record = EXCLUDED.record, expires_at = EXCLUDED.expires_at"
)


class PostgresTable(Table[R], Generic[R]):
    def __init__(self, kind: str, store: PostgresStore) -> None:
        self.kind = kind
        self._store = store
        self._sql = store.connections

    def decode(self, doc: Any) -> R:
        record: R = decode_many(self.kind, [doc])[0]  # type: ignore[assignment]
        return record

    def params(self, key: str) -> dict[str, Any]:
        return {"kind": self.kind, "key": key, "now": self._store.clock.now()}

    @staticmethod
    def row(record: R) -> dict[str, Any]:
        return {"record": encode(record).decode(), "expires_at": record.expires_at}

    async def get(self, key: str) -> R | None:
        rows = await self._sql.read(
            f"SELECT record FROM oauthd_records WHERE kind = %(kind)s AND key = %(key)s "
            f"AND {_LIVE}",
            self.params(key),
        )
        return self.decode(rows[0][0]) if rows else None

    async def add(self, record: R, *, audit: Audit | None = None) -> None:
        event = resolve(audit, record)
        if event is not None and self._store.audit.enabled:
            await self._store.audit.add(self, record, event)  # one statement (postgres_audit)
            return
        rows = await self._sql.write(
            "INSERT INTO oauthd_records (kind, key, record, expires_at) "
            "VALUES (%(kind)s, %(key)s, %(record)s::jsonb, %(expires_at)s) "
            "ON CONFLICT (kind, key) DO UPDATE "
            "SET record = EXCLUDED.record, expires_at = EXCLUDED.expires_at "
            "WHERE oauthd_records.expires_at IS NOT NULL "
            "AND oauthd_records.expires_at <= %(now)s RETURNING 1",
            self.params(record.key) | self.row(record),
        )
        if not rows:
            raise Conflict(f"{self.kind}: key already present")
        self._store.writes += 1
        logged(event)

    async def put(self, record: R, *, audit: Audit | None = None) -> None:
        event = resolve(audit, record)
        if event is not None and self._store.audit.enabled:
            await self._store.audit.put(self, record, event)
            return
        await self._sql.write(_UPSERT, {"kind": self.kind, "key": record.key} | self.row(record))
        self._store.writes += 1
        logged(event)

    async def put_many(self, records: Sequence[R]) -> None:
        rows = [{"kind": self.kind, "key": r.key} | self.row(r) for r in records]

        async def put_all(conn: AsyncConnection[Any]) -> None:
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(_UPSERT, rows)

        await self._sql.run(put_all)
        self._store.writes += len(records)

    async def take(self, key: str, *, audit: Audit | None = None) -> R | None:
        if audit is not None and self._store.audit.enabled:
            return await self._store.audit.take(self, key, audit)
        rows = await self._sql.write(
            f"DELETE FROM oauthd_records WHERE kind = %(kind)s AND key = %(key)s "
            f"AND {_LIVE} RETURNING record",
            self.params(key),
        )
        if not rows:
            return None
        self._store.writes += 1
        record = self.decode(rows[0][0])
        logged(resolve(audit, record))
        return record

    async def update(
        self, key: str, change: Callable[[R], R], *, audit: Audit | None = None
    ) -> R | None:
        if audit is not None and self._store.audit.enabled:
            return await self._store.audit.update(self, key, change, audit)
        params = self.params(key)

        async def swap(conn: AsyncConnection[Any]) -> tuple[R | None, bool]:
            async with conn.transaction():
                cur = await conn.execute(
                    f"SELECT record FROM oauthd_records WHERE kind = %(kind)s "
                    f"AND key = %(key)s AND {_LIVE} FOR UPDATE",
                    params,
                )
                row = await cur.fetchone()
                if row is None:
                    return None, False
                record = self.decode(row[0])
                new = change(record)
                if new is record:
                    return record, False
                if new.key != key:
                    raise ValueError(f"{self.kind}: update must keep the key")
                await conn.execute(
                    "UPDATE oauthd_records SET record = %(record)s::jsonb, "
                    "expires_at = %(expires_at)s WHERE kind = %(kind)s AND key = %(key)s",
                    params | self.row(new),
                )
            return new, True

        result, written = await self._sql.run(swap)
        if written and result is not None:
            self._store.writes += 1
            logged(resolve(audit, result))
        return result

    async def delete(self, key: str, *, audit: Audit | None = None) -> bool:
        if audit is not None and self._store.audit.enabled:
            return await self._store.audit.delete(self, key, audit)
        rows = await self._sql.write(
            f"DELETE FROM oauthd_records WHERE kind = %(kind)s AND key = %(key)s "
            f"RETURNING {_LIVE}, record",
            self.params(key),
        )
        if not rows:
            return False
        self._store.writes += 1
        if rows[0][0]:
            logged(resolve(audit, self.decode(rows[0][1])))
        return bool(rows[0][0])

    async def count(self) -> int:
        rows = await self._sql.read(
            "SELECT count(*) FROM oauthd_records WHERE kind = %(kind)s", {"kind": self.kind}
        )
        return int(rows[0][0]) if rows else 0

    async def purge_expired(self) -> int:
        async def purge(conn: AsyncConnection[Any]) -> int:
            cur = await conn.execute(
                "DELETE FROM oauthd_records WHERE kind = %s AND expires_at <= %s",
                (self.kind, self._store.clock.now()),
            )
            return max(cur.rowcount, 0)

        return await self._sql.run(purge)

    async def scan(self) -> AsyncIterator[R]:
        """Keyset pagination by key: each batch is its own short query (nothing stays
        open between batches), and keys only grow, so no record comes twice."""
        after: str | None = None
        while True:
            params = {"kind": self.kind, "now": self._store.clock.now(), "after": after}
            params["limit"] = SCAN_BATCH
            rows = await self._sql.read(
                f"SELECT key, record FROM oauthd_records WHERE kind = %(kind)s "
                f"AND (%(after)s::text IS NULL OR key > %(after)s::text) AND {_LIVE} "
                f"ORDER BY key LIMIT %(limit)s",
                params,
            )
            if not rows:
                return
            records = decode_many(self.kind, [doc for _, doc in rows])
            after = rows[-1][0]
            for record in records:
                yield record  # type: ignore[misc]
            await asyncio.sleep(0)
            if len(rows) < SCAN_BATCH:
                return


class PostgresStore(Store):
    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        clock: Clock,
        timeout: float,
        audit: TrailSettings | None = None,
    ) -> None:
        self.pool = pool
        self.clock = clock
        self.writes = 0  # rows written (what the contract tests count)
        self.connections = Connections(pool, timeout)
        self.audit: PostgresTrail = PostgresTrail(self, audit or trail_settings(None))
        self._probe = Probe(self.ping)
        self.clients = PostgresTable[Client](Client.KIND, self)
        self.consents = PostgresTable[Consent](Consent.KIND, self)
        self.pending = PostgresTable[PendingAuthorization](PendingAuthorization.KIND, self)
        self.codes = PostgresTable[AuthCode](AuthCode.KIND, self)
        self.grants = PostgresTable[Grant](Grant.KIND, self)
        self.devices = PostgresTable[DeviceFlow](DeviceFlow.KIND, self)
        self.mcp_sessions = PostgresTable[McpSession](McpSession.KIND, self)
        self.registration_groups = PostgresTable[RegistrationGroup](RegistrationGroup.KIND, self)
        self.account_sessions = PostgresTable[AccountSession](AccountSession.KIND, self)
        self.signing_keys = PostgresTable[SigningKey](SigningKey.KIND, self)
        self.used_assertions = PostgresTable[UsedAssertion](UsedAssertion.KIND, self)
        self.account_links = PostgresTable[AccountLink](AccountLink.KIND, self)
        self.counters = PostgresCounters(self)  # shared by every instance (schema v3)
        self.read_cache: ReadCache | None = None  # set by `open` (store/cache.py)

    @classmethod
    async def open(
        cls,
        dsn: str,
        clock: Clock,
        *,
        pool_size: int = 10,
        op_timeout: float = 2.0,
        cache_size: int = CACHE_SIZE,
        audit: TrailSettings | None = None,
    ) -> PostgresStore:
        """Open the pool and check the schema version: `Unavailable` when the server is
        unreachable within `op_timeout`, `SchemaError` when `oauthd migrate` is needed."""
        timeout = op_timeout

        async def configure(conn: AsyncConnection[Any]) -> None:
            set_json_loads(orjson.loads, conn)

        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            make_conninfo(dsn, connect_timeout=connect_timeout(timeout)),
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=timeout,
            kwargs={"autocommit": True},
            configure=configure,
            name="oauthd",
            reconnect_timeout=RECONNECT_WITHIN,
        )
        store = cls(pool, clock, timeout, audit)
        try:
            await pool.open(wait=False)
            version = await store.connections.run(schema_version, read=True)
            check_version(version)
        except BaseException:
            await pool.close()
            raise
        listen = PostgresInvalidations(dsn, timeout)
        store.read_cache = attach(store, clock, listen, size=cache_size, timeout=timeout)
        store.audit.start()  # retention (postgres_audit.py)
        return store

    # -- housekeeping ------------------------------------------------------------------------

    async def purge_expired(self) -> int:
        """One statement over every kind (one round trip on the `expires_at` index, and
        rows of kinds this version does not know are swept too), not a loop over tables;
        then the counters whose window ended (not counted: they are not records)."""

        async def purge(conn: AsyncConnection[Any]) -> int:
            now = self.clock.now()
            cur = await conn.execute("DELETE FROM oauthd_records WHERE expires_at <= %s", (now,))
            await conn.execute(PURGE_COUNTERS, (now,))
            return max(cur.rowcount, 0)

        return await self.connections.run(purge)

    async def census(self) -> dict[str, int]:
        """Records by kind in one query (an index-only pass over the primary key)."""
        counts = {table.kind: 0 for table in self.tables()}
        rows = await self.connections.read(
            "SELECT kind, count(*) FROM oauthd_records GROUP BY kind", {}
        )
        for kind, count in rows:
            if kind in counts:
                counts[kind] = int(count)
        return counts

    async def ping(self) -> None:
        rows = await self.connections.read("SELECT pg_is_in_recovery()", {})
        if rows and rows[0][0]:
            self.connections.problem = "postgres: the server is a read-only standby"
            raise Unavailable(self.connections.problem)

    def status(self) -> StoreStatus:
        problem = self.connections.problem
        return StoreStatus(backend="postgres", healthy=problem is None, detail=problem)

    async def check(self) -> StoreStatus:
        problem = await self._probe.problem()
        return StoreStatus(backend="postgres", healthy=problem is None, detail=problem)

    async def close(self) -> None:
        await self.audit.close()
        if self.read_cache is not None:
            await self.read_cache.close()
        if not self.pool.closed:
            await self.pool.close()
