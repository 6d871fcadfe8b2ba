"""The postgres backend's audit trail: table `oauthd_audit(chain, n, at, record)` (schema
version 4), one chain per instance.

An audited write and its record are one atomic step: `add` and `put` one statement (a
CTE: `WITH w AS (INSERT ... RETURNING 1) INSERT INTO oauthd_audit SELECT ... FROM w`, one
round trip), `take`, `update` and `delete` one transaction (the change, then the record,
whose event is computed from the record the change returned). The primary key
(chain, n) refuses a fork: a stale head fails the whole step, and the trail reads the
head again and runs it once more (`StaleHead`). A write without `audit=` (or with
`[audit] enabled = false`) is the unaudited path of `postgres.py`.

`PostgresAuditReader` reads the table offline (`oauthd audit verify|export`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation

from oauthd.audit import Anchor, Audit, AuditEvent, ChainHead, head_of, resolve
from oauthd.clock import Clock
from oauthd.store.audit import Sealing, SharedTrail, StaleHead, TrailSettings
from oauthd.store.base import Conflict, R
from oauthd.store.postgres_connection import Connections, unavailable

T = TypeVar("T")


class PostgresStore(Protocol):
    """What the trail uses of `oauthd.store.postgres.PostgresStore`."""

    clock: Clock
    connections: Connections
    writes: int


class PostgresTable(Protocol[R]):
    """What the trail uses of `oauthd.store.postgres.PostgresTable`."""

    kind: str

    def params(self, key: str) -> dict[str, Any]: ...

    def row(self, record: R) -> dict[str, Any]: ...

    def decode(self, doc: Any) -> R: ...


READ_BATCH = 1000  # rows per query of the reader
_LIVE = "(expires_at IS NULL OR expires_at > %(now)s)"
_INSERT = (
    "INSERT INTO oauthd_audit (chain, n, at, record) VALUES (%(chain)s, %(n)s, %(at)s, %(line)s)"
)
_FROM_W = (
    "INSERT INTO oauthd_audit (chain, n, at, record) "
    "SELECT %(chain)s, %(n)s, %(at)s, %(line)s FROM w RETURNING 1"
)
_ADD = (
    "WITH w AS (INSERT INTO oauthd_records (kind, key, record, expires_at) "
    "VALUES (%(kind)s, %(key)s, %(record)s::jsonb, %(expires_at)s) "
    "ON CONFLICT (kind, key) DO UPDATE "
    "SET record = EXCLUDED.record, expires_at = EXCLUDED.expires_at "
    "WHERE oauthd_records.expires_at IS NOT NULL "
    "AND oauthd_records.expires_at <= %(now)s RETURNING 1) " + _FROM_W
)
_PUT = (
    "WITH w AS (INSERT INTO oauthd_records (kind, key, record, expires_at) "
    "VALUES (%(kind)s, %(key)s, %(record)s::jsonb, %(expires_at)s) "
    "ON CONFLICT (kind, key) DO UPDATE "
    "SET record = EXCLUDED.record, expires_at = EXCLUDED.expires_at RETURNING 1) " + _FROM_W
)
# Every chain's records before the cutoff, but its last one (the chain goes on from it).
_EXPIRE = (
    "DELETE FROM oauthd_audit a WHERE a.at < %(cutoff)s AND a.n < "
    "(SELECT max(b.n) FROM oauthd_audit b WHERE b.chain = a.chain)"
)
_HEAD = "SELECT record FROM oauthd_audit WHERE chain = %(chain)s ORDER BY n DESC LIMIT 1"


def _stale(
    operation: Callable[[AsyncConnection[Any]], Awaitable[T]],
) -> Callable[[AsyncConnection[Any]], Awaitable[T]]:
    """`operation`, its unique violation (a record at a position already taken: nothing
    was written) raised as `StaleHead`, not as `Unavailable`."""

    async def run(conn: AsyncConnection[Any]) -> T:
        try:
            return await operation(conn)
        except UniqueViolation:
            raise StaleHead("the audit chain's head moved") from None

    return run


class PostgresTrail(SharedTrail):
    def __init__(self, store: PostgresStore, settings: TrailSettings) -> None:
        super().__init__(settings, store.clock)
        self._store = store

    def _record(self, sealing: Sealing, line: bytes) -> dict[str, Any]:
        return {"chain": self.chain.name, "n": sealing.n, "at": sealing.at, "line": line.decode()}

    async def read_head(self) -> ChainHead:
        rows = await self._store.connections.read(_HEAD, {"chain": self.chain.name})
        return head_of(rows[0][0]) if rows else ChainHead()

    async def append_record(self, sealing: Sealing, line: bytes) -> None:
        params = self._record(sealing, line)

        async def insert(conn: AsyncConnection[Any]) -> None:
            await conn.execute(_INSERT, params)

        await self._store.connections.run(_stale(insert))

    async def expire(self, now: float | None = None) -> int:
        cutoff = (self.clock.now() if now is None else now) - self.retention

        async def expire(conn: AsyncConnection[Any]) -> int:
            cur = await conn.execute(_EXPIRE, {"cutoff": cutoff})
            return max(cur.rowcount, 0)

        return await self._store.connections.run(expire)

    # -- audited writes (the table checked `enabled` and that there is an event) ----------

    async def add(self, table: PostgresTable[R], record: R, event: AuditEvent) -> None:
        await self._statement(table, record, event, _ADD)

    async def put(self, table: PostgresTable[R], record: R, event: AuditEvent) -> None:
        await self._statement(table, record, event, _PUT)

    async def _statement(
        self, table: PostgresTable[R], record: R, event: AuditEvent, query: str
    ) -> None:
        async def write(sealing: Sealing) -> None:
            params = table.params(record.key) | table.row(record)
            params |= self._record(sealing, sealing.seal(event))

            async def statement(conn: AsyncConnection[Any]) -> bool:
                cur = await conn.execute(query, params)
                return await cur.fetchone() is not None

            if not await self._store.connections.run(_stale(statement)):
                raise Conflict(f"{table.kind}: key already present")
            self._store.writes += 1

        await self.write(write)

    async def take(self, table: PostgresTable[R], key: str, audit: Audit) -> R | None:
        query = (
            f"DELETE FROM oauthd_records WHERE kind = %(kind)s AND key = %(key)s "
            f"AND {_LIVE} RETURNING record"
        )

        async def take(conn: AsyncConnection[Any], sealing: Sealing) -> R | None:
            cur = await conn.execute(query, table.params(key))
            row = await cur.fetchone()
            if row is None:
                return None
            record = table.decode(row[0])
            await self._note(conn, sealing, resolve(audit, record))
            return record

        return await self._transaction(take)

    async def delete(self, table: PostgresTable[R], key: str, audit: Audit) -> bool:
        query = (
            f"DELETE FROM oauthd_records WHERE kind = %(kind)s AND key = %(key)s "
            f"RETURNING {_LIVE}, record"
        )

        async def delete(conn: AsyncConnection[Any], sealing: Sealing) -> bool:
            cur = await conn.execute(query, table.params(key))
            row = await cur.fetchone()
            if row is None:
                return False
            if row[0]:
                await self._note(conn, sealing, resolve(audit, table.decode(row[1])))
            else:
                self._store.writes += 1  # an expired row removed: no record of it
            return bool(row[0])

        return await self._transaction(delete)

    async def update(
        self, table: PostgresTable[R], key: str, change: Callable[[R], R], audit: Audit
    ) -> R | None:
        async def update(conn: AsyncConnection[Any], sealing: Sealing) -> R | None:
            cur = await conn.execute(
                f"SELECT record FROM oauthd_records WHERE kind = %(kind)s "
                f"AND key = %(key)s AND {_LIVE} FOR UPDATE",
                table.params(key),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            record = table.decode(row[0])
            new = change(record)
            if new is record:
                return record
            if new.key != key:
                raise ValueError(f"{table.kind}: update must keep the key")
            await conn.execute(
                "UPDATE oauthd_records SET record = %(record)s::jsonb, "
                "expires_at = %(expires_at)s WHERE kind = %(kind)s AND key = %(key)s",
                table.params(key) | table.row(new),
            )
            await self._note(conn, sealing, resolve(audit, new))
            return new

        return await self._transaction(update)

    async def _note(
        self, conn: AsyncConnection[Any], sealing: Sealing, event: AuditEvent | None
    ) -> None:
        """The change made in this transaction: its record (if it has an event)."""
        self._store.writes += 1
        if event is not None:
            await conn.execute(_INSERT, self._record(sealing, sealing.seal(event)))

    async def _transaction(
        self, body: Callable[[AsyncConnection[Any], Sealing], Awaitable[T]]
    ) -> T:
        """`body` in one transaction, its record included, under the trail's lock."""

        async def write(sealing: Sealing) -> T:
            writes = self._store.writes

            async def transaction(conn: AsyncConnection[Any]) -> T:
                async with conn.transaction():
                    return await body(conn, sealing)

            try:
                return await self._store.connections.run(_stale(transaction))
            except BaseException:
                self._store.writes = writes  # rolled back (or unknown): not counted
                raise

        return await self.write(write)


