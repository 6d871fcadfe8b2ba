"""RFC 7591 dynamic registration and Client ID Metadata Documents."""

from __future__ import annotations

import dataclasses

import pytest

from oauthd import crypto
from oauthd.oauth.clients import registration_response
from tests.support.protocol import (
    ADDRESS,
    CIMD_CLIENT_ID,
    LOOPBACK_REDIRECT,
    SCOPES,
    WEB_REDIRECT,
    Env,
    EnvFactory,
    refused,
)

CURSOR_URIS = [
    "cursor://anysphere.cursor-retrieval/oauth/user-mcp/callback",
    "https://cursor.example.com/oauth/callback",
    "http://localhost/callback",
]


async def test_public_client(env: Env) -> None:
    registration = await env.register(client_name="Claude Code")
    client = registration.client
    assert registration.secret is None
    assert client.token_endpoint_auth_method == "none"
    assert client.secret_hash is None
    assert client.grant_types == ("authorization_code", "refresh_token")
    assert client.response_types == ("code",)
    assert client.source == "dcr"
    body = registration_response(registration)
    assert body["client_id"] == client.client_id
    assert body["client_name"] == "Claude Code"
    assert body["redirect_uris"] == [LOOPBACK_REDIRECT]
    assert "client_secret" not in body
    assert await env.store.clients.get(client.client_id) == client


async def test_confidential_client_by_default(env: Env) -> None:
    registration = await env.server.register({"redirect_uris": [WEB_REDIRECT]}, ADDRESS)
    assert registration.client.token_endpoint_auth_method == "client_secret_basic"
    assert registration.secret is not None
    body = registration_response(registration)
    assert body["client_secret"] == registration.secret
    assert body["client_secret_expires_at"] == 0


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_only_the_secret_digest_is_stored(env: Env, method: str) -> None:
    registration = await env.register_confidential(token_endpoint_auth_method=method)
    secret = registration.secret
    assert secret is not None and len(secret) >= 43
    stored = await env.store.clients.get(registration.client.client_id)
    assert stored is not None
    assert stored.token_endpoint_auth_method == method
    assert stored.secret_hash == crypto.hash_secret(secret)
    values = [getattr(stored, f.name) for f in dataclasses.fields(stored)]
    assert not any(secret in str(value) for value in values)


async def test_each_registration_gets_its_own_id_and_secret(env: Env) -> None:
    first = await env.register_confidential()
    second = await env.register_confidential()
    assert first.client.client_id != second.client.client_id
    assert first.secret != second.secret


@pytest.mark.parametrize(
    ("uris", "given", "expected"),
    [
        ([LOOPBACK_REDIRECT], None, "native"),
        (["http://localhost:3000/cb", "http://[::1]/cb"], None, "native"),
        ([WEB_REDIRECT], None, "web"),
        ([WEB_REDIRECT, LOOPBACK_REDIRECT], None, "web"),
        ([WEB_REDIRECT], "native", "native"),
        ([LOOPBACK_REDIRECT], "web", "web"),
    ],
)
async def test_application_type(
    env: Env, uris: list[str], given: str | None, expected: str
) -> None:
    body = {"redirect_uris": uris} | ({"application_type": given} if given else {})
    registration = await env.register(**body)
    assert registration.client.application_type == expected
    assert registration_response(registration)["application_type"] == expected


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"application_type": "desktop"}, "application_type"),
        ({"token_endpoint_auth_method": "private_key_jwt"}, "token_endpoint_auth_method"),
        ({"token_endpoint_auth_method": "client_secret_jwt"}, "token_endpoint_auth_method"),
        ({"grant_types": ["password"]}, "grant_types"),
        ({"grant_types": ["authorization_code", "implicit"]}, "grant_types"),
        ({"grant_types": "authorization_code"}, "grant_types"),
        ({"response_types": ["token"]}, "response_types"),
        ({"response_types": ["code", "id_token"]}, "response_types"),
        ({"scope": "mcp admin"}, "scope"),
        ({"scope": ["mcp"]}, "scope"),
        ({"client_name": "x" * 201}, "client_name"),
        ({"client_name": 42}, "client_name"),
        ({"redirect_uris": LOOPBACK_REDIRECT}, "redirect_uris"),
    ],
)
async def test_invalid_client_metadata_names_the_field(env: Env, body: dict, field: str) -> None:
    error = await refused(env.register(**body))
    assert (error.error, error.status) == ("invalid_client_metadata", 400)
    assert error.description.startswith(field)
    assert await env.store.clients.count() == 0


