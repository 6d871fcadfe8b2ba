import asyncio
import dataclasses
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from oauthd import housekeeping
from oauthd.assembly import STORE, create_app
from oauthd.clock import FakeClock
from oauthd.config import default_config
from oauthd.model import Consent


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
