"""`Origin` is checked before anything else (DNS rebinding): oauthd's own origin and the
configured ones pass, any other is refused. Allowed browser origins get CORS headers
that expose what an MCP client must read: `WWW-Authenticate` and `Mcp-Session-Id`."""

from __future__ import annotations

import pytest
from aiohttp import web

from tests.support.browser import Answer
from tests.support.proxy_app import Oauthd, StartOauthd
from tests.support.upstream import FakeUpstream, Seen

APP_ORIGIN = "http://localhost:6274"  # e.g. the MCP Inspector


@pytest.fixture
async def browser_oauthd(start_oauthd: StartOauthd) -> Oauthd:
    return await start_oauthd(upstream={"allowed_origins": (APP_ORIGIN, "https://app.example")})


def assert_cors(reply: Answer, origin: str) -> None:
    assert reply.headers["Access-Control-Allow-Origin"] == origin
    exposed = {h.strip().lower() for h in reply.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"www-authenticate", "mcp-session-id"} <= exposed
    assert "Origin" in reply.headers.get("Vary", "")


async def test_allowed_origins_pass(browser_oauthd: Oauthd, upstream: FakeUpstream) -> None:
    oauthd = browser_oauthd
    granted = await oauthd.grant()
    upstream.session_id = "s-1"
    for origin in (oauthd.base, APP_ORIGIN, "HTTPS://APP.EXAMPLE"):
        reply = await oauthd.mcp("POST", granted, headers={"Origin": origin})
        assert reply.status == 200, (origin, reply.text)
        assert_cors(reply, origin)
        assert reply.headers["Mcp-Session-Id"] == "s-1"
    assert len(upstream.requests) == 3
    assert all("Origin" not in seen.headers for seen in upstream.requests)


async def test_no_origin_passes_without_cors_headers(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    granted = await oauthd.grant()
    reply = await oauthd.mcp("POST", granted)
    assert reply.status == 200
    assert "Access-Control-Allow-Origin" not in reply.headers
    assert len(upstream.requests) == 1


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "http://localhost:6275",  # another port of an allowed host
        "https://localhost:6274",  # another scheme
        "http://127.0.0.1",  # oauthd's host without its port
        "null",
    ],
)
async def test_other_origins_are_403(
    browser_oauthd: Oauthd, upstream: FakeUpstream, origin: str
) -> None:
    oauthd = browser_oauthd
    granted = await oauthd.grant()
    for method in ("POST", "GET", "DELETE", "OPTIONS"):
        reply = await oauthd.mcp(method, granted, headers={"Origin": origin})
        reply.assert_jsonrpc_error(403)
        assert "Access-Control-Allow-Origin" not in reply.headers
    # refused before the token is even looked at
    no_token = await oauthd.mcp("POST", headers={"Origin": origin})
    no_token.assert_jsonrpc_error(403)
    assert upstream.requests == []


async def test_preflight_from_an_allowed_origin(
    browser_oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    reply = await browser_oauthd.mcp(
        "OPTIONS",
        headers={
            "Origin": APP_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, mcp-session-id",
        },
    )
    assert reply.status == 204, reply.text
    assert_cors(reply, APP_ORIGIN)
    methods = {m.strip() for m in reply.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "POST", "DELETE"} <= methods
    allowed = {h.strip().lower() for h in reply.headers["Access-Control-Allow-Headers"].split(",")}
    wanted = {"authorization", "content-type", "mcp-session-id", "mcp-protocol-version"}
    assert wanted | {"last-event-id"} <= allowed
    assert upstream.requests == []  # no token needed, nothing forwarded


async def test_the_401_exposes_www_authenticate_to_allowed_origins(
    browser_oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    reply = await browser_oauthd.mcp("POST", headers={"Origin": APP_ORIGIN})
    assert reply.status == 401
    assert reply.challenge()["resource_metadata"].endswith(
        "/.well-known/oauth-protected-resource/mcp"
    )
    assert_cors(reply, APP_ORIGIN)
    bad = await browser_oauthd.mcp(
        "POST", headers={"Origin": APP_ORIGIN, "Authorization": "Bearer x.y"}
    )
    assert bad.status == 401 and bad.challenge()["error"] == "invalid_token"
    assert_cors(bad, APP_ORIGIN)
    assert upstream.requests == []


async def test_proxy_errors_carry_cors_headers(
    browser_oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    """A browser client must be able to read the 404 that tells it to re-initialize."""
    granted = await browser_oauthd.grant()
    reply = await browser_oauthd.mcp(
        "POST", granted, headers={"Origin": APP_ORIGIN, "Mcp-Session-Id": "unknown"}
    )
    reply.assert_jsonrpc_error(404)
    assert_cors(reply, APP_ORIGIN)


async def test_upstream_cors_headers_do_not_override_ours(
    browser_oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    async def answer(request: web.Request, seen: Seen) -> web.StreamResponse:
        headers = {
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Expose-Headers": "X-Other",
            "Vary": "Accept-Encoding",
        }
        return web.json_response({}, headers=headers)

    upstream.answer = answer
    granted = await browser_oauthd.grant()
    reply = await browser_oauthd.mcp("POST", granted, headers={"Origin": APP_ORIGIN})
    assert reply.status == 200
    assert reply.headers.getall("Access-Control-Allow-Origin") == [APP_ORIGIN]
    assert len(reply.headers.getall("Access-Control-Expose-Headers")) == 1
    assert_cors(reply, APP_ORIGIN)
    vary = {v.strip().lower() for v in reply.headers["Vary"].split(",")}
    assert vary == {"accept-encoding", "origin"}  # the upstream's Vary kept, ours added
