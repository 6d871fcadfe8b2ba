"""The PostgreSQL backend: every table in one SQL table `oauthd_records(kind, key, record
jsonb, expires_at)`, through a bounded psycopg 3 connection pool.

Expiry is a filter on `expires_at > now` (the injected clock's now) in every read, so an
expired record is invisible before the sweeper (`purge_expired`) deletes it. `take` is one
`DELETE ... RETURNING`, `update` a `SELECT ... FOR UPDATE` and a write in one transaction,
`add` an upsert that only replaces an expired row. Any connection, server or timeout
trouble raises `Unavailable`; every operation is bounded by `timeout`.

The schema is versioned SQL under `oauthd/store/sql/NNN_name.sql`, applied by `oauthd
migrate` (`migrate` below): in one transaction, under an advisory lock so that two
instances migrating at once take turns. A store refuses to open on an older or newer
schema (`SchemaError`, exit 78) and says what to run.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Generic

import orjson
import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import make_conninfo
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool

from oauthd.clock import Clock
from oauthd.model import (
    AuthCode,
    Client,
    Consent,
    DeviceFlow,
    Grant,
    McpSession,
    PendingAuthorization,
)
from oauthd.persist.errors import RecoveryError
from oauthd.store.base import Conflict, R, Store, StoreStatus, Table, Unavailable
from oauthd.store.codec import decode_many, encode

SCAN_BATCH = 200  # rows fetched per query by `scan` (keyset pagination)
# pg_advisory_xact_lock key of `migrate` ("oauthd" in ASCII): one migration at a time.
MIGRATION_LOCK = 0x6F6175746864
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
_FAILURES: tuple[type[BaseException], ...] = (psycopg.Error, OSError, TimeoutError)


class SchemaError(RecoveryError):
    """The database schema is not the one this oauthd runs on (exit 78: an operator acts)."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> tuple[Migration, ...]:
    """The versioned SQL files, in order; versions are 1, 2, 3, ... without gaps."""
    found = []
    for entry in resources.files("oauthd.store").joinpath("sql").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration versions have a gap: {[m.name for m in found]}")
    return tuple(found)


def latest_version() -> int:
    return len(migrations())


def _unavailable(exc: BaseException, timeout: float) -> Unavailable:
    if isinstance(exc, TimeoutError):
        reason = f"postgres: no answer within {timeout:g}s"
    else:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        reason = f"postgres: {first_line}"
    return Unavailable(reason)


def _connect_timeout(timeout: float) -> int:
    return max(2, round(timeout))  # libpq: whole seconds, at least 2


async def _schema_version(conn: AsyncConnection[Any]) -> int:
    cur = await conn.execute("SELECT to_regclass('oauthd_schema') IS NOT NULL")
    row = await cur.fetchone()
    if row is None or not row[0]:
        return 0
    cur = await conn.execute("SELECT coalesce(max(version), 0) FROM oauthd_schema")
    row = await cur.fetchone()
    return int(row[0]) if row is not None else 0


def _check_version(version: int) -> None:
    latest = latest_version()
    if version < latest:
        raise SchemaError(
            f"the PostgreSQL schema is at version {version}, this oauthd needs {latest}: "
            "run `oauthd migrate --config PATH` first"
        )
    if version > latest:
        raise SchemaError(
            f"the PostgreSQL schema is at version {version}, newer than this oauthd knows "
            f"({latest}): run a newer oauthd (or restore the database)"
        )


async def migrate(dsn: str, *, op_timeout: float = 2.0) -> tuple[int, list[int]]:
    """Apply the migrations not applied yet; return (version before, versions applied).

    Idempotent; one transaction; under `pg_advisory_xact_lock` so that concurrent callers
    run one after the other (the second finds nothing left to do). `Unavailable` when the
    server cannot be reached within `op_timeout`; `SchemaError` on a newer schema."""
    timeout = op_timeout
    try:
        async with asyncio.timeout(timeout):
            conn = await AsyncConnection.connect(
                dsn, connect_timeout=_connect_timeout(timeout), autocommit=True
            )
    except _FAILURES as exc:
        raise _unavailable(exc, timeout) from None
    try:
        async with conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute("CREATE TABLE IF NOT EXISTS oauthd_schema (version int NOT NULL)")
            before = await _schema_version(conn)
            if before > latest_version():
                _check_version(before)
            applied = []
            for migration in migrations():
                if migration.version <= before:
                    continue
                await conn.execute(migration.sql.encode())
                await conn.execute(
                    "INSERT INTO oauthd_schema (version) VALUES (%s)", (migration.version,)
                )
                applied.append(migration.version)
            return before, applied
    except _FAILURES as exc:
        raise _unavailable(exc, timeout) from None


