"""The token endpoint: the authorization_code grant and client authentication."""

from __future__ import annotations

import base64

import pytest

from oauthd import crypto
from oauthd.oauth.client_auth import ClientCredentials, credentials_from
from oauthd.oauth.errors import OAuthError
from tests.support.configs import USER
from tests.support.protocol import LOOPBACK_REDIRECT, RESOURCE, Env, Started, refused


async def _code(env: Env, started: Started) -> str:
    return (await env.approved(started))["code"]


def _form(code: str, started: Started, /, **extra: str) -> dict[str, str]:
    return {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": started.verifier,
        "redirect_uri": started.pending.redirect_uri,
    } | extra


async def test_code_for_tokens(env: Env) -> None:
    issued = await env.code_flow(scope="mcp files:read")
    body = issued.tokens.body()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == int(env.config.tokens.access_ttl)
    assert body["scope"] == "mcp files:read"
    assert body["refresh_token"] != body["access_token"]
    grant = await env.server.verify_bearer(body["access_token"])
    assert grant is not None
    assert (grant.user, grant.client_id, grant.resource) == (
        USER,
        issued.registration.client.client_id,
        RESOURCE,
    )
    assert grant.scopes == ("mcp", "files:read")
    stored = await env.store.grants.get(grant.id)
    assert stored is not None
    assert stored.refresh_hash == crypto.hash_secret(body["refresh_token"].split(".")[1])
    assert stored.access_expires_at == env.clock.now() + env.config.tokens.access_ttl


async def test_redirect_uri_is_required_when_authorize_had_one(env: Env) -> None:
    """RFC 6749 s4.1.3: REQUIRED if the authorization request included it."""
    registration = await env.register()
    started = await env.begin(registration.client)
    assert started.pending.redirect_uri_given
    code = await _code(env, started)
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": started.verifier}
    error = await refused(env.token(registration, form))
    assert (error.error, error.status) == ("invalid_grant", 400)
    assert "redirect_uri is required" in error.description
    assert await env.store.grants.count() == 0
    tokens = await env.token(registration, _form(code, started))  # the code is not used up
    assert await env.server.verify_bearer(tokens.access_token) is not None


async def test_redirect_uri_and_resource_are_optional_when_authorize_had_none(env: Env) -> None:
    registration = await env.register_confidential()
    started = await env.begin(registration.client, redirect_uri=None)
    assert not started.pending.redirect_uri_given
    code = await _code(env, started)
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": started.verifier}
    tokens = await env.token(registration, form)
    assert await env.server.verify_bearer(tokens.access_token) is not None


async def test_redirect_uri_when_authorize_had_none_must_still_be_the_one_used(env: Env) -> None:
    registration = await env.register_confidential()
    started = await env.begin(registration.client, redirect_uri=None)
    code = await _code(env, started)
    wrong = _form(code, started, redirect_uri="https://app.example.com/other")
    assert (await refused(env.token(registration, wrong))).error == "invalid_grant"
    assert await env.token(registration, _form(code, started))


async def test_code_is_single_use_and_replay_revokes_the_grant(env: Env) -> None:
    registration = await env.register()
    started = await env.begin(registration.client)
    code = await _code(env, started)
    tokens = await env.token(registration, _form(code, started))
    grant = await env.server.verify_bearer(tokens.access_token)
    assert grant is not None

    error = await refused(env.token(registration, _form(code, started)))
    assert (error.error, error.status) == ("invalid_grant", 400)
    assert await env.server.verify_bearer(tokens.access_token) is None
    assert await env.store.grants.get(grant.id) is None
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token or ""}
    assert (await refused(env.token(registration, refresh))).error == "invalid_grant"
    again = await refused(env.token(registration, _form(code, started)))
    assert again.error == "invalid_grant"


@pytest.mark.parametrize(
    "change",
    [
        {"code_verifier": "x" * 43},
        {"code_verifier": "short"},
        {"code_verifier": ""},
        {"redirect_uri": "http://127.0.0.1:9999/callback"},
        {"redirect_uri": LOOPBACK_REDIRECT + "/"},
        {"resource": "https://other.example.com/mcp"},
        {"code": "nokey"},
        {"code": "unknown.secret"},
    ],
)
async def test_bad_code_redemptions(env: Env, change: dict[str, str]) -> None:
    registration = await env.register()
    started = await env.begin(registration.client, redirect_uri="http://127.0.0.1:1234/callback")
    code = await _code(env, started)
    error = await refused(env.token(registration, _form(code, started, **change)))
    expected = "invalid_target" if "resource" in change else "invalid_grant"
    if change.get("code_verifier") == "":
        expected = "invalid_request"
    assert (error.error, error.status) == (expected, 400)
    assert await env.store.grants.count() == 0
    # a failed attempt does not use the code up
    tokens = await env.token(registration, _form(code, started))
    assert await env.server.verify_bearer(tokens.access_token) is not None


async def test_code_with_another_secret(env: Env) -> None:
    registration = await env.register()
    started = await env.begin(registration.client)
    code = await _code(env, started)
    key = code.split(".")[0]
    error = await refused(env.token(registration, _form(f"{key}.{crypto.new_secret()}", started)))
    assert error.error == "invalid_grant"


async def test_resource_in_another_spelling_is_ours(env: Env) -> None:
    registration = await env.register()
    started = await env.begin(registration.client)
    code = await _code(env, started)
    form = _form(code, started, resource="HTTPS://MCP.EXAMPLE.COM/mcp/")
    tokens = await env.token(registration, form)
    assert await env.server.verify_bearer(tokens.access_token) is not None


