"""Login through a real upstream OpenID provider (oidc-provider on Node.js, tests/idp): the
user consents first, then signs in at the provider; oauthd checks state, PKCE, nonce and the
id_token, maps the e-mail claim to the local user, keeps the provider's tokens sealed, and
forwards (and refreshes) them to the MCP upstream when configured. The `github` provider is
driven against the same provider's OAuth endpoints and userinfo."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from oauthd.assembly import STORE, create_app
from oauthd.config import Config, default_config
from oauthd.http.keys import AUTH
from oauthd.model import Grant
from tests.support.configs import write_secret
from tests.support.idp import Idp, idp_cancel, idp_login, running_idp
from tests.support.ports import free_port

CLIENT_ID, CLIENT_SECRET = "oauthd-test", "oauthd-test-secret-value"
APP_REDIRECT = "http://127.0.0.1:5555/cb"


def config_for(tmp: Path, port: int, idp: Idp, provider: str, upstream: str) -> Config:
    base = default_config(tmp)
    key_file = tmp / "upstream.key"
    write_secret(key_file, os.urandom(32).hex())
    secret_file = tmp / "idp.secret"
    write_secret(secret_file, CLIENT_SECRET)
    login = dataclasses.replace(
        base.login,
        provider=provider,
        encryption_key=f"file:{key_file}",
        oidc=dataclasses.replace(
            base.login.oidc,
            issuer=idp.issuer,
            client_id=CLIENT_ID,
            client_secret=f"file:{secret_file}",
            scopes=("openid", "email", "offline_access"),
        ),
        github=dataclasses.replace(
            base.login.github,
            client_id=CLIENT_ID,
            client_secret=f"file:{secret_file}",
            scopes=("openid", "email"),
            authorize_url=f"{idp.issuer}/auth",
            token_url=f"{idp.issuer}/token",
            user_url=f"{idp.issuer}/me",
            username_field="email",
        ),
    )
    return dataclasses.replace(
        base,
        server=dataclasses.replace(
            base.server,
            issuer=f"http://127.0.0.1:{port}",
            listen=dataclasses.replace(base.server.listen, port=port),
        ),
        storage=dataclasses.replace(base.storage, path=tmp / "state"),
        upstream=dataclasses.replace(base.upstream, url=upstream, forward_idp_token=True),
        login=login,
    )


@pytest.fixture
async def mcp_upstream() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {}})

    app = web.Application()
    app.router.add_route("*", "/mcp", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("/mcp")), seen
    await server.close()


def form_fields(page: str) -> dict[str, str]:
    return dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page))


async def start_authorization(
    browser: aiohttp.ClientSession, base: str, client_id: str, verifier: str, **extra: str
) -> tuple[str, str]:
    """/authorize -> the consent page (the user is not known yet) -> allow; returns the
    provider's authorization URL and the consent page."""
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": APP_REDIRECT,
        "code_challenge": challenge.rstrip(b"=").decode(),
        "code_challenge_method": "S256",
        "state": "app-state",
        **extra,
    }
    async with browser.get(f"{base}/authorize", params=params) as response:
        page = await response.text()
        csp = response.headers["Content-Security-Policy"]
    assert response.status == 200 and 'name="decision"' in page and "password" not in page
    fields = form_fields(page)
    form = {"request": fields["request"], "csrf_token": fields["csrf_token"], "decision": "allow"}
    async with browser.post(f"{base}/consent", data=form, allow_redirects=False) as response:
        assert response.status == 303
        location = response.headers["Location"]
    assert urlsplit(location).netloc in csp  # forms may redirect to the provider (CSP)
    return location, page


async def finish_at_oauthd(browser: aiohttp.ClientSession, callback: str) -> dict[str, list[str]]:
    async with browser.get(callback, allow_redirects=False) as response:
        assert response.status == 303, await response.text()
        location = response.headers["Location"]
    assert location.startswith(APP_REDIRECT)
    return parse_qs(urlsplit(location).query)


async def register(api: aiohttp.ClientSession, base: str) -> str:
    body = {"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none"}
    async with api.post(f"{base}/register", json=body) as response:
        assert response.status == 201
        client_id: str = (await response.json())["client_id"]
        return client_id


async def redeem(
    api: aiohttp.ClientSession, base: str, client_id: str, code: str, verifier: str
) -> dict[str, Any]:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "client_id": client_id,
        "redirect_uri": APP_REDIRECT,
    }
    async with api.post(f"{base}/token", data=form) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


