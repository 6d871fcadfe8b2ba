"""Forward auth behind a real nginx (Debian's), configured as docs/operations.md says:
nginx relays /mcp to the demo MCP server itself and asks oauthd's /forward-auth about each
request. A stranger gets the 401 challenge, a token without the required scope the 403, a
2026-07-28 call that the resource's rules deny (named by `Mcp-Method`/`Mcp-Name`) the 403
without reaching the MCP server, and a valid token reaches the upstream as the identity
headers, never as itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.support.configs import USER, resource, rule
from tests.support.nginx import nginx_binary, running_nginx
from tests.support.ports import free_port
from tests.support.proxy_app import Oauthd
from tests.support.upstream import DemoUpstream

pytestmark = pytest.mark.timeout(60)

# docs/operations.md's locations; {upstream_port} is oauthd's, DEMO_PORT the MCP server's.
LOCATIONS = """\
        location = /mcp {{
            auth_request /_oauthd;
            auth_request_set $mcp_user $upstream_http_x_forwarded_user;
            auth_request_set $mcp_client $upstream_http_x_forwarded_client_id;
            auth_request_set $mcp_scopes $upstream_http_x_forwarded_scopes;
            auth_request_set $mcp_authorization $upstream_http_authorization;
            auth_request_set $mcp_challenge $upstream_http_www_authenticate;
            error_page 403 = @oauthd_forbidden;
            proxy_set_header X-Forwarded-User $mcp_user;
            proxy_set_header X-Forwarded-Client-Id $mcp_client;
            proxy_set_header X-Forwarded-Scopes $mcp_scopes;
            proxy_set_header Authorization $mcp_authorization;
            proxy_pass http://127.0.0.1:DEMO_PORT;
            proxy_http_version 1.1;
            proxy_buffering off;
        }}
        location = /_oauthd {{
            internal;
            proxy_pass http://127.0.0.1:{upstream_port}/forward-auth;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-Method $request_method;
        }}
        location @oauthd_forbidden {{
            add_header WWW-Authenticate $mcp_challenge always;
            return 403;
        }}
        location / {{
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
"""
PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture
async def fronted(tmp_path: Path) -> AsyncIterator[tuple[Oauthd, DemoUpstream, str]]:
    nginx_binary()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    demo = DemoUpstream(tmp_path / "demo.log", stateless=True)
    demo.start()
    scopes = ("mcp", "other")
    no_add = rule("no-add", method="tools/call", name=("add",), effect="deny")
    oauthd = await Oauthd.start_in(
        tmp_path,
        issuer=base,
        oauth={"scopes": scopes},
        resources=[resource("/mcp", demo.url, scopes=scopes, rules=(no_add,))],
    )
    try:
        locations = LOCATIONS.replace("DEMO_PORT", str(demo.port))
        listen = oauthd.config.server.listen.port
        async with running_nginx(tmp_path / "nginx", port, listen, locations):
            yield oauthd, demo, base
    finally:
        await oauthd.close()
        demo.stop()


async def post(
    base: str, token: str | None = None, body: object = PING, **extra: str
) -> tuple[int, str]:
    headers = {**ACCEPT, **extra}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base}/mcp", json=body, headers=headers) as answer,
    ):
        return answer.status, answer.headers.get("WWW-Authenticate", "")


async def test_nginx_asks_oauthd_and_relays_itself(
    fronted: tuple[Oauthd, DemoUpstream, str],
) -> None:
    oauthd, _, base = fronted
    metadata_url = f"{base}/.well-known/oauth-protected-resource/mcp"

    status, challenge = await post(base)
    assert status == 401
    assert f'resource_metadata="{metadata_url}"' in challenge
    async with aiohttp.ClientSession() as http, http.get(metadata_url) as answer:
        assert answer.status == 200
        assert (await answer.json())["resource"] == f"{base}/mcp"

    status, challenge = await post(base, "not-a-token")
    assert (status, 'error="invalid_token"' in challenge) == (401, True)

    narrow = await oauthd.grant(scopes=("other",))
    status, challenge = await post(base, narrow.access)
    assert status == 403
    assert 'error="insufficient_scope"' in challenge and 'scope="mcp"' in challenge

    granted = await oauthd.grant()
    headers = {"Authorization": f"Bearer {granted.access}"}
    with anyio.fail_after(20):
        async with (
            httpx2.AsyncClient(headers=headers) as http,
            streamable_http_client(f"{base}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            me = await session.call_tool("whoami", {})
    assert me.structured_content == {
        "user": USER,
        "client_id": granted.client_id,
        "scopes": "mcp",
        "principal": "",  # this nginx config does not pass X-Forwarded-Principal on
        "authorization_received": False,  # nginx sent the (empty) answer's, not the token
    }

    # A 2026-07-28 call names itself in headers: the rule denies it at the gate.
    add = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "add"}}
    mirrored = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call"}
    status, challenge = await post(base, granted.access, add, **mirrored, **{"Mcp-Name": "add"})
    assert (status, challenge) == (403, "")  # denied by policy: no challenge to follow

    await oauthd.revoke(granted.refresh, granted.client_id)
    status, challenge = await post(base, granted.access)
    assert (status, 'error="invalid_token"' in challenge) == (401, True)
