import asyncio
import dataclasses
import itertools
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from oauthd import housekeeping
from oauthd.assembly import STORE, create_app
from oauthd.clock import FakeClock
from oauthd.config import default_config
from oauthd.model import Consent
from oauthd.store import MemoryStore, Unavailable
from tests.support.records import make_client


async def test_expired_records_are_purged_from_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(housekeeping, "PURGE_EVERY", 0.05)
    config = default_config(tmp_path)
    config = dataclasses.replace(
        config, storage=dataclasses.replace(config.storage, backend="memory")
    )
    clock = FakeClock()
    app = create_app(config, clock=clock)
    async with TestClient(TestServer(app)) as client:
        store = client.app[STORE]
        now = clock.now()
        await store.consents.put(Consent("ann", "c1", ("mcp",), now, now + 10))
        await store.consents.put(Consent("bob", "c1", ("mcp",), now, now + 1000))
        clock.advance(100)
        for _ in range(100):
            if await store.consents.count() == 1:
                break
            await asyncio.sleep(0.02)
        assert await store.consents.count() == 1
        assert await store.consents.get("bob\x1fc1") is not None


async def test_the_idle_client_sweep_runs_in_the_first_round_then_hourly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(housekeeping, "PURGE_EVERY", 0.01)
    monkeypatch.setattr(housekeeping, "SWEEP_EVERY", 0.2)
    store = MemoryStore(FakeClock())
    sweeps: list[float] = []

    async def sweep() -> int:
        sweeps.append(asyncio.get_running_loop().time())
        if len(sweeps) == 1:
            raise Unavailable("down")  # logged by the round, the next one runs as usual
        return 1

    async with housekeeping.housekeeping(store, sweep):
        await asyncio.sleep(0.5)
    assert 2 <= len(sweeps) <= 4
    assert all(b - a >= 0.2 for a, b in itertools.pairwise(sweeps))


async def test_idle_clients_are_swept_by_the_daemons_housekeeping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(housekeeping, "PURGE_EVERY", 0.05)
    config = default_config(tmp_path)
    config = dataclasses.replace(
        config, storage=dataclasses.replace(config.storage, backend="memory")
    )
    clock = FakeClock()
    app = create_app(config, clock=clock)
    async with TestClient(TestServer(app)) as client:
        store = client.app[STORE]
        idle = make_client(created_at=clock.now() - 91 * 86_400, last_used_at=None, expires_at=None)
        await store.clients.put(idle)
        for _ in range(100):
            if await store.clients.get(idle.client_id) is None:
                break
            await asyncio.sleep(0.02)
        assert await store.clients.get(idle.client_id) is None
