"""JWT access tokens (RFC 9068) for a resource with `access_token_format = "jwt"`
(`oauthd/oauth/access_tokens.py`): issued by the code exchange and the refresh, `typ`
`at+jwt`, verifiable with the ring's JWKS, found again by their `jti`; revocation and
introspection work on them; a revoked grant's JWT is refused at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from oauthd import crypto
from oauthd.oauth.access_tokens import token_parts
from oauthd.oauth.clients import ClientCredentials
from tests.support.configs import INTROSPECTION_ID, USER
from tests.support.protocol import (
    INTROSPECTION_SECRET,
    ISSUER,
    RESOURCE,
    Env,
    build_env,
    credentials,
)

INTROSPECTOR = ClientCredentials(INTROSPECTION_ID, INTROSPECTION_SECRET, "client_secret_basic")


@pytest.fixture
async def env(tmp_path: Path) -> Env:
    env = build_env(tmp_path, upstream={"access_token_format": "jwt"})
    await env.server.keys.refresh()
    return env


def decoded(env: Env, token: str) -> jwt.Token:
    return jwt.decode(token, KeySet.import_key_set(env.server.jwks()), algorithms=["ES256"])


async def test_the_code_exchange_issues_a_signed_jwt(env: Env) -> None:
    issued = await env.code_flow()
    token = decoded(env, issued.tokens.access_token)
    assert token.header["typ"] == "at+jwt" and token.header["kid"] == "k1"
    claims = token.claims
    grant_id, _ = token_parts(issued.tokens.access_token) or ("", "")
    now = int(env.clock.now())
    assert claims == {
        "iss": ISSUER,
        "exp": now + int(env.config.tokens.access_ttl),
        "aud": RESOURCE,
        "sub": USER,
        "client_id": issued.registration.client.client_id,
        "iat": now,
        "jti": claims["jti"],
        "scope": issued.tokens.scope,
    }
    assert claims["jti"].startswith(grant_id + ".")
    assert issued.tokens.refresh_token is not None and issued.tokens.refresh_token.count(".") == 1
    grant = await env.server.verify_bearer(issued.tokens.access_token)
    assert grant is not None and grant.id == grant_id
    assert grant.access_hash == crypto.hash_secret(issued.tokens.access_token)


async def test_a_refresh_issues_a_new_jwt_and_voids_the_old(env: Env) -> None:
    issued = await env.code_flow()
    env.clock.advance(5)
    again = await env.refresh(issued)
    assert again.access_token != issued.tokens.access_token
    assert decoded(env, again.access_token).claims["iat"] == int(env.clock.now())
    assert await env.server.verify_bearer(again.access_token) is not None
    assert await env.server.verify_bearer(issued.tokens.access_token) is None


async def test_a_forged_or_altered_jwt_is_refused(env: Env) -> None:
    issued = await env.code_flow()
    token = issued.tokens.access_token
    head, body, signature = token.split(".")
    assert await env.server.verify_bearer(f"{head}.{body}.{signature[:-2]}AA") is None
    assert await env.server.verify_bearer(f"{head}.{body}x.{signature}") is None
    assert await env.server.verify_bearer("a.b.c") is None


async def test_revocation_is_at_once(env: Env) -> None:
    issued = await env.code_flow()
    token = issued.tokens.access_token
    await env.server.revoke({"token": token}, credentials(issued.registration))
    assert await env.server.verify_bearer(token) is None  # the access token voided
    other = await env.code_flow()
    await env.server.revoke(
        {"token": other.tokens.refresh_token or ""}, credentials(other.registration)
    )
    assert await env.server.verify_bearer(other.tokens.access_token) is None  # grant ended


async def test_introspection(env: Env) -> None:
    issued = await env.code_flow()
    answer = await env.server.introspect({"token": issued.tokens.access_token}, INTROSPECTOR)
    assert answer["active"] is True and answer["token_type"] == "Bearer"
    assert answer["sub"] == USER and answer["aud"] == RESOURCE
    await env.server.revoke(
        {"token": issued.tokens.refresh_token or ""}, credentials(issued.registration)
    )
    answer = await env.server.introspect({"token": issued.tokens.access_token}, INTROSPECTOR)
    assert answer == {"active": False}


async def test_an_opaque_resource_keeps_opaque_tokens(tmp_path: Path) -> None:
    env = build_env(tmp_path)
    issued = await env.code_flow()
    assert issued.tokens.access_token.count(".") == 1
    assert env.server.assertions.signed == 0


def test_token_parts() -> None:
    assert token_parts("key.secret") == ("key", "secret")
    assert token_parts("not a token") is None
    assert token_parts("a.b.c") is None  # no JSON payload
    assert token_parts("e30.e30.sig") is None  # `{}`: no jti
