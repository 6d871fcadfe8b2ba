"""The PostgreSQL server of the tests (`OAUTHD_TEST_POSTGRES_DSN`): each test gets a fresh
schema of its own (through `search_path` in the DSN), migrated by `oauthd migrate`'s code."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from oauthd.clock import FakeClock
from oauthd.store import Store

if TYPE_CHECKING:
    from tests.support.configs import TomlValue
    from tests.support.services import StateRef

DSN = os.environ.get("OAUTHD_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def schema_name(namespace: str) -> str:
    """A safe SQL identifier from the test's namespace ("oauthd-test-<hex>")."""
    return re.sub(r"[^a-z0-9_]", "_", namespace.lower())


def schema_dsn(schema: str, dsn: str = DSN) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(dsn, options=f"-c search_path={schema}")


async def postgres_probe() -> str | None:
    """Why the test server is unreachable, or None."""
    try:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    try:
        conn = await psycopg.AsyncConnection.connect(DSN, connect_timeout=2)
    except (psycopg.Error, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        where = {k: v for k, v in conninfo_to_dict(DSN).items() if k != "password"}
        return f"postgres at {where} is unreachable: {first}"
    await conn.close()
    return None


async def create_schema(schema: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')


async def drop_schema(schema: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def postgres_cleanup(state: StateRef) -> None:
    """The contract's cleanup: drop the test's schema (after the store is closed)."""
    if (state.path / "postgres-schema").exists():
        await drop_schema(schema_name(state.namespace))


async def open_postgres(state: StateRef, clock: FakeClock) -> Store:
    """The contract's opener: a schema per test, migrated on first open."""
    from oauthd.store.postgres import PostgresStore
    from oauthd.store.postgres_schema import migrate

    schema = schema_name(state.namespace)
    marker = state.path / "postgres-schema"
    if not marker.exists():
        await create_schema(schema)
        await migrate(schema_dsn(schema))
        marker.write_text(schema)
    return await PostgresStore.open(schema_dsn(schema), clock, pool_size=5, op_timeout=5)


def postgres_storage(state: StateRef) -> dict[str, TomlValue]:
    return {"backend": "postgres", "postgres_dsn": schema_dsn(schema_name(state.namespace))}


def postgres_writes(store: Store) -> int:
    from oauthd.store.postgres import PostgresStore

    assert isinstance(store, PostgresStore)
    return store.writes


async def postgres_dump(state: StateRef) -> dict[str, bytes]:
    """Every row of every table of the test's schema, as text, by table."""
    import psycopg

    schema = schema_name(state.namespace)
    rows: dict[str, bytes] = {}
    async with await psycopg.AsyncConnection.connect(DSN, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        )
        for (table,) in await cursor.fetchall():
            found = await conn.execute(f'SELECT t::text FROM "{schema}"."{table}" t')
            text = "\n".join(row[0] for row in await found.fetchall())
            rows[f"postgres {table}"] = text.encode()
    return rows
