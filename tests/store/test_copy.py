"""`oauthd state copy`: file -> postgres -> redis -> file with every kind of record, the
refusal of a non-empty target, the count check, and the CLI. Needs the test Redis and
PostgreSQL servers (skipped without them; failed with `OAUTHD_REQUIRE_SERVICES=1`)."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from oauthd import cli
from oauthd.clock import FakeClock, SystemClock
from oauthd.model import Record
from oauthd.store import FileStore, MemoryStore, Store
from oauthd.store.copy import CountMismatch, TargetNotEmpty, copy_state
from oauthd.store.file import make_engine
from tests.support.configs import write_secret
from tests.support.postgres import (
    create_schema,
    drop_schema,
    open_postgres,
    postgres_cleanup,
    postgres_probe,
    schema_dsn,
)
from tests.support.records import KINDS, NOW, make, nulled
from tests.support.redis_backend import REDIS_URL, open_redis, redis_cleanup, redis_probe
from tests.support.services import StateRef, service_missing


@pytest.fixture
async def services() -> None:
    for name, probe in (("redis", redis_probe), ("postgres", postgres_probe)):
        if (reason := await probe()) is not None:
            service_missing(f"{name}: {reason}")


def ref(tmp_path: Path, name: str) -> StateRef:
    path = tmp_path / name
    path.mkdir()
    return StateRef(path, f"oauthd-test-{uuid.uuid4().hex}")


async def open_file(path: Path, clock: Any) -> Store:
    engine = make_engine(path, journaled=True, interval=30, debounce=0.05, max_wait=0.2)
    return await FileStore.open(engine, clock)


async def contents(store: Store) -> dict[str, dict[str, Record]]:
    out: dict[str, dict[str, Record]] = {}
    for table in store.tables():
        out[table.kind] = {r.key: r async for r in table.scan()}
    return out


def sample(now: float) -> tuple[list[Record], list[Record]]:
    """(live records of every kind, nulled ones included; records expired at `now`)."""
    live: list[Record] = []
    expired: list[Record] = []
    for kind in KINDS:
        live += [make(kind, expires_at=now + 3600) for _ in range(5)]
        live.append(nulled(make(kind)))
        expired.append(make(kind, expires_at=now - 1))
    return live, expired


async def fill(store: Store, records: list[Record]) -> None:
    tables = {t.kind: t for t in store.tables()}
    for record in records:
        await tables[type(record).KIND].put(record)


def expected(records: list[Record]) -> dict[str, dict[str, Record]]:
    out: dict[str, dict[str, Record]] = {kind: {} for kind in KINDS}
    for record in records:
        out[type(record).KIND][record.key] = record
    return out


class Progress:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []

    def __call__(self, kind: str, done: int, total: int) -> None:
        self.calls.append((kind, done, total))


async def test_round_trip_file_postgres_redis_file(services: None, tmp_path: Path) -> None:
    clock = FakeClock()
    live, expired = sample(NOW)
    pg_ref, redis_ref = ref(tmp_path, "pg"), ref(tmp_path, "redis")
    source = await open_file(tmp_path / "a", clock)
    pg = redis = back = None
    try:
        await fill(source, live + expired)
        for table in source.tables():
            assert await table.count() == 7  # an expired record of each kind is stored
        pg = await open_postgres(pg_ref, clock)  # a fresh schema, migrated
        progress = Progress()
        copied = await copy_state(source, pg, progress, batch=4)
        want = {kind: 6 for kind in KINDS}
        assert copied == want
        assert ("grants", 0, 6) in progress.calls and ("grants", 6, 6) in progress.calls
        assert [c for c in progress.calls if c[0] == "grants"][1] == ("grants", 4, 6)

        redis = await open_redis(redis_ref, clock)
        assert await copy_state(pg, redis, Progress()) == want
        await source.close()
        back = await open_file(tmp_path / "b", clock)
        assert await copy_state(redis, back, Progress()) == want
        assert await contents(back) == expected(live)
        for table in back.tables():
            assert await table.count() == 6  # expired records were not copied at all

        with pytest.raises(TargetNotEmpty, match="--merge"):
            await copy_state(back, pg, Progress())
        assert await copy_state(back, pg, Progress(), merge=True) == want
        assert await contents(pg) == expected(live)
    finally:
        for store in (source, pg, redis, back):
            if store is not None:
                await store.close()
        await postgres_cleanup(pg_ref)
        await redis_cleanup(redis_ref)


async def test_a_target_that_drops_writes_is_a_count_mismatch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    source, target = MemoryStore(clock), MemoryStore(clock)
    live, expired = sample(NOW)
    await fill(source, live + expired)

    async def lost(record: Record) -> None:
        return None

    monkeypatch.setattr(target.grants, "put", lost)
    with pytest.raises(CountMismatch, match="grants expected 6, found 0") as raised:
        await copy_state(source, target, Progress())
    assert raised.value.copied["grants"] == 6


def file_config(path: Path, state: Path) -> Path:
    path.write_text(f'[storage]\nbackend = "file"\npath = "{state}"\n')
    return path


def shared_key(directory: Path) -> str:
    """The `[login]` table a shared backend's config needs (the instances' common key)."""
    write_secret(directory / "oauthd.key", secrets.token_hex(32))
    return '[login]\nencryption_key = "file:oauthd.key"\n'


@pytest.fixture
async def schema(services: None) -> AsyncIterator[str]:
    name = f"oauthd_test_{uuid.uuid4().hex}"
    await create_schema(name)
    try:
        yield name
    finally:
        await drop_schema(name)


async def test_cli_copies_file_to_postgres_to_redis_and_back(
    schema: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live, expired = sample(time.time())
    source = await open_file(tmp_path / "a", SystemClock())
    await fill(source, live + expired)

    a = file_config(tmp_path / "a.toml", tmp_path / "a")
    pg = tmp_path / "pg.toml"
    dsn = schema_dsn(schema).replace("\\", "\\\\").replace('"', '\\"')
    pg.write_text(
        f'[storage]\nbackend = "postgres"\npostgres_dsn = "{dsn}"\n' + shared_key(tmp_path)
    )
    prefix = f"oauthd-test-{uuid.uuid4().hex}"
    rd = tmp_path / "redis.toml"
    rd.write_text(
        f'[storage]\nbackend = "redis"\nredis_url = "{REDIS_URL}"\nredis_prefix = "{prefix}:"\n'
        + shared_key(tmp_path)
    )
    b = file_config(tmp_path / "b.toml", tmp_path / "b")

    def run(*argv: str) -> int:
        return cli.main(list(argv))

    try:
        # the daemon (here: our open store) holds the source's lock: 75, try again later
        assert (
            await asyncio.to_thread(run, "state", "copy", "--from", str(a), "--to", str(pg)) == 75
        )
        assert "stop it first" in capsys.readouterr().err
        await source.close()

        assert await asyncio.to_thread(run, "migrate", "--config", str(pg)) == 0
        assert await asyncio.to_thread(run, "state", "copy", "--from", str(a), "--to", str(pg)) == 0
        out, err = capsys.readouterr()
        assert "grants        6/6" in err and "grants        0/6" in err  # not a TTY: per 10 %
        assert "total" in out and str(6 * len(KINDS)) in out

        assert (
            await asyncio.to_thread(run, "state", "copy", "--from", str(a), "--to", str(pg)) == 78
        )
        assert "--merge" in capsys.readouterr().err
        args = ("state", "copy", "--from", str(a), "--to", str(pg), "--merge")
        assert await asyncio.to_thread(run, *args) == 0

        assert (
            await asyncio.to_thread(run, "state", "copy", "--from", str(pg), "--to", str(rd)) == 0
        )
        assert await asyncio.to_thread(run, "state", "copy", "--from", str(rd), "--to", str(b)) == 0
        assert await asyncio.to_thread(run, "state", "copy", "--from", str(a), "--to", str(a)) == 78
        capsys.readouterr()

        back = await open_file(tmp_path / "b", SystemClock())
        try:
            assert await contents(back) == expected(live)
        finally:
            await back.close()
    finally:
        await redis_cleanup(StateRef(tmp_path, prefix))


async def test_cli_backend_unavailable_is_69(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = await open_file(tmp_path / "a", SystemClock())
    await source.close()
    a = file_config(tmp_path / "a.toml", tmp_path / "a")
    rd = tmp_path / "redis.toml"
    rd.write_text(
        '[storage]\nbackend = "redis"\nredis_url = "redis://127.0.0.1:1/0"\n' + shared_key(tmp_path)
    )
    code = await asyncio.to_thread(cli.main, ["state", "copy", "--from", str(a), "--to", str(rd)])
    assert code == 69
    assert "unavailable" in capsys.readouterr().err