class PostgresAuditReader:
    """The `oauthd_audit` table, read offline (`oauthd.audit.AuditReader`)."""

    def __init__(self, dsn: str, timeout: float = 5.0) -> None:
        self.dsn = dsn
        self.timeout = timeout
        self._conn: AsyncConnection[Any] | None = None

    async def _connection(self) -> AsyncConnection[Any]:
        if self._conn is None:
            try:
                self._conn = await AsyncConnection.connect(
                    self.dsn, connect_timeout=max(2, round(self.timeout)), autocommit=True
                )
            except (psycopg.Error, OSError) as exc:
                raise unavailable(exc, self.timeout) from None
        return self._conn

    async def _rows(self, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        conn = await self._connection()
        try:
            cur = await conn.execute(query, params)
            return await cur.fetchall()
        except (psycopg.Error, OSError) as exc:
            raise unavailable(exc, self.timeout) from None

    async def chains(self) -> list[str]:
        rows = await self._rows("SELECT DISTINCT chain FROM oauthd_audit ORDER BY chain", {})
        return [str(row[0]) for row in rows]

    async def lines(self, chain: str) -> AsyncIterator[tuple[str, bytes]]:
        after = 0
        while True:
            rows = await self._rows(
                "SELECT n, record FROM oauthd_audit WHERE chain = %(chain)s AND n > %(after)s "
                "ORDER BY n LIMIT %(limit)s",
                {"chain": chain, "after": after, "limit": READ_BATCH},
            )
            for n, record in rows:
                yield f"row n={n}", record.encode()
            if len(rows) < READ_BATCH:
                return
            after = rows[-1][0]

    async def anchor(self, chain: str) -> Anchor | None:
        """None: the rows are the only copy (a row cut from a chain's end goes unseen)."""
        return None

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
