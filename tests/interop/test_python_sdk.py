"""Real clients against a real oauthd in front of a real MCP server (issue #4, interop).

- The official MCP Python SDK client (`mcp` 2.3.0: `OAuthClientProvider` + streamable HTTP)
  logs in through oauthd's own login and consent pages (the test plays the person at the
  browser), then initialize, tools/list, tools/call (with progress over the proxy's SSE), a
  refresh, calls with the new access token, and a replay of the superseded refresh token:
  as a public client and as confidential ones.
- The same client keeps working across a clean stop (SIGTERM) and a crash (SIGKILL) of
  oauthd with no new login.
- Registration requests shaped like Claude Code's, VS Code's and Cursor's are accepted and
  then work end to end (authorize on a random loopback port, token, /mcp).
"""

from __future__ import annotations

import base64
import json
import secrets
import signal
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    OAuthClientInformationFull,
    OAuthToken,
)

from tests.support.browser import Person
from tests.support.configs import INTEROP_USER as USER
from tests.support.daemon import OauthdProcess
from tests.support.http_client import Pkce
from tests.support.ports import free_port
from tests.support.sdk import SdkClient, sdk_client
from tests.support.upstream import text_of

REFRESH_GRACE = 10.0  # oauthd's default tokens.refresh_grace (the test config keeps it)
MCP_ACCEPT = "application/json, text/event-stream"


# -- the SDK client, instrumented -------------------------------------------------------------


@dataclass
class Exchange:
    """One HTTP request the SDK made (its auth flow's requests included) and its answer."""

    method: str
    path: str
    status: int
    authorization: str
    session_id: str | None  # Mcp-Session-Id sent
    content_type: str  # of the response
    body: bytes
    mcp_method: str | None = None  # the 2026-07-28 header mirroring the body's method

    def rpc_methods(self) -> list[str]:
        if self.method != "POST" or not self.path.endswith("/mcp"):
            return []
        try:
            message = json.loads(self.body)
        except ValueError:
            return []
        batch = message if isinstance(message, list) else [message]
        return [m["method"] for m in batch if isinstance(m, dict) and "method" in m]


@dataclass
class Traffic:
    exchanges: list[Exchange] = field(default_factory=list)

    async def on_response(self, response: httpx2.Response) -> None:
        request = response.request
        try:
            body = request.content
        except httpx2.RequestNotRead:
            body = b""
        self.exchanges.append(
            Exchange(
                request.method,
                request.url.path,
                response.status_code,
                request.headers.get("Authorization", ""),
                request.headers.get("Mcp-Session-Id"),
                response.headers.get("Content-Type", ""),
                body,
                request.headers.get("Mcp-Method"),
            )
        )

    def to(self, method: str, path: str) -> list[Exchange]:
        return [e for e in self.exchanges if e.method == method and e.path == path]

    def rpc(self, name: str) -> list[Exchange]:
        """The POSTs to /mcp carrying a call of `name`, refused ones (401) included."""
        return [e for e in self.exchanges if name in e.rpc_methods()]


def traced_client(oauthd: OauthdProcess, auth_method: str | None) -> tuple[SdkClient, Traffic]:
    """The SDK client of `oauthd`, every HTTP exchange it makes recorded."""
    client = sdk_client(
        oauthd.issuer, oauthd.mcp_url, "oauthd interop (mcp python sdk)", auth_method
    )
    traffic = Traffic()
    client.on_response.append(traffic.on_response)
    return client, traffic


async def add(session: ClientSession, a: int, b: int) -> None:
    assert text_of(await session.call_tool("add", {"a": a, "b": b})) == str(a + b)