@pytest.mark.parametrize("provider", ["oidc", "github"])
async def test_login_through_the_provider_then_tokens_and_forwarding(
    tmp_path: Path, provider: str, mcp_upstream: tuple[str, list[dict[str, str]]]
) -> None:
    port = free_port()
    callback = f"http://127.0.0.1:{port}/login/callback"
    upstream_url, seen = mcp_upstream
    with running_idp(CLIENT_ID, CLIENT_SECRET, [callback], ttl={"AccessToken": 2}) as idp:
        config = config_for(tmp_path, port, idp, provider, upstream_url)
        server = TestServer(create_app(config), host="127.0.0.1", port=port)
        await server.start_server()
        base = f"http://127.0.0.1:{port}"
        try:
            jar = aiohttp.CookieJar(unsafe=True)
            async with (
                aiohttp.ClientSession(cookie_jar=jar) as browser,
                aiohttp.ClientSession() as api,
            ):
                client_id = await register(api, base)
                verifier = base64.urlsafe_b64encode(os.urandom(40)).rstrip(b"=").decode()
                idp_url, _ = await start_authorization(browser, base, client_id, verifier)
                assert idp_url.startswith(idp.issuer)
                back = await idp_login(browser, idp_url, "alice", "alice-password")
                assert back.startswith(callback)
                query = await finish_at_oauthd(browser, back)
                assert query["state"] == ["app-state"] and query["iss"] == [base]
                # the provider's state is single use: a replayed callback is refused
                async with browser.get(back, allow_redirects=False) as replay:
                    assert replay.status in (400, 403)
                tokens = await redeem(api, base, client_id, query["code"][0], verifier)
                store = server.app[STORE]
                grant_id = tokens["access_token"].split(".")[0]
                grant = await store.grants.get(grant_id)
                assert isinstance(grant, Grant) and grant.user == "alice@example.test"
                assert grant.upstream_tokens is not None
                assert b"access_token" not in grant.upstream_tokens  # sealed, not clear
                headers = {"Authorization": f"Bearer {tokens['access_token']}"}
                async with api.post(f"{base}/mcp", json={}, headers=headers) as response:
                    assert response.status == 200
                first = seen[-1]["X-Forwarded-Access-Token"]
                assert first and seen[-1]["X-Forwarded-User"] == "alice@example.test"
                assert "Authorization" not in seen[-1]
                if provider == "oidc":  # the provider's access token expires after 2 s
                    auth = server.app[AUTH]
                    assert auth.upstream_tokens is not None
                    sealed = grant.upstream_tokens
                    kept = orjson.loads(auth.upstream_tokens._sealer.open(sealed, grant.id))
                    assert "refresh_token" in kept
                    await _expire_upstream_token(server, grant)
                    async with api.post(f"{base}/mcp", json={}, headers=headers) as response:
                        assert response.status == 200
                    assert seen[-1]["X-Forwarded-Access-Token"] not in ("", first)
        finally:
            await server.close()


async def _expire_upstream_token(server: TestServer, grant: Grant) -> None:
    """Make the kept provider token look expired, as it will after its lifetime."""
    auth = server.app[AUTH]
    assert auth.upstream_tokens is not None
    sealer = auth.upstream_tokens._sealer
    assert grant.upstream_tokens is not None
    kept = orjson.loads(sealer.open(grant.upstream_tokens, grant.id))
    kept["expires_at"] = 0
    resealed = sealer.seal(orjson.dumps(kept), grant.id)
    await server.app[STORE].grants.update(
        grant.id, lambda g: dataclasses.replace(g, upstream_tokens=resealed)
    )


async def test_unverified_email_and_cancel_are_refused(
    tmp_path: Path, mcp_upstream: tuple[str, list[dict[str, str]]]
) -> None:
    port = free_port()
    callback = f"http://127.0.0.1:{port}/login/callback"
    with running_idp(CLIENT_ID, CLIENT_SECRET, [callback]) as idp:
        config = config_for(tmp_path, port, idp, "oidc", mcp_upstream[0])
        server = TestServer(create_app(config), host="127.0.0.1", port=port)
        await server.start_server()
        base = f"http://127.0.0.1:{port}"
        try:
            async with (
                aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as b,
                aiohttp.ClientSession() as api,
            ):
                client_id = await register(api, base)
                verifier = base64.urlsafe_b64encode(os.urandom(40)).rstrip(b"=").decode()
                idp_url, _ = await start_authorization(b, base, client_id, verifier)
                back = await idp_login(b, idp_url, "mallory", "mallory-password")
                async with b.get(back, allow_redirects=False) as response:
                    page = await response.text()
                    assert response.status == 400 and "not verified" in page
            # a fresh browser (the provider remembers mallory's sign-in in the first one)
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as b:
                idp_url, _ = await start_authorization(b, base, client_id, verifier)
                back = await idp_cancel(b, idp_url)
                query = await finish_at_oauthd(b, urljoin(idp.issuer, back))
                assert query["error"] == ["access_denied"] and query["state"] == ["app-state"]
        finally:
            await server.close()


