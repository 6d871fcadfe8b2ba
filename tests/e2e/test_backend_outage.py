"""A shared backend (redis, postgres) that goes away and comes back, on private servers that
the tests crash, freeze and start again (tests/e2e/outage_servers.py): every store call is
`Unavailable` within `storage.timeout`, `check` (/readyz) turns false and true again by
itself, the records are all there afterwards, and the pooled connections that the restart
killed fail no call (PostgreSQL's known weak spot). The daemon under load through such an
outage: test_backend_outage_daemon.py. `serve` with the backend down at start exits 69:
tests/store/test_postgres.py."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from oauthd import housekeeping
from oauthd.assembly import STORE, create_app
from oauthd.clock import FakeClock
from oauthd.config import default_config
from oauthd.http import errors
from oauthd.store import Store, StoreStatus, Unavailable
from oauthd.store.base import Probe
from tests.e2e.outage_servers import RECOVER_WITHIN, TIMEOUT, Backend
from tests.support.records import make_client, make_grant
from tests.support.wait import eventually

MARGIN = 1.0  # what a call may take beyond the timeout on a busy 2-core machine


# -- the probe behind Store.check ------------------------------------------------------------


async def test_the_probe_pings_at_most_once_per_interval_and_shares_the_answer() -> None:
    pings = 0
    down = False

    async def ping() -> None:
        nonlocal pings
        pings += 1
        await asyncio.sleep(0.01)
        if down:
            raise Unavailable("server gone")

    probe = Probe(ping, every=0.2)
    assert await asyncio.gather(*(probe.problem() for _ in range(10))) == [None] * 10
    assert await probe.problem() is None
    assert pings == 1, "concurrent and repeated checks share one ping"
    down = True
    assert await probe.problem() is None, "the answer is reused within the interval"
    await asyncio.sleep(0.25)
    assert await probe.problem() == "server gone"
    down = False
    await asyncio.sleep(0.25)
    assert await probe.problem() is None, "healthy again by itself"
    assert pings == 3


# -- the store -------------------------------------------------------------------------------


def store_calls(store: Store) -> dict[str, Callable[[], Awaitable[Any]]]:
    """One call of each sort, on keys that may or may not exist."""
    grant = make_grant()

    async def scan() -> None:
        async for _ in store.grants.scan():
            pass

    return {
        "get": lambda: store.grants.get(grant.id),
        "add": lambda: store.grants.add(make_grant()),
        "put": lambda: store.grants.put(grant),
        "take": lambda: store.codes.take("no-such-code"),
        "update": lambda: store.grants.update(grant.id, lambda r: r),
        "delete": lambda: store.grants.delete("no-such-grant"),
        "count": store.grants.count,
        "scan": scan,
        "purge": store.purge_expired,
        "ping": store.ping,
    }


async def wait_for_check(store: Store, healthy: bool, within: float) -> float:
    """Seconds until `store.check()` reports `healthy` (fails after `within`)."""

    async def reports() -> bool:
        return (await store.check()).healthy == healthy

    return await eventually(reports, within, 0.05)


async def warm_pool(store: Store, connections: int) -> None:
    """Make the pool open several connections (concurrent calls that each hold one)."""
    await asyncio.gather(*(store.grants.count() for _ in range(connections)))


async def test_the_store_survives_a_crash_and_recovers_by_itself(backend: Backend) -> None:
    store = await backend.open_store(FakeClock())
    try:
        kept = [make_grant() for _ in range(5)]
        client = make_client()
        for grant in kept:
            await store.grants.add(grant)
        await store.clients.add(client)
        await warm_pool(store, 5)
        assert (await store.check()).healthy

        await backend.crash()

        async def unavailable(name: str, call: Callable[[], Awaitable[Any]]) -> None:
            started = time.monotonic()
            with pytest.raises(Unavailable) as raised:
                await call()
            took = time.monotonic() - started
            assert took < TIMEOUT + MARGIN, f"{name} took {took:.2f} s"
            assert raised.value.retry_after >= 1

        await asyncio.gather(*(unavailable(*item) for item in store_calls(store).items()))
        await wait_for_check(store, False, TIMEOUT + 1.5)
        status = await store.check()
        assert status.backend == backend.name and status.detail, status

        await backend.restart()
        took = await wait_for_check(store, True, RECOVER_WITHIN)
        print(f"{backend.name}: check healthy {took:.2f} s after the server returned")
        assert [await store.grants.get(g.id) for g in kept] == kept
        assert await store.clients.get(client.client_id) == client
        await store.grants.add(make_grant())
        assert store.status().healthy
    finally:
        await store.close()


async def test_a_restart_while_idle_fails_no_call(backend: Backend) -> None:
    """The server restarts while the pool holds idle connections to it (all dead now):
    no call fails for them, neither reads nor writes (writes are never retried, so a dead
    connection must be found before anything is sent on it)."""
    store = await backend.open_store(FakeClock(), pool_size=8)
    try:
        await warm_pool(store, 8)
        await backend.crash()
        await backend.restart()
        results = await asyncio.gather(
            *(store.grants.add(make_grant()) for _ in range(8)),
            *(store.grants.get("no-such-grant") for _ in range(8)),
            *(store.codes.take("no-such-code") for _ in range(8)),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        assert failed == [], failed
        assert (await store.check()).healthy
    finally:
        await store.close()


async def test_a_frozen_server_is_unavailable_within_the_timeout(backend: Backend) -> None:
    """A server that accepts connections and answers nothing (SIGSTOP): every call gives
    up within the timeout, /readyz's check too; all is well once it runs again."""
    store = await backend.open_store(FakeClock())
    try:
        grant = make_grant()
        await store.grants.add(grant)
        await warm_pool(store, 3)
        await backend.freeze()
        try:
            calls = store_calls(store)
            started = time.monotonic()
            outcomes = await asyncio.gather(
                *(call() for call in calls.values()), store.check(), return_exceptions=True
            )
            took = time.monotonic() - started
            *raised, status = outcomes
            assert all(isinstance(r, Unavailable) for r in raised), dict(
                zip(calls, raised, strict=True)
            )
            assert isinstance(status, StoreStatus) and not status.healthy and status.detail
            assert took < TIMEOUT + MARGIN, f"the calls took {took:.2f} s"
            print(f"{backend.name} frozen: every call Unavailable within {took:.2f} s")
        finally:
            await backend.thaw()
        await wait_for_check(store, True, RECOVER_WITHIN)
        assert await store.grants.get(grant.id) == grant
    finally:
        await store.close()