@pytest.mark.parametrize(
    ("uris", "named"),
    [
        (["http://app.example.com/callback"], "http://app.example.com/callback"),
        ([WEB_REDIRECT + "#frag"], "#frag"),
        (["https://user@app.example.com/cb"], "userinfo"),
        (["javascript:alert(1)"], "javascript"),
        (["/relative/callback"], "not absolute"),
        ([LOOPBACK_REDIRECT, "http://evil.example/cb"], "http://evil.example/cb"),
        ([], "redirect_uris"),
    ],
)
async def test_invalid_redirect_uri(env: Env, uris: list[str], named: str) -> None:
    error = await refused(env.register(redirect_uris=uris))
    assert (error.error, error.status) == ("invalid_redirect_uri", 400)
    assert named in error.description
    assert await env.store.clients.count() == 0


async def test_redirect_uris_required_for_the_code_grant(env: Env) -> None:
    error = await refused(env.server.register({"token_endpoint_auth_method": "none"}, ADDRESS))
    assert error.error == "invalid_redirect_uri"
    assert "redirect_uris" in error.description


async def test_too_many_redirect_uris(env: Env) -> None:
    uris = [f"https://app.example.com/cb{i}" for i in range(21)]
    error = await refused(env.register(redirect_uris=uris))
    assert error.error == "invalid_redirect_uri"


async def test_device_only_client_needs_no_redirect_uri(env: Env) -> None:
    grants = ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"]
    registration = await env.server.register(
        {"grant_types": grants, "token_endpoint_auth_method": "none"}, ADDRESS
    )
    assert registration.client.redirect_uris == ()
    assert registration.client.response_types == ()
    assert registration.client.grant_types == tuple(grants)


async def test_cursor_registration_keeps_the_good_uris(env: Env) -> None:
    registration = await env.register(redirect_uris=CURSOR_URIS)
    assert registration.client.redirect_uris == tuple(CURSOR_URIS[1:])
    assert registration.dropped_redirect_uris == (CURSOR_URIS[0],)
    assert registration_response(registration)["redirect_uris"] == CURSOR_URIS[1:]


async def test_listed_private_scheme_is_kept(env_with: EnvFactory) -> None:
    env = env_with(oauth={"allowed_redirect_schemes": ("cursor",)})
    registration = await env.register(redirect_uris=CURSOR_URIS)
    assert registration.client.redirect_uris == tuple(CURSOR_URIS)
    assert registration.dropped_redirect_uris == ()


async def test_only_unlisted_private_schemes_fail(env: Env) -> None:
    error = await refused(env.register(redirect_uris=CURSOR_URIS[:1]))
    assert error.error == "invalid_redirect_uri"
    assert "cursor" in error.description


async def test_scope_is_a_subset_of_ours(env: Env) -> None:
    default = await env.register()
    assert default.client.scope == " ".join(SCOPES)
    narrow = await env.register(scope="mcp mcp files:read")
    assert narrow.client.scope == "mcp files:read"


async def test_registration_disabled(env_with: EnvFactory) -> None:
    env = env_with(oauth={"registration": False})
    error = await refused(env.register())
    assert (error.error, error.status) == ("access_denied", 403)
    assert await env.store.clients.count() == 0


async def test_registrations_are_rate_limited_per_address(env_with: EnvFactory) -> None:
    env = env_with(oauth={"registrations_per_minute": 2})
    body = {"redirect_uris": [LOOPBACK_REDIRECT], "token_endpoint_auth_method": "none"}
    await env.server.register(body, ADDRESS)
    await env.server.register(body, ADDRESS)
    error = await refused(env.server.register(body, ADDRESS))
    assert (error.error, error.status) == ("too_many_requests", 429)
    assert 1 <= int(error.headers["Retry-After"]) <= 61
    await env.server.register(body, "198.51.100.7")  # another address is not limited
    env.clock.advance(60)
    await env.server.register(body, ADDRESS)
    assert await env.store.clients.count() == 4


# -- Client ID Metadata Documents --------------------------------------------------------


def _document(**extra: object) -> dict[str, object]:
    return {
        "client_id": CIMD_CLIENT_ID,
        "client_name": "Document Client",
        "redirect_uris": ["http://127.0.0.1/callback", "https://client.example.org/cb"],
    } | extra