async def refresh_and_call(
    client: SdkClient, traffic: Traffic, session: ClientSession
) -> tuple[OAuthToken, float]:
    """Force a refresh, call a tool; the superseded tokens and when they were superseded.
    Checks that a refresh_token grant (not a login) gave a new pair and that the call after
    it carried the new access token."""
    before = client.storage.tokens
    assert before is not None and before.refresh_token
    tokens_seen = len(traffic.to("POST", "/token"))
    client.force_refresh()
    await add(session, 20, 22)
    superseded_at = time.monotonic()
    after = client.storage.tokens
    assert after is not None and after.refresh_token
    assert after.access_token != before.access_token
    assert after.refresh_token != before.refresh_token  # rotated (OAuth 2.1 s4.3.1)
    token_calls = traffic.to("POST", "/token")[tokens_seen:]
    assert [(e.status, b"grant_type=refresh_token" in e.body) for e in token_calls] == [(200, True)]
    last_call = traffic.rpc("tools/call")[-1]
    assert last_call.authorization == f"Bearer {after.access_token}"
    assert last_call.status == 200
    return before, superseded_at


def client_auth(
    info: OAuthClientInformationFull,
) -> tuple[dict[str, str], dict[str, str]]:
    """(form fields, headers) that authenticate this client at /token as it registered."""
    method = info.token_endpoint_auth_method
    if method == "client_secret_basic":
        assert info.client_secret
        pair = f"{info.client_id}:{info.client_secret}".encode()
        return {}, {"Authorization": "Basic " + base64.b64encode(pair).decode()}
    if method == "client_secret_post":
        assert info.client_secret
        return {"client_id": info.client_id, "client_secret": info.client_secret}, {}
    assert method == "none" and info.client_secret is None, info
    return {"client_id": info.client_id}, {}


def initialize_body(name: str) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": name, "version": "1.0"},
        },
    }


# -- 1 + 2: the whole flow, public and confidential -------------------------------------------