# -- logging an outage: once, not per request or per round -----------------------------------


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def events(self) -> list[str]:
        return [getattr(r, "event", "") for r in self.records]


@pytest.fixture
def captured() -> Iterator[Captured]:
    """Records of the oauthd loggers, whatever `setup_logging` did to propagation."""
    handler = Captured()
    loggers = [logging.getLogger(n) for n in ("oauthd.housekeeping", "oauthd.http")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


async def test_housekeeping_rides_out_an_outage_and_logs_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, captured: Captured
) -> None:
    monkeypatch.setattr(housekeeping, "PURGE_EVERY", 0.01)
    config = default_config(tmp_path)
    config = dataclasses.replace(
        config, storage=dataclasses.replace(config.storage, backend="memory")
    )
    rounds = 0

    async def purge() -> int:
        nonlocal rounds
        rounds += 1
        if rounds <= 10:
            raise Unavailable("server gone")
        return 0

    app = create_app(config)
    async with TestClient(TestServer(app)) as client:
        monkeypatch.setattr(client.app[STORE], "purge_expired", purge)
        for _ in range(200):
            if rounds > 15:
                break
            await asyncio.sleep(0.01)
        assert rounds > 15, "the purge stopped after the outage"
    events = captured.events()
    assert events.count("purge.unavailable") == 1, events
    assert events.count("purge.resumed") == 1, events
    assert "purge.failed" not in events


def test_refused_requests_are_logged_once_every_few_seconds(captured: Captured) -> None:
    now = 100.0
    refusals = errors.RefusalLog(every=5.0, clock=lambda: now)
    for _ in range(50):
        refusals.refused(Unavailable("redis: gone"), "/mcp")
    now += 5.0
    refusals.refused(Unavailable("redis: gone"), "/token")
    lines = [r for r in captured.records if getattr(r, "event", "") == "http.unavailable"]
    assert [(getattr(r, "path", ""), getattr(r, "also_refused", -1)) for r in lines] == [
        ("/mcp", 0),
        ("/token", 49),
    ]