async def test_a_callback_from_another_browser_is_refused(
    tmp_path: Path, mcp_upstream: tuple[str, list[dict[str, str]]]
) -> None:
    port = free_port()
    callback = f"http://127.0.0.1:{port}/login/callback"
    with running_idp(CLIENT_ID, CLIENT_SECRET, [callback]) as idp:
        config = config_for(tmp_path, port, idp, "oidc", mcp_upstream[0])
        server = TestServer(create_app(config), host="127.0.0.1", port=port)
        await server.start_server()
        base = f"http://127.0.0.1:{port}"
        try:
            async with (
                aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as b,
                aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other,
                aiohttp.ClientSession() as api,
            ):
                client_id = await register(api, base)
                verifier = base64.urlsafe_b64encode(os.urandom(40)).rstrip(b"=").decode()
                idp_url, _ = await start_authorization(b, base, client_id, verifier)
                back = await idp_login(b, idp_url, "alice", "alice-password")
                async with other.get(back, allow_redirects=False) as response:
                    assert response.status == 403  # the flow is bound to the first browser
                    assert "Location" not in response.headers
        finally:
            await server.close()


async def test_the_upgrade_page_signs_in_through_the_provider(
    tmp_path: Path, mcp_upstream: tuple[str, list[dict[str, str]]]
) -> None:
    """/upgrade (issue #12 item 5) with an identity provider: the provider's sign-in leads
    back to the page, where the grant's owner approves; someone else signed in at the
    provider gets the answer an unknown grant gets; a refusal at the provider is a page."""
    port = free_port()
    callback = f"http://127.0.0.1:{port}/login/callback"
    with running_idp(CLIENT_ID, CLIENT_SECRET, [callback]) as idp:
        config = config_for(tmp_path, port, idp, "oidc", mcp_upstream[0])
        config = dataclasses.replace(
            config, oauth=dataclasses.replace(config.oauth, scopes=("mcp", "files:write"))
        )
        server = TestServer(create_app(config), host="127.0.0.1", port=port)
        await server.start_server()
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as api:
                client_id = await register(api, base)
                tokens = await _provider_tokens(api, base, client_id, "alice")
            grant_id = tokens["access_token"].split(".")[0]
            page = f"{base}/upgrade?grant={grant_id}&scope=files%3Awrite"
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as b:
                async with b.get(page, allow_redirects=False) as response:
                    assert response.status == 303
                    idp_url = response.headers["Location"]
                assert idp_url.startswith(idp.issuer)
                back = await idp_login(b, idp_url, "alice", "alice-password")
                async with b.get(back, allow_redirects=False) as response:
                    assert response.status == 303, await response.text()
                    assert response.headers["Location"] == page.removeprefix(base)
                async with b.get(page) as response:
                    text = await response.text()
                assert response.status == 200 and "files:write" in text, text
                form = {**form_fields(text), "decision": "allow"}
                async with b.post(f"{base}/upgrade", data=form) as response:
                    assert response.status == 200 and "Access upgraded" in await response.text()
            grant = await server.app[STORE].grants.get(grant_id)
            assert grant is not None and grant.token_scopes == ("mcp", "files:write")
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as b:
                async with b.get(page, allow_redirects=False) as response:
                    idp_url = response.headers["Location"]
                back = await idp_login(b, idp_url, "bob", "bob-password")
                async with b.get(back) as response:  # signed in as bob: not his grant
                    assert response.status == 404 and "another account" in await response.text()
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as b:
                async with b.get(page, allow_redirects=False) as response:
                    idp_url = response.headers["Location"]
                back = await idp_cancel(b, idp_url)
                async with b.get(urljoin(idp.issuer, back), allow_redirects=False) as response:
                    assert response.status == 403 and "did not sign you in" in await response.text()
        finally:
            await server.close()


async def _provider_tokens(
    api: aiohttp.ClientSession, base: str, client_id: str, who: str
) -> dict[str, Any]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        verifier = base64.urlsafe_b64encode(os.urandom(40)).rstrip(b"=").decode()
        idp_url, _ = await start_authorization(browser, base, client_id, verifier, scope="mcp")
        back = await idp_login(browser, idp_url, who, f"{who}-password")
        query = await finish_at_oauthd(browser, back)
    return await redeem(api, base, client_id, query["code"][0], verifier)
