"""Calls and streams do not share one cap: open GET streams never starve ordinary calls,
and a call that finds no free slot is a 503 with Retry-After (never a 504 blaming the
upstream)."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
from aiohttp import web

from tests.support.proxy_app import StartOauthd
from tests.support.upstream import FakeUpstream, Seen, echo, sse_event, start_sse


async def test_200_open_streams_do_not_starve_calls(
    start_oauthd: StartOauthd, upstream: FakeUpstream
) -> None:
    """The load test's shape: 200 GET streams held open (more than the 100 slots), then
    ordinary POSTs: every one answered 200, promptly."""
    release = asyncio.Event()

    async def answer(request: web.Request, seen: Seen) -> web.StreamResponse:
        if request.method != "GET":
            return await echo(request, seen)
        response = await start_sse(request)
        await response.write(sse_event("{}"))
        await release.wait()
        return response

    upstream.answer = answer
    oauthd = await start_oauthd(upstream={"connect_timeout": 2.0})
    granted = await oauthd.grant()
    connector = aiohttp.TCPConnector(limit=0)
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
        stack.callback(release.set)
        headers = granted.bearer(Accept="text/event-stream")

        async def open_stream() -> None:
            response = await stack.enter_async_context(client.get(oauthd.mcp_url, headers=headers))
            assert response.status == 200
            await asyncio.wait_for(response.content.readuntil(b"\n\n"), 10)

        await asyncio.gather(*(open_stream() for _ in range(200)))
        replies = await asyncio.wait_for(
            asyncio.gather(*(oauthd.mcp("POST", granted) for _ in range(20))), 10
        )
        assert [reply.status for reply in replies] == [200] * 20
    metrics = (await oauthd.call("GET", "/metrics")).text
    assert 'oauthd_upstream_errors_total{kind="timeout"} 0.0' in metrics


async def test_a_call_without_a_free_slot_is_503_with_retry_after(
    start_oauthd: StartOauthd, upstream: FakeUpstream
) -> None:
    release, both_arrived = asyncio.Event(), asyncio.Event()

    async def answer(request: web.Request, seen: Seen) -> web.StreamResponse:
        if len(upstream.requests) == 2:
            both_arrived.set()
        await release.wait()
        return await echo(request, seen)

    upstream.answer = answer
    oauthd = await start_oauthd(upstream={"max_connections": 2, "connect_timeout": 0.3})
    granted = await oauthd.grant()
    held = [asyncio.create_task(oauthd.mcp("POST", granted)) for _ in range(2)]
    await asyncio.wait_for(both_arrived.wait(), 5)
    reply = await asyncio.wait_for(oauthd.mcp("POST", granted), 5)
    error = reply.assert_jsonrpc_error(503)
    assert reply.headers["Retry-After"] == "1"
    assert "busy" in error["message"]
    assert len(upstream.requests) == 2  # the refused call never reached the upstream
    release.set()
    assert [r.status for r in await asyncio.gather(*held)] == [200, 200]
    # A freed slot serves the next call; the wait and the refusal have their own metric.
    assert (await oauthd.mcp("POST", granted)).status == 200
    metrics = (await oauthd.call("GET", "/metrics")).text
    assert 'oauthd_proxy_slot_wait_seconds_count{outcome="refused"} 1.0' in metrics
    assert 'oauthd_upstream_errors_total{kind="timeout"} 0.0' in metrics
