"""The JWT bearer grant against a live oauthd in front of the demo MCP server: the official
Python SDK's `IdentityAssertionOAuthProvider` (SEP-990) with ID-JAGs from a small enterprise
IdP (tests.support.key_server, its JWKS over http on 127.0.0.1), and a workload token
redeemed with plain HTTP, then used by the SDK's streamable-http client.

The enterprise app is a confidential client written into the daemon's state before it
starts (`oauthd clients add --grant jwt-bearer` is not on this branch yet)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.auth.extensions.identity_assertion import IdentityAssertionOAuthProvider
from mcp.client.streamable_http import streamable_http_client

from oauthd import crypto
from oauthd.clock import SystemClock
from oauthd.config import load_config
from oauthd.model import Client
from oauthd.oauth.assertions import JWT_BEARER
from oauthd.store import open_store
from tests.support.daemon import OauthdProcess, proxy_daemon
from tests.support.key_server import KeyServer, running_key_server
from tests.support.sdk import MemoryStorage
from tests.support.upstream import DemoUpstream, text_of

CLIENT_ID = "enterprise-app"
SECRET = "enterprise-app-secret-0123456789"


@pytest.fixture
async def idp() -> AsyncIterator[KeyServer]:
    async with running_key_server() as server:
        yield server


async def add_client(config_path: Path) -> None:
    config = load_config(config_path)
    store = await open_store(config.storage, SystemClock(), accept_empty=True)
    try:
        await store.clients.add(
            Client(
                CLIENT_ID,
                "Enterprise app",
                (),
                (JWT_BEARER,),
                (),
                "client_secret_post",
                "web",
                "mcp",
                crypto.hash_secret(SECRET),
                "dcr",
                0.0,
            )
        )
    finally:
        await store.close()


@pytest.fixture
async def oauthd(
    tmp_path: Path, demo_upstream: DemoUpstream, idp: KeyServer
) -> AsyncIterator[OauthdProcess]:
    daemon = proxy_daemon(tmp_path, demo_upstream.url)
    assert daemon.config is not None
    with daemon.config.open("a") as config:
        config.write(
            f'\n[[trusted_issuer]]\nissuer = "{idp.issuer}"\nkind = "enterprise"\n'
            f'jwks_uri = "{idp.jwks_uri}"\n'
            f'\n[[trusted_issuer]]\nissuer = "{idp.issuer}/k8s"\nkind = "workload"\n'
            f'jwks_uri = "{idp.jwks_uri}"\n'
            '[[trusted_issuer.subject]]\nmatch = "system:serviceaccount:ci:*"\n'
            'principal = "ci-runner"\n'
        )
    await add_client(daemon.config)
    try:
        await daemon.start()
        yield daemon
    finally:
        daemon.kill()


async def call_add(http: httpx2.AsyncClient, url: str) -> str:
    async with (
        streamable_http_client(url, http_client=http) as (read, write, *_),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        return text_of(await session.call_tool("add", {"a": 2, "b": 3}))


async def test_the_sdk_redeems_an_id_jag_and_calls_a_tool(
    oauthd: OauthdProcess, idp: KeyServer
) -> None:
    async def fetch_id_jag(audience: str, resource: str) -> str:
        return idp.issue_id_jag(audience, resource, CLIENT_ID, "00u1a2b3c4", scope="mcp")

    auth = IdentityAssertionOAuthProvider(
        server_url=oauthd.mcp_url,
        storage=MemoryStorage(),
        client_id=CLIENT_ID,
        client_secret=SECRET,
        issuer=oauthd.issuer,
        assertion_provider=fetch_id_jag,
    )
    async with httpx2.AsyncClient(auth=auth, timeout=30) as http:
        assert await call_add(http, oauthd.mcp_url) == "5"
    links = await oauthd.command("links", "list", "--json", "--config", str(oauthd.config))
    assert '"00u1a2b3c4"' in links.out and "00u1a2b3c4@127.0.0.1" in links.out


async def test_a_workload_token_reaches_a_tool(oauthd: OauthdProcess, idp: KeyServer) -> None:
    assertion = idp.issue_workload_token(
        oauthd.issuer, "system:serviceaccount:ci:builder", issuer=f"{idp.issuer}/k8s"
    )
    form = {"grant_type": JWT_BEARER, "assertion": assertion, "resource": oauthd.mcp_url}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{oauthd.url}/token", data=form) as response,
    ):
        body = await response.json()
        assert response.status == 200, body
    assert "refresh_token" not in body
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        assert await call_add(http, oauthd.mcp_url) == "5"
