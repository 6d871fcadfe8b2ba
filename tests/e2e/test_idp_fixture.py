"""The test OpenID provider (tests/idp_fixture.py) is real: discovery, the code flow with PKCE
through its login form, an RS256 id_token checked against its JWKS, userinfo, and rotating
refresh tokens. authlib builds the requests, joserfc (authlib's JOSE library) checks the
id_token, aiohttp talks, as oauthd does."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.jwk import KeySet, KeySetSerialization

from tests.support.idp import (
    Idp,
    IdpLoginError,
    ensure_idp_installed,
    idp_cancel,
    idp_login,
    running_idp,
)

CLIENT_ID = "oauthd-test"
CLIENT_SECRET = "s3cret-" + "x" * 24
REDIRECT_URI = "http://127.0.0.1:9/upstream/callback"  # never requested
BASIC = {"Authorization": aiohttp.encode_basic_auth(CLIENT_ID, CLIENT_SECRET)}
SCOPE = "openid email profile"


@pytest.fixture(scope="module")
def idp() -> Iterator[Idp]:
    with running_idp(CLIENT_ID, CLIENT_SECRET, [REDIRECT_URI]) as running:
        yield running


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


async def get_json(session: aiohttp.ClientSession, url: str, **kw: Any) -> dict[str, Any]:
    async with session.get(url, **kw) as response:
        assert response.status == 200, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def post_token(
    session: aiohttp.ClientSession, url: str, form: dict[str, str], **kw: Any
) -> tuple[int, dict[str, Any]]:
    async with session.post(url, data=form, **kw) as response:
        body: dict[str, Any] = await response.json()
        return response.status, body


async def provider_keys(session: aiohttp.ClientSession, doc: dict[str, Any]) -> KeySet:
    jwks = await get_json(session, doc["jwks_uri"])
    return KeySet.import_key_set(cast(KeySetSerialization, jwks))


@dataclass(frozen=True, slots=True)
class Started:
    """One authorization request: its URL and the secrets the client keeps."""

    url: str
    state: str
    nonce: str
    verifier: str


def authorization_request(doc: dict[str, Any], *, pkce: bool = True) -> Started:
    state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
    extra = {"code_challenge": create_s256_code_challenge(verifier)} if pkce else {}
    if pkce:
        extra["code_challenge_method"] = "S256"
    url = prepare_grant_uri(
        doc["authorization_endpoint"],
        CLIENT_ID,
        "code",
        REDIRECT_URI,
        SCOPE,
        state,
        nonce=nonce,
        **extra,
    )
    return Started(str(url), state, nonce, verifier)


def callback_params(url: str) -> dict[str, str]:
    assert url.startswith(REDIRECT_URI + "?"), url
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def test_discovery_names_the_endpoints(idp: Idp, browser: aiohttp.ClientSession) -> None:
    doc = await get_json(browser, idp.discovery_url)
    assert doc["issuer"] == idp.issuer == f"http://127.0.0.1:{idp.port}"
    for key in ("authorization_endpoint", "token_endpoint", "jwks_uri", "userinfo_endpoint"):
        assert doc[key].startswith(idp.issuer + "/"), key
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert "RS256" in doc["id_token_signing_alg_values_supported"]
    assert {"openid", "email", "profile", "offline_access"} <= set(doc["scopes_supported"])
    assert doc["authorization_response_iss_parameter_supported"] is True
    jwks = await get_json(browser, doc["jwks_uri"])
    assert [(k["kty"], k["alg"], k["use"]) for k in jwks["keys"]] == [("RSA", "RS256", "sig")]
    assert "d" not in jwks["keys"][0]


async def test_code_flow_with_pkce_id_token_userinfo_and_refresh(
    idp: Idp, browser: aiohttp.ClientSession
) -> None:
    alice = idp.accounts["alice"]
    doc = await get_json(browser, idp.discovery_url)
    start = authorization_request(doc)

    params = callback_params(await idp_login(browser, start.url, "alice", alice.password))
    assert params["state"] == start.state
    assert params["iss"] == idp.issuer
    assert "error" not in params

    code_form = {
        "grant_type": "authorization_code",
        "code": params["code"],
        "redirect_uri": REDIRECT_URI,
        "code_verifier": start.verifier,
    }
    status, tokens = await post_token(browser, doc["token_endpoint"], code_form, headers=BASIC)
    assert status == 200, tokens
    assert tokens["token_type"].lower() == "bearer"
    assert {"access_token", "id_token", "refresh_token"} <= tokens.keys()

    token = jwt.decode(tokens["id_token"], await provider_keys(browser, doc), algorithms=["RS256"])
    assert token.header["alg"] == "RS256"
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": idp.issuer},
        aud={"essential": True, "value": CLIENT_ID},
        nonce={"essential": True, "value": start.nonce},
        exp={"essential": True},
        sub={"essential": True, "value": alice.sub},
    ).validate(token.claims)
    assert token.claims["email"] == alice.email == "alice@example.test"
    assert token.claims["email_verified"] is True
    assert token.claims["preferred_username"] == "alice"
    assert token.claims["name"] == alice.name

    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    info = await get_json(browser, doc["userinfo_endpoint"], headers=bearer)
    assert info["sub"] == alice.sub
    assert info["email"] == alice.email

    refresh_form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    status, refreshed = await post_token(
        browser, doc["token_endpoint"], refresh_form, headers=BASIC
    )
    assert status == 200, refreshed
    assert refreshed["access_token"] != tokens["access_token"]
    assert refreshed["refresh_token"] != tokens["refresh_token"]  # rotated on every use
    info = await get_json(
        browser,
        doc["userinfo_endpoint"],
        headers={"Authorization": f"Bearer {refreshed['access_token']}"},
    )
    assert info["email"] == alice.email

    # Reusing the rotated refresh token is refused, and so is the used code.
    status, body = await post_token(browser, doc["token_endpoint"], refresh_form, headers=BASIC)
    assert (status, body["error"]) == (400, "invalid_grant")
    status, body = await post_token(browser, doc["token_endpoint"], code_form, headers=BASIC)
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_pkce_is_required_and_checked(idp: Idp, browser: aiohttp.ClientSession) -> None:
    doc = await get_json(browser, idp.discovery_url)
    bob = idp.accounts["bob"]

    without = authorization_request(doc, pkce=False)
    params = callback_params(await idp_login(browser, without.url, "bob", bob.password))
    assert params["error"] == "invalid_request"
    assert "PKCE" in params["error_description"]

    start = authorization_request(doc)
    params = callback_params(await idp_login(browser, start.url, "bob", bob.password))
    form = {
        "grant_type": "authorization_code",
        "code": params["code"],
        "redirect_uri": REDIRECT_URI,
        "code_verifier": secrets.token_urlsafe(32),
    }
    status, body = await post_token(browser, doc["token_endpoint"], form, headers=BASIC)
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_wrong_password_is_rejected_and_cancel_denies(
    idp: Idp, browser: aiohttp.ClientSession
) -> None:
    doc = await get_json(browser, idp.discovery_url)
    with pytest.raises(IdpLoginError, match="Invalid username or password"):
        await idp_login(browser, authorization_request(doc).url, "alice", "wrong")
    with pytest.raises(IdpLoginError, match="Invalid username or password"):
        await idp_login(browser, authorization_request(doc).url, "nobody", "alice-password")

    start = authorization_request(doc)
    params = callback_params(await idp_cancel(browser, start.url))
    assert (params["error"], params["state"]) == ("access_denied", start.state)


async def test_a_session_that_drops_ip_cookies_is_named(idp: Idp) -> None:
    async with aiohttp.ClientSession() as strict:  # aiohttp's default jar: no IP cookies
        doc = await get_json(strict, idp.discovery_url)
        with pytest.raises(IdpLoginError, match=r"CookieJar\(unsafe=True\)"):
            await idp_login(strict, authorization_request(doc).url, "alice", "alice-password")


async def test_client_secret_post_email_login_and_unverified_email(
    browser: aiohttp.ClientSession,
) -> None:
    with running_idp(
        CLIENT_ID,
        CLIENT_SECRET,
        [REDIRECT_URI],
        token_endpoint_auth_method="client_secret_post",
        ttl={"AccessToken": 120},
    ) as idp:
        doc = await get_json(browser, idp.discovery_url)
        assert idp.issuer == doc["issuer"]
        mallory = idp.accounts["mallory"]
        start = authorization_request(doc)
        # The login field takes the e-mail address too.
        params = callback_params(
            await idp_login(browser, start.url, mallory.email, mallory.password)
        )
        form = {
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": start.verifier,
            "client_id": CLIENT_ID,
        }
        status, body = await post_token(
            browser, doc["token_endpoint"], {**form, "client_secret": "wrong"}
        )
        assert (status, body["error"]) == (401, "invalid_client")

        status, tokens = await post_token(
            browser, doc["token_endpoint"], {**form, "client_secret": CLIENT_SECRET}
        )
        assert status == 200, tokens
        assert tokens["expires_in"] == 120
        keys = await provider_keys(browser, doc)
        claims = jwt.decode(tokens["id_token"], keys, algorithms=["RS256"]).claims
        assert (claims["sub"], claims["email"]) == (mallory.sub, mallory.email)
        assert claims["email_verified"] is False


def test_missing_node_skips_or_fails_when_services_are_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("OAUTHD_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs node and npm"):
        ensure_idp_installed()
    monkeypatch.setenv("OAUTHD_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="OAUTHD_REQUIRE_SERVICES=1"):
        ensure_idp_installed()
