"""Reading a test store's audit records back, through what each backend offers: the
memory trail's lines, the shared backends' offline readers (`oauthd.store.redis_audit`,
`oauthd.store.postgres_audit`) and the file backend's (`oauthd.store.audit_reader`), which
reads the segments and then the journal."""

from __future__ import annotations

from typing import Any

import orjson

from oauthd.audit import AuditReader, MemoryTrail
from oauthd.store import Store
from oauthd.store.audit import TrailSettings
from oauthd.store.audit_reader import FileAuditReader
from tests.support.backends import StoreHarness
from tests.support.postgres import schema_dsn, schema_name
from tests.support.redis_backend import REDIS_URL, prefix


def reader_of(harness: StoreHarness) -> AuditReader:
    """The offline reader of the harness's shared backend."""
    if harness.name == "redis":
        from oauthd.store.redis_audit import RedisAuditReader

        return RedisAuditReader(REDIS_URL, prefix(harness.state))
    if harness.name == "postgres":
        from oauthd.store.postgres_audit import PostgresAuditReader

        return PostgresAuditReader(schema_dsn(schema_name(harness.state.namespace)))
    if harness.name.startswith("file"):
        return FileAuditReader(harness.state.path / "state")
    raise AssertionError(f"{harness.name} has no offline reader here")


async def audit_lines(harness: StoreHarness, chain: str | None = None) -> list[tuple[str, bytes]]:
    """(where, line) of the chain (default: the open store's), oldest first."""
    trail = harness.store.audit
    if isinstance(trail, MemoryTrail):
        return [(f"memory record {i}", line) for i, line in enumerate(trail.lines, 1)]
    reader = reader_of(harness)
    try:
        return [item async for item in reader.lines(chain or trail.chain.name)]
    finally:
        await reader.close()


async def audit_records(harness: StoreHarness) -> list[dict[str, Any]]:
    """The open store's chain's records, as dicts."""
    return [orjson.loads(line) for _, line in await audit_lines(harness)]


async def open_shared(harness: StoreHarness, chain: str, *, enabled: bool = True) -> Store:
    """Another instance on the harness's shared backend, with the chain `chain`."""
    settings = TrailSettings(chain, enabled=enabled)
    if harness.name == "redis":
        from oauthd.store.redis import RedisStore

        return RedisStore(harness.clock, REDIS_URL, prefix=prefix(harness.state), audit=settings)
    from oauthd.store.postgres import PostgresStore

    dsn = schema_dsn(schema_name(harness.state.namespace))
    return await PostgresStore.open(dsn, harness.clock, op_timeout=5, audit=settings)


async def chain_lines(harness: StoreHarness, chain: str) -> list[tuple[str, bytes]]:
    reader = reader_of(harness)
    try:
        return [item async for item in reader.lines(chain)]
    finally:
        await reader.close()
