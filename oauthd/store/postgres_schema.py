"""The PostgreSQL schema: versioned SQL under `oauthd/store/sql/NNN_name.sql`, applied by
`oauthd migrate` (`migrate`) in one transaction, under an advisory lock so that two
instances migrating at once take turns. A store opens only on the version this oauthd
knows (`check_version`; else `SchemaError`, exit 78, saying what to run)."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from psycopg import AsyncConnection

from oauthd.persist.errors import RecoveryError
from oauthd.store.postgres_connection import FAILURES, connect_timeout, unavailable

# pg_advisory_xact_lock key of `migrate` ("oauthd" in ASCII): one migration at a time.
MIGRATION_LOCK = 0x6F6175746864
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


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


async def schema_version(conn: AsyncConnection[Any]) -> int:
    cur = await conn.execute("SELECT to_regclass('oauthd_schema') IS NOT NULL")
    row = await cur.fetchone()
    if row is None or not row[0]:
        return 0
    cur = await conn.execute("SELECT coalesce(max(version), 0) FROM oauthd_schema")
    row = await cur.fetchone()
    return int(row[0]) if row is not None else 0


def check_version(version: int) -> None:
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
                dsn, connect_timeout=connect_timeout(timeout), autocommit=True
            )
    except FAILURES as exc:
        raise unavailable(exc, timeout) from None
    try:
        async with conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute("CREATE TABLE IF NOT EXISTS oauthd_schema (version int NOT NULL)")
            before = await schema_version(conn)
            if before > latest_version():
                check_version(before)
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
    except FAILURES as exc:
        raise unavailable(exc, timeout) from None