@pytest.mark.timeout(40)
@pytest.mark.parametrize("auth_method", ["none", "client_secret_post", "client_secret_basic"])
async def test_sdk_client_logs_in_calls_tools_refreshes(
    oauthd: OauthdProcess, auth_method: str
) -> None:
    client, traffic = traced_client(oauthd, auth_method)
    seen: list[tuple[float, float | None, str | None]] = []

    # The SDK's ProgressFnT protocol wants these exact parameter names.
    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    with anyio.fail_after(30):
        async with (
            client.http() as http,
            streamable_http_client(oauthd.mcp_url, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            init = await session.initialize()
            assert init.server_info.name == "oauthd-demo"

            # Discovery from the 401, DCR, code + PKCE through the pages, then the retry.
            flow = [(e.method, e.path, e.status) for e in traffic.exchanges[:6]]
            assert flow == [
                ("POST", "/mcp", 401),
                ("GET", "/.well-known/oauth-protected-resource/mcp", 200),
                ("GET", "/.well-known/oauth-authorization-server", 200),
                ("POST", "/register", 201),
                ("POST", "/token", 200),
                ("POST", "/mcp", 200),
            ]
            assert len(client.authorization_urls) == 1
            sent = {
                k: v[0] for k, v in parse_qs(urlsplit(client.authorization_urls[0]).query).items()
            }
            assert sent["code_challenge_method"] == "S256"
            assert sent["resource"] == oauthd.mcp_url
            assert client.browser.pages == ["/login", "/consent"]

            info = client.storage.client_info
            assert info is not None and info.token_endpoint_auth_method == auth_method
            assert (info.client_secret is not None) == (auth_method != "none")
            token_call = traffic.to("POST", "/token")[0]
            if auth_method == "client_secret_basic":
                assert token_call.authorization.startswith("Basic ")
                assert b"client_secret=" not in token_call.body
            elif auth_method == "client_secret_post":
                assert b"client_secret=" in token_call.body and not token_call.authorization
            else:
                assert b"client_secret=" not in token_call.body and not token_call.authorization
            first = client.storage.tokens
            assert first is not None and first.expires_in and first.refresh_token

            tools = await session.list_tools()
            assert {t.name for t in tools.tools} >= {"echo", "add", "whoami", "countdown"}
            await add(session, 2, 3)

            me = await session.call_tool("whoami", {})
            assert me.structured_content == {
                "user": USER,
                "client_id": info.client_id,
                "scopes": "mcp",
                "principal": "user",
                "authorization_received": False,  # the client's token never goes upstream
            }

            counted = await session.call_tool(
                "countdown", {"n": 3, "delay": 0.05}, progress_callback=on_progress
            )
            assert text_of(counted) == "done"
            assert seen == [(1, 3, "2 to go"), (2, 3, "1 to go"), (3, 3, "0 to go")]
            countdown_call = [e for e in traffic.rpc("tools/call") if b'"countdown"' in e.body]
            assert countdown_call[0].content_type.startswith("text/event-stream")

            superseded, superseded_at = await refresh_and_call(client, traffic, session)
            await add(session, 1, 1)  # and again with the new access token
            after_initialize = [
                e for e in traffic.to("POST", "/mcp") if "initialize" not in e.rpc_methods()
            ]
            session_ids = {e.session_id for e in after_initialize}
            assert len(session_ids) == 1 and None not in session_ids  # one MCP session
        assert traffic.to("DELETE", "/mcp")[-1].status == 200  # closed on exit

    # The successor's access token was used, so the grace window is over although it has
    # not run out: the superseded refresh token is refused (RFC 6749 s5.2: 400).
    assert time.monotonic() - superseded_at < REFRESH_GRACE
    fields, headers = client_auth(info)
    current = client.storage.tokens
    assert current is not None
    async with aiohttp.ClientSession() as web:
        data = {"grant_type": "refresh_token", "refresh_token": superseded.refresh_token}
        async with web.post(
            f"{oauthd.issuer}/token", data={**data, **fields}, headers=headers
        ) as response:
            body = await response.json()
            assert response.status == 400, body
            assert body["error"] == "invalid_grant"
        # Reuse of a superseded refresh token revokes the whole grant (RFC 9700 s4.14.2).
        async with web.post(
            oauthd.mcp_url,
            json=initialize_body("after-replay"),
            headers={"Authorization": f"Bearer {current.access_token}", "Accept": MCP_ACCEPT},
        ) as response:
            assert response.status == 401
            assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert client.browser.logins == 1


@pytest.mark.timeout(40)
async def test_a_2026_07_28_client_passes_the_header_check(oauthd: OauthdProcess) -> None:
    """The SDK speaking 2026-07-28 (server/discover, no MCP session) mirrors each body in
    `Mcp-Method`/`Mcp-Name`; oauthd checks them and passes every call."""
    client, traffic = traced_client(oauthd, "none")
    with anyio.fail_after(30):
        async with (
            client.http() as http,
            streamable_http_client(oauthd.mcp_url, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            found = await session.discover()
            assert "2026-07-28" in found.supported_versions
            tools = await session.list_tools()
            assert {t.name for t in tools.tools} >= {"echo", "add"}
            await add(session, 4, 5)
    calls = [e for e in traffic.to("POST", "/mcp") if e.status != 401]
    assert calls and all(e.status == 200 for e in calls), [(e.status, e.body) for e in calls]
    assert {e.mcp_method for e in calls} >= {"tools/list", "tools/call"}
    assert all(e.mcp_method == e.rpc_methods()[0] for e in calls)
    assert {e.session_id for e in calls} == {None}


# -- 3: restarts ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_sdk_client_continues_across_sigterm_and_sigkill(oauthd: OauthdProcess) -> None:
    """No new login after a clean stop or a crash: registration, grant, rotated tokens and
    the MCP session binding are all on disk. The client registers without naming a token
    endpoint auth method, so it gets oauthd's default (client_secret_basic)."""
    client, traffic = traced_client(oauthd, None)
    with anyio.fail_after(50):
        async with (
            client.http() as http,
            streamable_http_client(oauthd.mcp_url, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            await add(session, 2, 3)
            info = client.storage.client_info
            assert info is not None and info.token_endpoint_auth_method == "client_secret_basic"
            first_session = traffic.rpc("tools/call")[-1].session_id
            assert first_session

            for sig, expected_exit in ((signal.SIGTERM, 0), (signal.SIGKILL, -signal.SIGKILL)):
                tokens = client.storage.tokens
                assert tokens is not None
                assert await oauthd.restart(sig) == expected_exit
                await add(session, 3, 4)  # the access token from before the restart
                assert traffic.rpc("tools/call")[-1].authorization == (
                    f"Bearer {tokens.access_token}"
                )
                await refresh_and_call(client, traffic, session)
                calls = traffic.rpc("tools/call")
                assert {e.status for e in calls[-2:]} == {200}

            # The MCP session: the SDK did not re-initialize; oauthd kept the session bound
            # to the grant across both restarts and refreshes, so the upstream session lives on.
            assert [e.status for e in traffic.rpc("initialize")] == [401, 200]
            refused = [e for e in traffic.exchanges if e.status == 401]
            assert refused == traffic.exchanges[:1]  # only the very first request
            assert {e.session_id for e in traffic.rpc("tools/call")} == {first_session}
        assert traffic.to("DELETE", "/mcp")[-1].status == 200

    assert len(client.authorization_urls) == 1  # the redirect handler ran once
    assert client.browser.logins == 1
    assert len(traffic.to("POST", "/register")) == 1
    assert oauthd.exit_codes == [0, -signal.SIGKILL]


# -- 4: registrations shaped like real clients' -----------------------------------------------


def _claude_code(port: int, metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "client_name": "Claude Code (oauthd-interop)",
        "redirect_uris": [f"http://localhost:{port}/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "application_type": "native",
    }


def _vscode(port: int, metadata: dict[str, Any]) -> dict[str, Any]:
    ours = ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"]
    return {
        "client_name": "Visual Studio Code",
        "client_uri": "https://code.visualstudio.com",
        # VS Code intersects its own grant types with the server's grant_types_supported.
        "grant_types": [g for g in metadata["grant_types_supported"] if g in ours],
        "response_types": ["code"],
        "redirect_uris": [
            "https://insiders.vscode.dev/redirect",
            "https://vscode.dev/redirect",
            "http://127.0.0.1/",
            "http://127.0.0.1:33418/",
        ],
        "scope": " ".join(metadata["scopes_supported"]),
        "token_endpoint_auth_method": "none",
        "application_type": "native",
    }


def _cursor(port: int, metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "client_name": "Cursor",
        "redirect_uris": [
            "cursor://anysphere.cursor-mcp/oauth/callback",
            "https://www.cursor.com/agents/mcp/oauth/callback",
            "http://localhost:8787/callback",
        ],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    }


@dataclass(frozen=True)
class Shape:
    build: Any
    registered: Any  # (port) -> the redirect_uris oauthd must keep
    redirect: Any  # (port) -> the redirect URI used at /authorize (another port)


SHAPES = {
    "claude-code": Shape(
        _claude_code,
        lambda port: [f"http://localhost:{port}/callback"],
        lambda port: f"http://localhost:{port}/callback",
    ),
    "vscode": Shape(
        _vscode,
        lambda port: [
            "https://insiders.vscode.dev/redirect",
            "https://vscode.dev/redirect",
            "http://127.0.0.1/",
            "http://127.0.0.1:33418/",
        ],
        lambda port: f"http://127.0.0.1:{port}/",
    ),
    "cursor": Shape(
        _cursor,
        lambda port: [
            "https://www.cursor.com/agents/mcp/oauth/callback",
            "http://localhost:8787/callback",
        ],
        lambda port: f"http://localhost:{port}/callback",
    ),
}


def other_port(*avoid: int) -> int:
    while True:
        port = free_port()
        if port not in avoid:
            return port


@pytest.mark.timeout(30)
@pytest.mark.parametrize("shape", list(SHAPES))
async def test_registration_shaped_like_a_real_client_then_works(
    oauthd: OauthdProcess, shape: str
) -> None:
    spec = SHAPES[shape]
    registered_port = free_port()
    async with aiohttp.ClientSession() as web:
        # What these clients do first: POST /mcp, 401, follow resource_metadata.
        async with web.post(
            oauthd.mcp_url, json=initialize_body(shape), headers={"Accept": MCP_ACCEPT}
        ) as response:
            assert response.status == 401
            challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith("Bearer ")
        prm_url = challenge.split('resource_metadata="', 1)[1].split('"', 1)[0]
        async with web.get(prm_url) as response:
            prm = await response.json()
        assert prm["resource"] == oauthd.mcp_url
        issuer = prm["authorization_servers"][0]
        async with web.get(f"{issuer}/.well-known/oauth-authorization-server") as response:
            metadata = await response.json()

        request = spec.build(registered_port, metadata)
        async with web.post(metadata["registration_endpoint"], json=request) as response:
            registration = await response.json()
            assert response.status == 201, registration
        assert registration["token_endpoint_auth_method"] == "none"
        assert "client_secret" not in registration
        assert registration["redirect_uris"] == spec.registered(registered_port)
        assert registration["grant_types"] == request["grant_types"]
        if "application_type" in request:
            assert registration["application_type"] == request["application_type"]
        client_id = registration["client_id"]

        if shape == "cursor":  # the dropped private-use URI is not usable
            refused = await web.get(
                metadata["authorization_endpoint"]
                + "?"
                + urlencode(
                    {
                        "response_type": "code",
                        "client_id": client_id,
                        "redirect_uri": "cursor://anysphere.cursor-mcp/oauth/callback",
                        "code_challenge": Pkce.new().challenge,
                        "code_challenge_method": "S256",
                        "state": "x",
                    }
                ),
                allow_redirects=False,
            )
            async with refused:
                assert refused.status == 400  # shown to the person, never redirected
                assert "Location" not in refused.headers

        # A random loopback port, not the registered one (RFC 8252 s7.3).
        redirect_uri = spec.redirect(other_port(registered_port, 33418, 8787))
        pair = Pkce.new()
        verifier, challenge_value = pair.verifier, pair.challenge
        state = secrets.token_urlsafe(16)
        query = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "code_challenge": challenge_value,
            "code_challenge_method": "S256",
            "state": state,
            "resource": oauthd.mcp_url,
            "scope": "mcp",
        }
        browser = Person(oauthd.issuer)
        back = await browser.authorize(f"{metadata['authorization_endpoint']}?{urlencode(query)}")
        assert back.location.startswith(redirect_uri + "?"), back.location
        assert back.params["state"] == state
        assert back.params["iss"] == metadata["issuer"]

        form = {
            "grant_type": "authorization_code",
            "code": back.params["code"],
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "code_verifier": verifier,
            "resource": oauthd.mcp_url,
        }
        async with web.post(metadata["token_endpoint"], data=form) as response:
            tokens = await response.json()
            assert response.status == 200, tokens
        assert tokens["token_type"].lower() == "bearer" and tokens["refresh_token"]

        bearer = {"Authorization": f"Bearer {tokens['access_token']}", "Accept": MCP_ACCEPT}
        async with web.post(
            oauthd.mcp_url, json=initialize_body(shape), headers=bearer
        ) as response:
            text = await response.text()
            assert response.status == 200, text
            session_id = response.headers["Mcp-Session-Id"]
        assert "oauthd-demo" in text
        async with web.delete(
            oauthd.mcp_url, headers={**bearer, "Mcp-Session-Id": session_id}
        ) as response:
            assert response.status == 200
