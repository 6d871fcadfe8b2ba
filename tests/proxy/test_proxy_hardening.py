"""Proxy rules added after review: forwarding headers come from oauthd, a query-string
token is never passed on, a reused session id is not taken over, bindings in use do not
expire, and long-lived streams end promptly at shutdown."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from oauthd.crypto import lookup_key
from tests.support.proxy_app import Oauthd
from tests.support.upstream import FakeUpstream, Seen, start_sse


async def test_forwarding_headers_are_oauthds_not_the_clients(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    granted = await oauthd.grant()
    forged = {
        "X-Forwarded-For": "10.9.9.9",
        "X-Forwarded-Host": "evil.example",
        "Forwarded": "for=10.9.9.9",
        "X-Real-IP": "10.9.9.9",
    }
    assert (await oauthd.mcp("POST", granted, headers=forged)).status == 200
    (seen,) = upstream.requests
    assert seen.headers.getall("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.headers["X-Forwarded-Host"] == oauthd.base.split("://")[1]
    assert seen.headers["X-Forwarded-Proto"] == "http"
    assert "Forwarded" not in seen.headers and "X-Real-IP" not in seen.headers


async def test_an_access_token_in_the_query_is_not_passed_on(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    granted = await oauthd.grant()
    reply = await oauthd.call(
        "POST",
        f"/mcp?a=1&access_token={granted.access}&b",
        headers=granted.bearer(),
        json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
    )
    assert reply.status == 200
    (seen,) = upstream.requests
    assert seen.raw_path.endswith("/mcp?a=1&b") and granted.access not in seen.raw_path


async def test_a_session_id_reused_by_the_upstream_is_not_taken_over(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    first, second = await oauthd.grant(), await oauthd.grant(user="bob")
    upstream.session_id = "same-id-twice"
    assert (await oauthd.mcp("POST", first)).status == 200
    assert (await oauthd.mcp("POST", second)).status == 200  # upstream hands it out again
    binding = await oauthd.store.mcp_sessions.get(lookup_key("same-id-twice"))
    assert binding is not None and binding.grant_id == first.grant_id
    upstream.session_id = None
    headers = {"Mcp-Session-Id": "same-id-twice"}
    assert (await oauthd.mcp("POST", second, headers=headers)).status == 404
    assert (await oauthd.mcp("POST", first, headers=headers)).status == 200


async def test_a_binding_in_use_slides_with_the_grant(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    granted = await oauthd.grant()
    upstream.session_id = "sliding"
    assert (await oauthd.mcp("POST", granted)).status == 200
    upstream.session_id = None
    key = lookup_key("sliding")
    before = await oauthd.store.mcp_sessions.get(key)
    assert before is not None and before.expires_at is not None
    ttl = before.expires_at - before.created_at
    oauthd.clock.advance(ttl * 0.6)  # past half its life
    granted = await oauthd.refreshed(granted)
    assert (await oauthd.mcp("POST", granted, headers={"Mcp-Session-Id": "sliding"})).status == 200
    after = await oauthd.store.mcp_sessions.get(key)
    assert after is not None and after.expires_at is not None
    assert after.expires_at > before.expires_at


async def test_long_lived_streams_end_at_shutdown(oauthd: Oauthd, upstream: FakeUpstream) -> None:
    granted = await oauthd.grant()
    opened = asyncio.Event()

    async def endless(request: web.Request, seen: Seen) -> web.StreamResponse:
        await start_sse(request)
        opened.set()
        await asyncio.Event().wait()  # never sends anything: only shutdown ends it
        raise AssertionError("unreachable")

    upstream.answer = endless
    stream = asyncio.create_task(
        oauthd.mcp("GET", granted, headers={"Accept": "text/event-stream"})
    )
    await asyncio.wait_for(opened.wait(), 5)
    started = time.monotonic()
    await oauthd.app.shutdown()  # what the daemon's runner does before draining
    reply = await asyncio.wait_for(stream, 5)
    assert reply.status == 200
    assert time.monotonic() - started < 2