async def test_code_of_another_client(env: Env) -> None:
    victim = await env.register()
    attacker = await env.register()
    started = await env.begin(victim.client)
    code = await _code(env, started)
    error = await refused(env.token(attacker, _form(code, started)))
    assert (error.error, error.status) == ("invalid_grant", 400)
    assert await env.store.grants.count() == 0
    tokens = await env.token(victim, _form(code, started))  # the victim's code still works
    assert tokens.access_token


async def test_expired_code(env: Env) -> None:
    registration = await env.register()
    started = await env.begin(registration.client)
    code = await _code(env, started)
    env.clock.advance(env.config.tokens.code_ttl)
    error = await refused(env.token(registration, _form(code, started)))
    assert (error.error, error.status) == ("invalid_grant", 400)
    assert await env.store.grants.count() == 0


async def test_code_just_before_expiry(env: Env) -> None:
    registration = await env.register()
    started = await env.begin(registration.client)
    code = await _code(env, started)
    env.clock.advance(env.config.tokens.code_ttl - 1)
    assert (await env.token(registration, _form(code, started))).access_token


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({}, "invalid_request"),
        ({"grant_type": "password"}, "unsupported_grant_type"),
        ({"grant_type": "urn:example:unknown"}, "unsupported_grant_type"),
        ({"grant_type": "authorization_code", "code_verifier": "v" * 43}, "invalid_request"),
        ({"grant_type": "refresh_token"}, "invalid_request"),
    ],
)
async def test_malformed_requests(env: Env, form: dict[str, str], code: str) -> None:
    registration = await env.register()
    error = await refused(env.token(registration, form))
    assert (error.error, error.status) == (code, 400)


async def test_client_without_the_refresh_grant(env: Env) -> None:
    registration = await env.register(grant_types=["authorization_code"])
    issued = await env.code_flow(registration)
    error = await refused(env.refresh(issued))
    assert (error.error, error.status) == ("unauthorized_client", 400)


# -- client authentication -------------------------------------------------------------------


def _basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_confidential_client(env: Env, method: str) -> None:
    registration = await env.register_confidential(token_endpoint_auth_method=method)
    issued = await env.code_flow(registration)
    assert await env.server.verify_bearer(issued.tokens.access_token) is not None


async def test_credentials_from_basic_and_post(env: Env) -> None:
    registration = await env.register_confidential()
    client_id, secret = registration.client.client_id, registration.secret or ""
    basic = credentials_from({}, _basic(client_id, secret))
    assert basic == ClientCredentials(client_id, secret, "client_secret_basic")
    post = credentials_from({"client_id": client_id, "client_secret": secret}, None)
    assert post == ClientCredentials(client_id, secret, "client_secret_post")
    public = credentials_from({"client_id": client_id}, None)
    assert public == ClientCredentials(client_id, None, "none")
    assert credentials_from({}, None) is None
    for creds in (basic, post):
        client = await env.server.clients.authenticate(creds)
        assert client.client_id == client_id


async def test_basic_credentials_are_form_urlencoded() -> None:
    header = "Basic " + base64.b64encode(b"my%3Aclient:s%2Fcret").decode()
    creds = credentials_from({}, header)
    assert creds == ClientCredentials("my:client", "s/cret", "client_secret_basic")


@pytest.mark.parametrize(
    ("form", "header"),
    [
        ({}, "Basic !!!not-base64"),
        ({}, "Basic " + base64.b64encode(b"no-colon").decode()),
        ({"client_id": "other"}, "Basic " + base64.b64encode(b"one:secret").decode()),
    ],
)
def test_malformed_basic_credentials(form: dict[str, str], header: str) -> None:
    with pytest.raises(OAuthError) as caught:
        credentials_from(form, header)
    assert (caught.value.error, caught.value.status) == ("invalid_client", 401)
    assert "WWW-Authenticate" in caught.value.headers


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_wrong_secret(env: Env, method: str) -> None:
    registration = await env.register_confidential()
    started = await env.begin(registration.client)
    code = await _code(env, started)
    creds = ClientCredentials(registration.client.client_id, crypto.new_secret(), method)
    error = await refused(env.server.token(_form(code, started), creds))
    assert (error.error, error.status) == ("invalid_client", 401)
    assert ("WWW-Authenticate" in error.headers) is (method == "client_secret_basic")
    assert await env.store.grants.count() == 0


async def test_confidential_client_without_secret(env: Env) -> None:
    registration = await env.register_confidential()
    started = await env.begin(registration.client)
    code = await _code(env, started)
    error = await refused(env.token(registration, _form(code, started), method="none"))
    assert (error.error, error.status) == ("invalid_client", 401)


async def test_public_client_sending_a_secret(env: Env) -> None:
    registration = await env.register()
    started = await env.begin(registration.client)
    code = await _code(env, started)
    creds = ClientCredentials(registration.client.client_id, "guess", "client_secret_post")
    error = await refused(env.server.token(_form(code, started), creds))
    assert (error.error, error.status) == ("invalid_client", 401)


@pytest.mark.parametrize(
    "creds",
    [
        None,
        ClientCredentials("no-such-client", None, "none"),
        ClientCredentials("no-such-client", "secret", "client_secret_basic"),
    ],
)
async def test_unknown_client(env: Env, creds: ClientCredentials | None) -> None:
    registration = await env.register()
    started = await env.begin(registration.client)
    code = await _code(env, started)
    error = await refused(env.server.token(_form(code, started), creds))
    assert (error.error, error.status) == ("invalid_client", 401)


async def test_basic_credentials_of_a_public_client_with_empty_secret(env: Env) -> None:
    registration = await env.register()
    creds = credentials_from({}, _basic(registration.client.client_id, ""))
    assert creds is not None
    client = await env.server.clients.authenticate(creds)
    assert client.client_id == registration.client.client_id