async def test_metadata_document_client(env: Env) -> None:
    env.fetcher.documents[CIMD_CLIENT_ID] = _document()
    client = await env.server.clients.find(CIMD_CLIENT_ID)
    assert client is not None
    assert client.source == "cimd"
    assert client.client_name == "Document Client"
    assert client.token_endpoint_auth_method == "none"
    assert client.secret_hash is None
    assert client.application_type == "web"
    assert client.expires_at == env.clock.now() + env.fetcher.lifetime
    assert await env.server.clients.find(CIMD_CLIENT_ID) == client
    assert env.fetcher.fetches == [CIMD_CLIENT_ID]  # cached until it expires
    env.clock.advance(env.fetcher.lifetime + 1)
    await env.server.clients.find(CIMD_CLIENT_ID)
    assert env.fetcher.fetches == [CIMD_CLIENT_ID, CIMD_CLIENT_ID]


async def test_metadata_document_runs_a_code_flow(env: Env) -> None:
    env.fetcher.documents[CIMD_CLIENT_ID] = _document()
    client = await env.server.clients.find(CIMD_CLIENT_ID)
    assert client is not None
    started = await env.begin(client, redirect_uri="http://127.0.0.1:49152/callback")
    query = await env.approved(started)
    assert "code" in query


@pytest.mark.parametrize(
    "document",
    [
        _document(token_endpoint_auth_method="client_secret_basic"),
        _document(redirect_uris=[]),
        _document(redirect_uris=["http://evil.example/cb"]),
    ],
)
async def test_unacceptable_metadata_document(env: Env, document: dict) -> None:
    env.fetcher.documents[CIMD_CLIENT_ID] = document
    error = await refused(env.server.clients.find(CIMD_CLIENT_ID))
    assert (error.error, error.status) == ("invalid_client", 401)
    assert await env.store.clients.get(CIMD_CLIENT_ID) is None


async def test_unfetchable_document_is_an_invalid_client(env: Env) -> None:
    error = await refused(env.server.clients.find(CIMD_CLIENT_ID))
    assert error.error == "invalid_client"
    assert "HTTP 404" in error.description


@pytest.mark.parametrize(
    "client_id",
    ["http://client.example.org/oauth/metadata.json", "https://client.example.org/", "nope"],
)
async def test_not_a_document_url(env: Env, client_id: str) -> None:
    assert await env.server.clients.find(client_id) is None
    assert env.fetcher.fetches == []


async def test_documents_disabled(env_with: EnvFactory) -> None:
    env = env_with(oauth={"client_id_metadata_documents": False})
    env.fetcher.documents[CIMD_CLIENT_ID] = _document()
    assert await env.server.clients.find(CIMD_CLIENT_ID) is None
    assert env.fetcher.fetches == []


async def test_client_credentials_only_when_the_operator_allows(env_with: EnvFactory) -> None:
    body = {
        "grant_types": ["client_credentials"],
        "token_endpoint_auth_method": "client_secret_basic",
    }
    closed = env_with()
    error = await refused(closed.server.register(body, ADDRESS))
    assert error.error == "invalid_client_metadata" and "client_credentials" in error.description
    env = env_with(oauth={"registration_client_credentials": True})
    registration = await env.server.register(body, ADDRESS)
    assert registration.secret and registration.client.grant_types == ("client_credentials",)
    assert registration.client.redirect_uris == ()
    public = {**body, "token_endpoint_auth_method": "none"}
    error = await refused(env.server.register(public, ADDRESS))
    assert error.error == "invalid_client_metadata" and "confidential" in error.description


async def test_private_key_jwt_with_inline_keys_only(env_with: EnvFactory) -> None:
    from tests.support.jwts import Signer

    env = env_with(oauth={"registration_client_credentials": True})
    signer = Signer.rsa()
    body = {"grant_types": ["client_credentials"], "token_endpoint_auth_method": "private_key_jwt"}
    registration = await env.server.register({**body, "jwks": signer.jwks()}, ADDRESS)
    assert registration.secret is None and registration.client.jwks is not None
    assert registration_response(registration)["jwks"] == signer.jwks()
    for bad, says in (
        ({"jwks_uri": "https://keys.example/jwks"}, "jwks_uri"),
        ({}, "needs jwks"),
        ({"jwks": signer.private_jwks()}, "private"),
    ):
        error = await refused(env.server.register({**body, **bad}, ADDRESS))
        assert error.error == "invalid_client_metadata" and says in error.description
