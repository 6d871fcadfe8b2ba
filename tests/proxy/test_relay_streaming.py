"""Responses stream: SSE events reach the client one by one as the upstream sends them,
and either side going away ends the other side's stream promptly."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from aiohttp import web

from tests.support.proxy_app import Granted, Oauthd
from tests.support.upstream import FakeUpstream, Seen, sse_event, start_sse


async def next_event(response: aiohttp.ClientResponse, within: float = 2.0) -> bytes:
    """One SSE event (up to its blank line); fails instead of hanging when it is held."""
    return await asyncio.wait_for(response.content.readuntil(b"\n\n"), within)


async def test_a_post_answered_with_sse_arrives_event_by_event(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    """The upstream holds event 2 until the test has read event 1 through the proxy."""
    first_read = asyncio.Event()
    sent: list[int] = []

    async def answer(request: web.Request, seen: Seen) -> web.StreamResponse:
        response = await start_sse(request)
        await response.write(sse_event('{"progress": 1}', "e1"))
        sent.append(1)
        await asyncio.wait_for(first_read.wait(), 5)
        await response.write(sse_event('{"result": 2}', "e2"))
        sent.append(2)
        await response.write_eof()
        return response

    upstream.answer = answer
    granted = await oauthd.grant()
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "slow"}}
    headers = granted.bearer(Accept="application/json, text/event-stream")
    async with oauthd.client.session.post(oauthd.mcp_url, json=call, headers=headers) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert "Content-Length" not in response.headers
        first = await next_event(response)
        assert first == sse_event('{"progress": 1}', "e1")
        assert sent == [1]  # event 2 does not exist yet: nothing was buffered
        first_read.set()
        second = await next_event(response)
        assert second == sse_event('{"result": 2}', "e2")
        assert await asyncio.wait_for(response.content.read(), 2) == b""
    assert sent == [1, 2]


async def long_stream(oauthd: Oauthd, upstream: FakeUpstream) -> tuple[Granted, list[int]]:
    """A GET stream that sends an event every 20 ms until its client goes away."""
    sent: list[int] = []

    async def answer(request: web.Request, seen: Seen) -> web.StreamResponse:
        assert request.method == "GET"
        response = await start_sse(request)
        for n in range(10_000):
            await response.write(sse_event(f"tick {n}"))
            sent.append(n)
            await asyncio.sleep(0.02)
        return response

    upstream.answer = answer
    return await oauthd.grant(), sent


async def test_a_long_lived_get_stream_passes_events_as_they_come(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    granted, sent = await long_stream(oauthd, upstream)
    headers = granted.bearer(Accept="text/event-stream")
    async with oauthd.client.session.get(oauthd.mcp_url, headers=headers) as response:
        assert response.status == 200
        for n in range(5):
            assert await next_event(response) == sse_event(f"tick {n}")
            assert len(sent) <= n + 2  # the client is at most one tick behind the upstream


async def test_a_client_that_goes_away_closes_the_upstream_stream(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    granted, sent = await long_stream(oauthd, upstream)
    headers = granted.bearer(Accept="text/event-stream")
    async with oauthd.client.session.get(oauthd.mcp_url, headers=headers) as response:
        await next_event(response)
        await next_event(response)
        response.close()  # drop the connection mid-stream
    await asyncio.wait_for(upstream.gone.wait(), 2)
    count = len(sent)
    await asyncio.sleep(0.1)
    assert len(sent) == count  # the upstream handler really stopped


async def test_a_client_that_goes_away_during_a_post_stream_closes_it_upstream(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    async def answer(request: web.Request, seen: Seen) -> web.StreamResponse:
        response = await start_sse(request)
        await response.write(sse_event("working"))
        await asyncio.sleep(30)  # a long tool call
        return response

    upstream.answer = answer
    granted = await oauthd.grant()
    headers = granted.bearer(Accept="application/json, text/event-stream")
    async with oauthd.client.session.post(oauthd.mcp_url, json={}, headers=headers) as response:
        await next_event(response)
        response.close()
    await asyncio.wait_for(upstream.gone.wait(), 2)


async def test_an_upstream_that_closes_mid_stream_ends_the_client_stream(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    async def answer(request: web.Request, seen: Seen) -> web.StreamResponse:
        response = await start_sse(request)
        await response.write(sse_event("last words"))
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()
        await asyncio.sleep(30)  # cancelled when the connection is gone
        return response

    upstream.answer = answer
    granted = await oauthd.grant()
    started = time.monotonic()
    async with oauthd.client.session.get(oauthd.mcp_url, headers=granted.bearer()) as response:
        assert await next_event(response) == sse_event("last words")
        try:
            rest = await asyncio.wait_for(response.content.read(), 2)
        except aiohttp.ClientPayloadError:
            rest = b""  # a cut-off stream reported as such is as good as a clean end
    assert rest == b""
    assert time.monotonic() - started < 2


async def test_a_truncated_fixed_length_answer_does_not_hang_the_client(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    """The upstream promises 1000 bytes and dies after 10: the client must learn at once
    that the answer is incomplete, not wait for bytes that will never come."""

    async def answer(request: web.Request, seen: Seen) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 1000
        await response.prepare(request)
        await response.write(b'{"partial"')
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()
        await asyncio.sleep(30)
        return response

    upstream.answer = answer
    granted = await oauthd.grant()
    started = time.monotonic()
    async with oauthd.client.session.post(
        oauthd.mcp_url, json={}, headers=granted.bearer()
    ) as response:
        assert response.status == 200
        try:
            body = await asyncio.wait_for(response.read(), 3)
        except aiohttp.ClientPayloadError:
            body = None
        except TimeoutError:
            raise AssertionError("the client hangs on a truncated answer") from None
    assert body is None  # never delivered as if complete
    assert time.monotonic() - started < 2
