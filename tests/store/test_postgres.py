"""The PostgreSQL backend beyond the contract: `oauthd migrate`, the schema check on open,
an unreachable server. The contract itself runs in `test_base_contract.py`."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from oauthd import cli
from oauthd.clock import FakeClock
from oauthd.exits import ExitCode
from oauthd.store import Unavailable, codec
from tests.support.backends import open_harness
from tests.support.configs import TomlValue, render_toml, write_secret
from tests.support.daemon import run_oauthd
from tests.support.postgres import create_schema, drop_schema, postgres_probe, schema_dsn
from tests.support.records import NOW, make_client
from tests.support.services import service_missing

postgres = pytest.importorskip("oauthd.store.postgres")
postgres_schema = pytest.importorskip("oauthd.store.postgres_schema")


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """A fresh, empty schema of the test server, dropped afterwards."""
    if (reason := await postgres_probe()) is not None:
        service_missing(f"postgres: {reason}")
    name = f"oauthd_test_{uuid.uuid4().hex}"
    await create_schema(name)
    try:
        yield name
    finally:
        await drop_schema(name)


def write_config(tmp_path: Path, dsn: str, timeout: str = "2s") -> Path:
    path = tmp_path / "oauthd.toml"
    write_secret(tmp_path / "oauthd.key", secrets.token_hex(32))  # a shared backend needs it
    storage: dict[str, TomlValue] = {"backend": "postgres", "postgres_dsn": dsn, "timeout": timeout}
    path.write_text(
        render_toml({"storage": storage, "login": {"encryption_key": "file:oauthd.key"}})
    )
    return path


async def test_migrate_twice_is_idempotent(
    schema: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, schema_dsn(schema))
    latest = postgres_schema.latest_version()
    assert await asyncio.to_thread(cli.main, ["migrate", "--config", str(config)]) == 0
    assert f"from version 0 to {latest}" in capsys.readouterr().out
    assert await asyncio.to_thread(cli.main, ["migrate", "--config", str(config)]) == 0
    assert f"up to date (version {latest})" in capsys.readouterr().out
    store = await postgres.PostgresStore.open(schema_dsn(schema), FakeClock())
    await store.ping()
    await store.close()


async def test_concurrent_migrates_take_turns(schema: str) -> None:
    dsn = schema_dsn(schema)
    results = await asyncio.gather(*(postgres_schema.migrate(dsn, op_timeout=10) for _ in range(3)))
    applied = sorted(tuple(versions) for _, versions in results)
    latest = postgres_schema.latest_version()
    assert applied == [(), (), tuple(range(1, latest + 1))]
    store = await postgres.PostgresStore.open(dsn, FakeClock())
    await store.close()


async def test_open_on_an_unmigrated_schema_says_to_migrate(schema: str) -> None:
    with pytest.raises(postgres_schema.SchemaError, match="run `oauthd migrate") as raised:
        await postgres.PostgresStore.open(schema_dsn(schema), FakeClock())
    assert raised.value.exit_code == ExitCode.CONFIG


async def test_serve_on_an_unmigrated_schema_exits_78(schema: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, schema_dsn(schema))
    code, _, err = await run_oauthd("serve", "--config", str(config))
    assert code == ExitCode.CONFIG, err
    assert "oauthd migrate" in err


async def test_open_on_a_newer_schema_refuses(schema: str) -> None:
    dsn = schema_dsn(schema)
    await postgres_schema.migrate(dsn)
    import psycopg

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("INSERT INTO oauthd_schema (version) VALUES (999)")
    with pytest.raises(postgres_schema.SchemaError, match="newer"):
        await postgres.PostgresStore.open(dsn, FakeClock())
    with pytest.raises(postgres_schema.SchemaError, match="newer"):
        await postgres_schema.migrate(dsn)


async def test_a_closed_port_is_unavailable_within_the_timeout(tmp_path: Path) -> None:
    dsn = "postgresql://postgres@127.0.0.1:1/test"
    started = time.monotonic()
    with pytest.raises(Unavailable):
        await postgres.PostgresStore.open(dsn, FakeClock(), op_timeout=0.5)
    with pytest.raises(Unavailable):
        await postgres_schema.migrate(dsn, op_timeout=0.5)
    assert time.monotonic() - started < 3
    config = write_config(tmp_path, dsn, timeout="500ms")
    assert await asyncio.to_thread(cli.main, ["migrate", "--config", str(config)]) == 69


async def test_serve_with_the_backend_down_exits_69_without_a_traceback(tmp_path: Path) -> None:
    config = write_config(tmp_path, "postgresql://postgres@127.0.0.1:1/test", timeout="500ms")
    code, _, err = await run_oauthd("serve", "--config", str(config))
    assert code == ExitCode.UNAVAILABLE, err
    assert "storage backend is unavailable" in err
    assert "Traceback" not in err


async def test_a_closed_store_is_unavailable_not_an_error(schema: str) -> None:
    dsn = schema_dsn(schema)
    await postgres_schema.migrate(dsn)
    store = await postgres.PostgresStore.open(dsn, FakeClock(), op_timeout=0.5)
    assert store.status().healthy
    await store.close()
    with pytest.raises(Unavailable):
        await store.grants.get("x")
    status = store.status()
    assert not status.healthy and status.detail
    assert status.backend == "postgres"


async def test_version_1_is_refused_and_migrated_to_the_invalidation_triggers(schema: str) -> None:
    """Version 2 adds the triggers that tell every instance's read cache of a change to a
    grant or an MCP session binding (store/postgres_notify.py)."""
    import orjson
    import psycopg

    dsn = schema_dsn(schema)
    first = postgres_schema.migrations()[0]
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("CREATE TABLE oauthd_schema (version int NOT NULL)")
        await conn.execute(first.sql.encode())
        await conn.execute("INSERT INTO oauthd_schema (version) VALUES (1)")
    with pytest.raises(postgres_schema.SchemaError, match="at version 1, this oauthd needs 4"):
        await postgres.PostgresStore.open(dsn, FakeClock())
    assert await postgres_schema.migrate(dsn) == (1, [2, 3, 4])

    async with (
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as listener,
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) as writer,
    ):
        await listener.execute("LISTEN oauthd_invalidate")
        for kind in ("grants", "mcp_sessions", "clients"):
            await writer.execute(
                "INSERT INTO oauthd_records (kind, key, record) VALUES (%s, 'k', '{}')", (kind,)
            )
            await writer.execute(
                "UPDATE oauthd_records SET record = '{\"a\": 1}' WHERE kind = %s", (kind,)
            )
            await writer.execute("DELETE FROM oauthd_records WHERE kind = %s", (kind,))
        await writer.execute("TRUNCATE oauthd_records")
        # The channel is the database's: other schemas' notices (other tests) are left out.
        heard = [
            payload
            for payload in [orjson.loads(n.payload) async for n in listener.notifies(timeout=1)]
            if payload[0] == schema
        ]
    assert heard == [
        [schema, "grants", "k"],  # the UPDATE
        [schema, "grants", "k"],  # the DELETE (each its own transaction)
        [schema, "mcp_sessions", "k"],
        [schema, "mcp_sessions", "k"],
        [schema, None, None],  # TRUNCATE: forget everything; inserts and clients: nothing
    ]


async def test_a_client_written_before_format_3_is_read_and_updated(tmp_path: Path) -> None:
    """A row written by an oauthd of format 2 (no `last_used_at`) reads with the default,
    and the first use writes the field."""
    async for harness in open_harness("postgres", tmp_path):
        store = harness.store
        assert isinstance(store, postgres.PostgresStore)
        old = dataclasses.replace(make_client(), expires_at=None, last_used_at=None)
        doc = orjson.loads(codec.encode(old))
        del doc["last_used_at"]
        await store.connections.write(
            "INSERT INTO oauthd_records (kind, key, record, expires_at) "
            "VALUES ('clients', %(key)s, %(record)s::jsonb, NULL)",
            {"key": old.client_id, "record": orjson.dumps(doc).decode()},
        )
        assert await store.clients.get(old.client_id) == old
        used = await store.clients.update(
            old.client_id, lambda c: dataclasses.replace(c, last_used_at=NOW)
        )
        assert used is not None and (await store.clients.get(old.client_id)) == used


async def test_version_2_is_refused_and_migrated_to_the_counters_table(schema: str) -> None:
    """Version 3 adds `oauthd_counters`, the shared rate limits (store/postgres_counters.py);
    the sweeper deletes the counters whose window ended."""
    import psycopg

    dsn = schema_dsn(schema)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("CREATE TABLE oauthd_schema (version int NOT NULL)")
        for migration in postgres_schema.migrations()[:2]:
            await conn.execute(migration.sql.encode())
        await conn.execute("INSERT INTO oauthd_schema (version) VALUES (2)")
    with pytest.raises(postgres_schema.SchemaError, match="at version 2, this oauthd needs 4"):
        await postgres.PostgresStore.open(dsn, FakeClock())
    assert await postgres_schema.migrate(dsn) == (2, [3, 4])
    clock = FakeClock()
    store = await postgres.PostgresStore.open(dsn, clock)
    try:
        await store.counters.add("short", 10)
        await store.counters.add("long", 100)
        clock.advance(10)
        assert await store.purge_expired() == 0  # counters are not records
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            cur = await conn.execute("SELECT key FROM oauthd_counters")
            assert [row[0] for row in await cur.fetchall()] == ["long"]
    finally:
        await store.close()
