"""kill -9 under audited load on the shared backends: every acknowledged write has its
audit record, and each chain verifies (issue #14).

Two children (`tests/support/scripts/audit_writer.py`), each an instance with a chain of
its own, make concurrent audited writes (add, update, take) on one Redis prefix or one
PostgreSQL schema and print each acknowledged write's id; both are SIGKILLed at a random
moment, and started again, KILLS times. Then every acknowledged id has its record (0
missing) and both chains pass `verify`: no fork, no gap, across the kills.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from oauthd.audit import AuditReader, verify
from tests.support.postgres import (
    create_schema,
    drop_schema,
    postgres_probe,
    schema_dsn,
    schema_name,
)
from tests.support.redis_backend import REDIS_URL, redis_cleanup, redis_probe
from tests.support.services import StateRef, service_missing

HELPER = Path(__file__).parents[1] / "support" / "scripts" / "audit_writer.py"
KILLS = 20  # per backend
CHAINS = ("instance-a", "instance-b")


@dataclass(slots=True)
class Shared:
    backend: str
    where: str  # the key prefix, or the DSN of the schema

    def reader(self) -> AuditReader:
        if self.backend == "redis":
            from oauthd.store.redis_audit import RedisAuditReader

            return RedisAuditReader(REDIS_URL, self.where)
        from oauthd.store.postgres_audit import PostgresAuditReader

        return PostgresAuditReader(self.where)


@pytest.fixture(params=["redis", "postgres"])
async def shared(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Shared]:
    namespace = f"oauthd-test-{uuid.uuid4().hex}"
    if request.param == "redis":
        if (reason := await redis_probe()) is not None:
            service_missing(reason)
        state = StateRef(tmp_path, namespace)
        try:
            yield Shared("redis", f"{namespace}:")
        finally:
            await redis_cleanup(state)
        return
    if (reason := await postgres_probe()) is not None:
        service_missing(reason)
    from oauthd.store.postgres_schema import migrate

    schema = schema_name(namespace)
    await create_schema(schema)
    try:
        await migrate(schema_dsn(schema))
        yield Shared("postgres", schema_dsn(schema))
    finally:
        await drop_schema(schema)


async def run_and_kill(shared: Shared, chain: str, run: str, delay: float) -> list[str]:
    """Start a writer, SIGKILL it `delay` s after it is ready; the ids it acknowledged."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HELPER),
        shared.backend,
        shared.where,
        chain,
        run,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    loop = asyncio.get_running_loop()

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)

    watchdog = loop.call_later(20, kill)
    acked: list[str] = []
    assert proc.stdout is not None and proc.stderr is not None
    stderr = asyncio.create_task(proc.stderr.read())
    while raw := await proc.stdout.readline():
        line = raw.decode().rstrip("\n")
        if line == "READY":
            loop.call_later(delay, kill)
        elif line.startswith("A "):
            acked.append(line[2:])
    returncode = await proc.wait()
    watchdog.cancel()
    errors = (await stderr).decode()
    assert returncode == -signal.SIGKILL, f"writer ended by itself ({returncode}): {errors}"
    assert "Traceback" not in errors, errors
    return acked


async def read_chain(shared: Shared, chain: str) -> list[tuple[str, bytes]]:
    reader = shared.reader()
    try:
        assert chain in await reader.chains()
        return [item async for item in reader.lines(chain)]
    finally:
        await reader.close()


async def test_every_acknowledged_write_has_its_record_after_kill_9(shared: Shared) -> None:
    rng = random.Random()
    acked: dict[str, list[str]] = {chain: [] for chain in CHAINS}
    for kill in range(KILLS):
        delay = rng.uniform(0.02, 0.5)
        runs = await asyncio.gather(
            *(run_and_kill(shared, chain, f"{chain}-{kill}", delay) for chain in CHAINS)
        )
        for chain, ids in zip(CHAINS, runs, strict=True):
            acked[chain].extend(ids)
    for chain in CHAINS:
        lines = await read_chain(shared, chain)
        verdict = verify(chain, lines)
        assert verdict.ok, f"{chain}: {verdict.problem}"
        assert verdict.first == 1 and verdict.records == len(lines)
        recorded = {orjson.loads(line)["id"] for _, line in lines}
        missing = [write for write in acked[chain] if write not in recorded]
        assert acked[chain], f"{chain}: no write was acknowledged in {KILLS} runs"
        assert missing == [], f"{chain}: {len(missing)} acknowledged writes have no record"