_LIVE = "(expires_at IS NULL OR expires_at > %(now)s)"


class PostgresTable(Table[R], Generic[R]):
    def __init__(self, kind: str, store: PostgresStore) -> None:
        self.kind = kind
        self._store = store

    def _decode(self, doc: Any) -> R:
        record: R = decode_many(self.kind, [doc])[0]  # type: ignore[assignment]
        return record

    def _params(self, key: str) -> dict[str, Any]:
        return {"kind": self.kind, "key": key, "now": self._store.clock.now()}

    @staticmethod
    def _row(record: R) -> dict[str, Any]:
        return {"record": encode(record).decode(), "expires_at": record.expires_at}

    async def get(self, key: str) -> R | None:
        async with self._store.connection() as conn:
            cur = await conn.execute(
                f"SELECT record FROM oauthd_records WHERE kind = %(kind)s AND key = %(key)s "
                f"AND {_LIVE}",
                self._params(key),
            )
            row = await cur.fetchone()
        return None if row is None else self._decode(row[0])

    async def add(self, record: R) -> None:
        async with self._store.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO oauthd_records (kind, key, record, expires_at) "
                "VALUES (%(kind)s, %(key)s, %(record)s::jsonb, %(expires_at)s) "
                "ON CONFLICT (kind, key) DO UPDATE "
                "SET record = EXCLUDED.record, expires_at = EXCLUDED.expires_at "
                "WHERE oauthd_records.expires_at IS NOT NULL "
                "AND oauthd_records.expires_at <= %(now)s RETURNING 1",
                self._params(record.key) | self._row(record),
            )
            row = await cur.fetchone()
        if row is None:
            raise Conflict(f"{self.kind}: key already present")
        self._store.writes += 1

    async def put(self, record: R) -> None:
        async with self._store.connection() as conn:
            await conn.execute(
                "INSERT INTO oauthd_records (kind, key, record, expires_at) "
                "VALUES (%(kind)s, %(key)s, %(record)s::jsonb, %(expires_at)s) "
                "ON CONFLICT (kind, key) DO UPDATE "
                "SET record = EXCLUDED.record, expires_at = EXCLUDED.expires_at",
                {"kind": self.kind, "key": record.key} | self._row(record),
            )
        self._store.writes += 1

    async def take(self, key: str) -> R | None:
        async with self._store.connection() as conn:
            cur = await conn.execute(
                f"DELETE FROM oauthd_records WHERE kind = %(kind)s AND key = %(key)s "
                f"AND {_LIVE} RETURNING record",
                self._params(key),
            )
            row = await cur.fetchone()
        if row is None:
            return None
        self._store.writes += 1
        return self._decode(row[0])

    async def update(self, key: str, change: Callable[[R], R]) -> R | None:
        async with self._store.connection() as conn, conn.transaction():
            params = self._params(key)
            cur = await conn.execute(
                f"SELECT record FROM oauthd_records WHERE kind = %(kind)s AND key = %(key)s "
                f"AND {_LIVE} FOR UPDATE",
                params,
            )
            row = await cur.fetchone()
            if row is None:
                return None
            record = self._decode(row[0])
            new = change(record)
            if new is record:
                return record
            if new.key != key:
                raise ValueError(f"{self.kind}: update must keep the key")
            await conn.execute(
                "UPDATE oauthd_records SET record = %(record)s::jsonb, "
                "expires_at = %(expires_at)s WHERE kind = %(kind)s AND key = %(key)s",
                params | self._row(new),
            )
        self._store.writes += 1
        return new

    async def delete(self, key: str) -> bool:
        async with self._store.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM oauthd_records WHERE kind = %(kind)s AND key = %(key)s "
                f"RETURNING {_LIVE}",
                self._params(key),
            )
            row = await cur.fetchone()
        if row is None:
            return False
        self._store.writes += 1
        return bool(row[0])

    async def count(self) -> int:
        async with self._store.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM oauthd_records WHERE kind = %s", (self.kind,)
            )
            row = await cur.fetchone()
        return int(row[0]) if row is not None else 0

    async def scan(self) -> AsyncIterator[R]:
        """Keyset pagination by key: each batch is its own short query (nothing stays
        open between batches), and keys only grow, so no record comes twice."""
        after: str | None = None
        while True:
            params = {"kind": self.kind, "now": self._store.clock.now(), "after": after}
            params["limit"] = SCAN_BATCH
            async with self._store.connection() as conn:
                cur = await conn.execute(
                    f"SELECT key, record FROM oauthd_records WHERE kind = %(kind)s "
                    f"AND (%(after)s::text IS NULL OR key > %(after)s::text) AND {_LIVE} "
                    f"ORDER BY key LIMIT %(limit)s",
                    params,
                )
                rows = await cur.fetchall()
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
    def __init__(self, pool: AsyncConnectionPool[Any], clock: Clock, timeout: float) -> None:
        self.pool = pool
        self.clock = clock
        self.timeout = timeout
        self.writes = 0  # rows written (what the contract tests count)
        self._detail: str | None = None
        self.clients = PostgresTable[Client](Client.KIND, self)
        self.consents = PostgresTable[Consent](Consent.KIND, self)
        self.pending = PostgresTable[PendingAuthorization](PendingAuthorization.KIND, self)
        self.codes = PostgresTable[AuthCode](AuthCode.KIND, self)
        self.grants = PostgresTable[Grant](Grant.KIND, self)
        self.devices = PostgresTable[DeviceFlow](DeviceFlow.KIND, self)
        self.mcp_sessions = PostgresTable[McpSession](McpSession.KIND, self)

    @classmethod
    async def open(
        cls, dsn: str, clock: Clock, *, pool_size: int = 10, op_timeout: float = 2.0
    ) -> PostgresStore:
        """Open the pool and check the schema version: `Unavailable` when the server is
        unreachable within `op_timeout`, `SchemaError` when `oauthd migrate` is needed."""
        timeout = op_timeout

        async def configure(conn: AsyncConnection[Any]) -> None:
            set_json_loads(orjson.loads, conn)

        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            make_conninfo(dsn, connect_timeout=_connect_timeout(timeout)),
            min_size=1,
            max_size=pool_size,
            open=False,
            timeout=timeout,
            kwargs={"autocommit": True},
            configure=configure,
            name="oauthd",
        )
        store = cls(pool, clock, timeout)
        try:
            await pool.open(wait=False)
            async with store.connection() as conn:
                version = await _schema_version(conn)
            _check_version(version)
        except BaseException:
            await pool.close()
            raise
        return store

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection for one operation; any failure becomes `Unavailable`."""
        try:
            async with asyncio.timeout(self.timeout), self.pool.connection() as conn:
                yield conn
        except _FAILURES as exc:
            error = _unavailable(exc, self.timeout)
            self._detail = error.reason
            raise error from None
        self._detail = None

    async def purge_expired(self) -> int:
        async with self.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM oauthd_records WHERE expires_at <= %s", (self.clock.now(),)
            )
            return max(cur.rowcount, 0)

    async def ping(self) -> None:
        async with self.connection() as conn:
            cur = await conn.execute("SELECT pg_is_in_recovery()")
            row = await cur.fetchone()
        if row is not None and row[0]:
            self._detail = "postgres: the server is a read-only standby"
            raise Unavailable(self._detail)

    def status(self) -> StoreStatus:
        return StoreStatus(backend="postgres", healthy=self._detail is None, detail=self._detail)

    async def close(self) -> None:
        if not self.pool.closed:
            await self.pool.close()
