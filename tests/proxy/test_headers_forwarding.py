"""What crosses the proxy: never the client's credentials, always oauthd's identity
headers, end-to-end headers, methods, query strings and bodies (streamed, bounded)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web
from yarl import URL

from oauthd.http.keys import TRACING
from tests.support.configs import write_secret
from tests.support.proxy_app import Oauthd, StartOauthd
from tests.support.upstream import FakeUpstream, Seen


async def test_client_credentials_never_reach_the_upstream(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    granted = await oauthd.grant()
    headers = {
        "Cookie": "oauthd_session=secret-cookie; other=1",
        "Proxy-Authorization": "Basic c2VjcmV0",
        "X-Custom": "kept",
    }
    reply = await oauthd.mcp("POST", granted, headers=headers)
    assert reply.status == 200, reply.text
    (seen,) = upstream.requests
    assert "Authorization" not in seen.headers
    assert "Cookie" not in seen.headers
    assert "Proxy-Authorization" not in seen.headers
    assert seen.headers["X-Custom"] == "kept"
    for value in seen.headers.values():
        assert granted.access not in value and "secret-cookie" not in value


async def test_identity_headers_are_set_and_cannot_be_spoofed(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    granted = await oauthd.grant(user="bob")
    spoofed = {
        "X-Forwarded-User": "alice",
        "x-forwarded-client-id": "someone-else",
        "X-FORWARDED-SCOPES": "admin",
        "X-Forwarded-Access-Token": "forged-idp-token",
    }
    assert (await oauthd.mcp("POST", granted, headers=spoofed)).status == 200
    (seen,) = upstream.requests
    assert seen.headers.getall("X-Forwarded-User") == ["bob"]
    assert seen.headers.getall("X-Forwarded-Client-Id") == [granted.client_id]
    assert seen.headers.getall("X-Forwarded-Scopes") == ["mcp"]
    # Not configured to forward the IdP token: a client-sent one is dropped, not passed.
    assert "X-Forwarded-Access-Token" not in seen.headers


async def test_configured_identity_header_names_are_used(
    start_oauthd: StartOauthd, upstream: FakeUpstream
) -> None:
    oauthd = await start_oauthd(
        upstream={
            "user_header": "X-Remote-User",
            "client_header": "X-Remote-Client",
            "scopes_header": "X-Remote-Scopes",
        }
    )
    granted = await oauthd.grant()
    spoofed = {"X-Remote-User": "mallory", "X-Remote-Scopes": "everything"}
    assert (await oauthd.mcp("POST", granted, headers=spoofed)).status == 200
    (seen,) = upstream.requests
    assert seen.headers.getall("X-Remote-User") == ["alice"]
    assert seen.headers.getall("X-Remote-Client") == [granted.client_id]
    assert seen.headers.getall("X-Remote-Scopes") == ["mcp"]
    assert "X-Forwarded-User" not in seen.headers


async def test_a_static_upstream_credential_is_sent_as_authorization(
    start_oauthd: StartOauthd, upstream: FakeUpstream, tmp_path: Path
) -> None:
    secret = tmp_path / "upstream.credential"
    write_secret(secret, "Bearer upstream-static-secret\n")
    oauthd = await start_oauthd(upstream={"authorization": f"file:{secret}"})
    granted = await oauthd.grant()
    assert (await oauthd.mcp("POST", granted)).status == 200
    (seen,) = upstream.requests
    assert seen.headers.getall("Authorization") == ["Bearer upstream-static-secret"]


async def test_hop_by_hop_headers_are_dropped_both_ways(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    async def answer(request: web.Request, seen: Seen) -> web.StreamResponse:
        return web.json_response(
            {"ok": True},
            headers={
                "Connection": "X-Hop-Resp",
                "X-Hop-Resp": "1",
                "Keep-Alive": "timeout=5",
                "Proxy-Authenticate": "Basic",
                "Trailer": "X-Checksum",
                "Upgrade": "h2c",
                "Set-Cookie": "upstream=1",
                "X-End-To-End": "kept",
                "MCP-Protocol-Version": "2025-11-25",
            },
        )

    upstream.answer = answer
    granted = await oauthd.grant()
    reply = await oauthd.mcp(
        "POST",
        granted,
        headers={
            "Connection": "keep-alive, X-Hop-Req",
            "X-Hop-Req": "1",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Trailer": "X-Checksum",
            "Upgrade": "h2c",
            "X-End-To-End": "kept",
            "MCP-Protocol-Version": "2025-11-25",
        },
    )
    assert reply.status == 200, reply.text
    (seen,) = upstream.requests
    for name in ("X-Hop-Req", "Keep-Alive", "TE", "Trailer", "Upgrade"):
        assert name not in seen.headers, (name, seen.headers)
    assert "x-hop-req" not in seen.headers.get("Connection", "").lower()
    assert seen.headers["X-End-To-End"] == "kept"
    assert seen.headers["MCP-Protocol-Version"] == "2025-11-25"

    for name in ("X-Hop-Resp", "Keep-Alive", "Proxy-Authenticate", "Trailer", "Upgrade"):
        assert name not in reply.headers, (name, reply.headers)
    assert "x-hop-resp" not in reply.headers.get("Connection", "").lower()
    assert "Set-Cookie" not in reply.headers  # the upstream may not set cookies on our origin
    assert reply.headers["X-End-To-End"] == "kept"
    assert reply.headers["MCP-Protocol-Version"] == "2025-11-25"
    assert reply.json() == {"ok": True}


async def test_methods_and_query_strings_pass(oauthd: Oauthd, upstream: FakeUpstream) -> None:
    granted = await oauthd.grant()
    query = "a=1&a=2&b=x%20y&c=%2F&flag&plus=a+b&pct=%25&e=&u=%C3%A9"
    url = URL(f"{oauthd.mcp_url}?{query}", encoded=True)
    methods = ("GET", "POST", "DELETE", "PUT", "PATCH")
    for method in methods:
        async with oauthd.client.session.request(method, url, headers=granted.bearer()) as response:
            assert response.status == 200, (method, await response.text())
    assert [seen.method for seen in upstream.requests] == list(methods)
    for seen in upstream.requests:
        assert seen.raw_path == f"/mcp?{query}"  # byte for byte, not re-encoded


async def test_a_query_in_the_upstream_url_is_kept(
    start_oauthd: StartOauthd, upstream: FakeUpstream
) -> None:
    oauthd = await start_oauthd(upstream={"url": f"{upstream.url}?key=k%20v"})
    granted = await oauthd.grant()
    assert (await oauthd.mcp("POST", granted)).status == 200
    assert (await oauthd.call("POST", "/mcp?x=1", headers=granted.bearer())).status == 200
    assert [seen.raw_path for seen in upstream.requests] == ["/mcp?key=k%20v", "/mcp?key=k%20v&x=1"]


async def test_status_and_body_of_upstream_answers_pass(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    async def answer(request: web.Request, seen: Seen) -> web.StreamResponse:
        if request.method == "DELETE":
            return web.Response(status=204)
        if request.method == "GET":
            return web.Response(status=405, text="no GET stream here")
        return web.Response(status=202)

    upstream.answer = answer
    granted = await oauthd.grant()
    assert (await oauthd.mcp("DELETE", granted)).status == 204
    get = await oauthd.mcp("GET", granted)
    assert (get.status, get.text) == (405, "no GET stream here")
    notification = await oauthd.mcp(
        "POST", granted, json={"jsonrpc": "2.0", "method": "notifications/initialized"}
    )
    assert (notification.status, notification.body) == (202, b"")


async def test_a_large_body_arrives_intact(oauthd: Oauthd, upstream: FakeUpstream) -> None:
    granted = await oauthd.grant()
    body = os.urandom(3 * 1024 * 1024)  # above aiohttp's 1 MiB read limit: proof of streaming
    reply = await oauthd.mcp(
        "POST", granted, data=body, headers={"Content-Type": "application/octet-stream"}
    )
    assert reply.status == 200, reply.text
    (seen,) = upstream.requests
    assert seen.body is not None
    assert hashlib.sha256(seen.body).digest() == hashlib.sha256(body).digest()
    assert seen.headers["Content-Type"] == "application/octet-stream"


async def test_the_request_body_is_streamed_not_buffered(
    start_oauthd: StartOauthd, upstream: FakeUpstream
) -> None:
    """Without rules and without call records (`[audit] calls = false`), the upstream
    reads the first part of the body while the client still holds back the rest: the
    proxy does not wait for the whole body."""
    oauthd = await start_oauthd(audit={"calls": False})
    first_arrived = asyncio.Event()

    async def answer(request: web.Request, seen: Seen) -> web.StreamResponse:
        first = await request.content.readexactly(5)
        first_arrived.set()
        rest = await request.content.read()
        seen.body = first + rest
        return web.json_response({"got": seen.body.decode()})

    async def body() -> AsyncIterator[bytes]:
        yield b"first"
        await asyncio.wait_for(first_arrived.wait(), 2)
        yield b"-second"

    upstream.answer = answer
    upstream.read_body_first = False
    granted = await oauthd.grant()
    reply = await oauthd.mcp("POST", granted, data=body())
    assert reply.status == 200, reply.text
    assert reply.json() == {"got": "first-second"}


async def test_a_body_over_the_limit_with_content_length_is_413(
    start_oauthd: StartOauthd, upstream: FakeUpstream
) -> None:
    oauthd = await start_oauthd(upstream={"max_request_bytes": 1000})
    granted = await oauthd.grant()
    assert (await oauthd.mcp("POST", granted, data=b"x" * 1000)).status == 200
    reply = await oauthd.mcp("POST", granted, data=b"x" * 1001)
    reply.assert_jsonrpc_error(413)
    assert len(upstream.requests) == 1


async def test_a_chunked_body_growing_past_the_limit_is_413(
    start_oauthd: StartOauthd, upstream: FakeUpstream
) -> None:
    limit = 64 * 1024
    oauthd = await start_oauthd(upstream={"max_request_bytes": limit})
    granted = await oauthd.grant()

    async def body(total: int) -> AsyncIterator[bytes]:
        for _ in range(total // 16384):
            yield b"y" * 16384
            await asyncio.sleep(0)

    reply = await oauthd.mcp("POST", granted, data=body(limit))  # exactly the limit: fine
    assert reply.status == 200, reply.text
    reply = await asyncio.wait_for(oauthd.mcp("POST", granted, data=body(10 * limit)), 5)
    reply.assert_jsonrpc_error(413)
    # The upstream got the first request whole and never a whole body of the second one.
    assert upstream.requests[0].body == b"y" * limit
    assert all(seen.body is None for seen in upstream.requests[1:])


async def test_a_body_above_one_mib_under_the_limit_is_relayed(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    """`max_request_bytes` (default 4 MiB) is the proxy's limit, not aiohttp's 1 MiB
    `client_max_size`: 3 MB goes through, with or without a Content-Length."""
    granted = await oauthd.grant()
    big = os.urandom(3_000_000)
    reply = await oauthd.mcp("POST", granted, data=big)
    assert reply.status == 200, reply.text
    assert upstream.requests[-1].body == big

    async def chunked() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 256 * 1024):
            yield big[start : start + 256 * 1024]

    reply = await oauthd.mcp("POST", granted, data=chunked())
    assert reply.status == 200, reply.text
    assert upstream.requests[-1].body == big
    reply = await oauthd.mcp("POST", granted, data=b"x" * (4 * 1024 * 1024 + 1))
    reply.assert_jsonrpc_error(413)


async def test_trace_context_passes_unchanged_with_tracing_off(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    """Without `[tracing]` (or without the otel extra), oauthd is no hop of the trace: the
    client's `traceparent` and `tracestate` reach the upstream as they came, and nothing
    parses or re-creates them (also for a body with its own `params._meta.traceparent`)."""
    assert TRACING not in oauthd.app
    granted = await oauthd.grant()
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    headers = {"traceparent": traceparent, "tracestate": "congo=t61rcWkgMzE"}
    meta = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"_meta": meta}}
    reply = await oauthd.mcp("POST", granted, headers=headers, json=body)
    assert reply.status == 200, reply.text
    (seen,) = upstream.requests
    assert seen.headers.getall("traceparent") == [traceparent]
    assert seen.headers.getall("tracestate") == ["congo=t61rcWkgMzE"]
