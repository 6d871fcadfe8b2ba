"""Ending a grant ends its open streams: GET streams and SSE answers, at once in the
instance that ended it, within 1 s in every other instance on a shared backend."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from oauthd.http.keys import PROXY
from tests.support.backends import open_harness
from tests.support.configs import write_secret
from tests.support.ports import free_port
from tests.support.proxy_app import Granted, Oauthd, StartOauthd
from tests.support.upstream import FakeUpstream, Seen, sse_event, start_sse

SSE = {"Accept": "text/event-stream"}


class Endless:
    """An upstream answer that streams one event, then nothing until the client goes."""

    def __init__(self) -> None:
        self.opened = 0
        self.event = asyncio.Event()

    async def __call__(self, request: web.Request, seen: Seen) -> web.StreamResponse:
        response = await start_sse(request)
        await response.write(sse_event('{"jsonrpc":"2.0","method":"notifications/progress"}'))
        self.opened += 1
        self.event.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def wait_open(self, count: int) -> None:
        async with asyncio.timeout(5):
            while self.opened < count:
                self.event.clear()
                await self.event.wait()


def open_stream(oauthd: Oauthd, granted: Granted, method: str = "GET") -> asyncio.Task[object]:
    if method == "GET":
        return asyncio.create_task(oauthd.mcp("GET", granted, headers=SSE))
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "slow"}}
    return asyncio.create_task(oauthd.mcp("POST", granted, headers=SSE, json=call))


async def ended_within(stream: asyncio.Task[object], seconds: float) -> float:
    started = time.monotonic()
    await asyncio.wait_for(stream, seconds)
    return time.monotonic() - started


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_revocation_ends_the_grants_streams_at_once(
    oauthd: Oauthd, upstream: FakeUpstream, method: str
) -> None:
    endless = upstream.answer = Endless()
    revoked, kept = await oauthd.grant(), await oauthd.grant()
    streams = [open_stream(oauthd, revoked, method), open_stream(oauthd, kept, method)]
    await endless.wait_open(2)
    await oauthd.revoke(revoked.refresh, revoked.client_id)
    assert await ended_within(streams[0], 1) < 1
    await asyncio.sleep(0.2)
    assert not streams[1].done()  # another grant's stream goes on
    metrics = (await oauthd.call("GET", "/metrics")).text
    assert 'oauthd_upstream_errors_total{kind="stream_cut"} 0.0' in metrics  # not a failure
    reconnect = await oauthd.mcp("GET", revoked, headers=SSE)
    assert reconnect.status == 401
    streams[1].cancel()


async def test_every_way_a_grant_ends_ends_its_streams(
    start_oauthd: StartOauthd, upstream: FakeUpstream
) -> None:
    oauthd = await start_oauthd(tokens={"refresh_grace": 0.0})  # a reuse is a reuse at once
    endless = upstream.answer = Endless()
    by_admin, by_account, by_reuse = [await oauthd.grant() for _ in range(3)]
    streams = [open_stream(oauthd, g) for g in (by_admin, by_account, by_reuse)]
    await endless.wait_open(3)
    await oauthd.auth.revoke_grant(by_admin.grant_id, by="admin")
    assert await ended_within(streams[0], 1) < 1
    await oauthd.auth.revoke_grant(by_account.grant_id, by="account")
    assert await ended_within(streams[1], 1) < 1
    await oauthd.refreshed(by_reuse)
    assert (await oauthd.refresh(by_reuse)).status == 400  # the superseded token again
    assert await ended_within(streams[2], 1) < 1


@pytest.fixture(params=["redis", "postgres"])
async def pair(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    start_oauthd: StartOauthd,
) -> AsyncIterator[tuple[Oauthd, Oauthd]]:
    """Two instances on one shared backend, one issuer."""
    shared = tmp_path / "shared"
    shared.mkdir()
    key = shared / "encryption.key"
    write_secret(key, secrets.token_hex(32))
    async for harness in open_harness(request.param, shared):
        await harness.store.close()  # the instances open their own
        sections = {
            "issuer": f"http://127.0.0.1:{free_port()}",
            "storage": harness.storage(),
            "login": {"encryption_key": f"file:{key}"},
        }
        yield await start_oauthd(**sections), await start_oauthd(**sections)


async def test_a_revocation_in_another_instance_ends_streams_within_a_second(
    pair: tuple[Oauthd, Oauthd], upstream: FakeUpstream
) -> None:
    here, there = pair
    endless = upstream.answer = Endless()
    revoked, kept = await here.grant(), await here.grant()
    streams = [open_stream(here, revoked), open_stream(here, kept, "POST")]
    await endless.wait_open(2)
    await there.revoke(revoked.refresh, revoked.client_id)
    assert await ended_within(streams[0], 1.5) < 1
    await there.auth.revoke_grant(kept.grant_id, by="admin")
    assert await ended_within(streams[1], 1.5) < 1


async def test_a_grant_that_expired_while_streaming_ends_its_streams(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    endless = upstream.answer = Endless()
    granted = await oauthd.grant()
    stream = open_stream(oauthd, granted)
    await endless.wait_open(1)
    proxy_streams = oauthd.app[PROXY].streams
    await proxy_streams.sweep()
    assert not stream.done()
    oauthd.clock.advance(oauthd.config.tokens.refresh_ttl + 1)
    await proxy_streams.sweep()
    assert await ended_within(stream, 1) < 1
