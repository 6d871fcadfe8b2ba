"""RFC 7009 revocation and RFC 7662 introspection."""

from __future__ import annotations

from pathlib import Path

import pytest

from oauthd import crypto
from oauthd.config import ConfigError
from oauthd.oauth.client_auth import ClientCredentials
from tests.support.configs import INTROSPECTION_ID, USER, write_secret
from tests.support.protocol import (
    INTROSPECTION_SECRET,
    ISSUER,
    RESOURCE,
    Env,
    EnvFactory,
    Issued,
    credentials,
    refused,
)

INTROSPECTOR = ClientCredentials(INTROSPECTION_ID, INTROSPECTION_SECRET, "client_secret_basic")


async def _revoke(env: Env, issued: Issued, token: str) -> None:
    await env.server.revoke({"token": token}, credentials(issued.registration))


async def _alive(env: Env, access_token: str) -> bool:
    return await env.server.verify_bearer(access_token) is not None


# -- revocation ----------------------------------------------------------------------------------


async def test_revoking_the_refresh_token_ends_the_grant(env: Env) -> None:
    issued = await env.code_flow()
    await _revoke(env, issued, issued.tokens.refresh_token or "")
    assert not await _alive(env, issued.tokens.access_token)
    error = await refused(env.refresh(issued))
    assert (error.error, error.status) == ("invalid_grant", 400)
    assert await env.store.grants.count() == 0


async def test_revoking_the_superseded_refresh_token_ends_the_grant(env: Env) -> None:
    issued = await env.code_flow()
    fresh = await env.refresh(issued)
    await _revoke(env, issued, issued.tokens.refresh_token or "")
    assert not await _alive(env, fresh.access_token)


async def test_revoking_the_access_token_keeps_the_refresh_token(env: Env) -> None:
    issued = await env.code_flow()
    await _revoke(env, issued, issued.tokens.access_token)
    assert not await _alive(env, issued.tokens.access_token)
    fresh = await env.refresh(issued)
    assert await _alive(env, fresh.access_token)


async def test_confidential_client_revokes(env: Env) -> None:
    issued = await env.code_flow(await env.register_confidential())
    await _revoke(env, issued, issued.tokens.refresh_token or "")
    assert not await _alive(env, issued.tokens.access_token)
    wrong = ClientCredentials(issued.registration.client.client_id, "nope", "client_secret_basic")
    error = await refused(env.server.revoke({"token": "x.y"}, wrong))
    assert (error.error, error.status) == ("invalid_client", 401)


@pytest.mark.parametrize("token", ["garbage", "no-such-grant.secret", "a.b.c"])
async def test_unknown_tokens_are_ignored(env: Env, token: str) -> None:
    issued = await env.code_flow()
    await _revoke(env, issued, token)
    assert await _alive(env, issued.tokens.access_token)


async def test_wrong_secret_under_a_known_grant_is_ignored(env: Env) -> None:
    issued = await env.code_flow()
    grant_id = issued.tokens.access_token.split(".")[0]
    await _revoke(env, issued, f"{grant_id}.{crypto.new_secret()}")
    assert await _alive(env, issued.tokens.access_token)


async def test_another_clients_tokens_are_ignored(env: Env) -> None:
    victim = await env.code_flow()
    attacker = await env.code_flow()
    for token in (victim.tokens.access_token, victim.tokens.refresh_token or ""):
        await _revoke(env, attacker, token)
    assert await _alive(env, victim.tokens.access_token)
    assert (await env.refresh(victim)).access_token


async def test_revoke_needs_a_token_and_a_client(env: Env) -> None:
    issued = await env.code_flow()
    error = await refused(env.server.revoke({}, credentials(issued.registration)))
    assert (error.error, error.status) == ("invalid_request", 400)
    error = await refused(env.server.revoke({"token": issued.tokens.access_token}, None))
    assert (error.error, error.status) == ("invalid_client", 401)
    assert await _alive(env, issued.tokens.access_token)


# -- introspection -------------------------------------------------------------------------------


async def test_active_access_token(env: Env) -> None:
    issued = await env.code_flow(scope="mcp files:read")
    body = await env.server.introspect({"token": issued.tokens.access_token}, INTROSPECTOR)
    assert body == {
        "active": True,
        "token_type": "Bearer",
        "client_id": issued.registration.client.client_id,
        "username": USER,
        "sub": USER,
        "scope": "mcp files:read",
        "aud": RESOURCE,
        "iss": ISSUER,
        "exp": int(env.clock.now() + env.config.tokens.access_ttl),
        "iat": int(env.clock.now()),
    }


async def test_active_refresh_token(env: Env) -> None:
    issued = await env.code_flow()
    body = await env.server.introspect({"token": issued.tokens.refresh_token or ""}, INTROSPECTOR)
    assert body["active"] is True
    assert body["token_type"] == "refresh_token"
    assert body["client_id"] == issued.registration.client.client_id
    assert body["exp"] == int(env.clock.now() + env.config.tokens.refresh_ttl)


async def test_post_credentials_work_too(env: Env) -> None:
    issued = await env.code_flow()
    creds = ClientCredentials(INTROSPECTION_ID, INTROSPECTION_SECRET, "client_secret_post")
    body = await env.server.introspect({"token": issued.tokens.access_token}, creds)
    assert body["active"] is True


async def test_everything_else_is_only_inactive(env: Env) -> None:
    issued = await env.code_flow()
    fresh = await env.refresh(issued)
    expired = await env.code_flow()
    revoked = await env.code_flow()
    await _revoke(env, revoked, revoked.tokens.refresh_token or "")
    env.clock.advance(env.config.tokens.access_ttl)
    grant_id = fresh.access_token.split(".")[0]
    for token in (
        issued.tokens.access_token,  # superseded
        issued.tokens.refresh_token or "",  # superseded
        expired.tokens.access_token,  # expired
        revoked.tokens.access_token,
        revoked.tokens.refresh_token or "",
        f"{grant_id}.{crypto.new_secret()}",
        "garbage",
        "no-such-grant.secret",
    ):
        assert await env.server.introspect({"token": token}, INTROSPECTOR) == {"active": False}
    body = await env.server.introspect({"token": fresh.refresh_token or ""}, INTROSPECTOR)
    assert body["active"] is True


@pytest.mark.parametrize(
    "creds",
    [
        None,
        ClientCredentials(INTROSPECTION_ID, None, "none"),
        ClientCredentials(INTROSPECTION_ID, "wrong", "client_secret_basic"),
        ClientCredentials("someone-else", INTROSPECTION_SECRET, "client_secret_post"),
    ],
)
async def test_introspection_needs_the_configured_credential(
    env: Env, creds: ClientCredentials | None
) -> None:
    issued = await env.code_flow()
    error = await refused(env.server.introspect({"token": issued.tokens.access_token}, creds))
    assert (error.error, error.status) == ("invalid_client", 401)
    challenged = creds is not None and creds.method == "client_secret_basic"
    assert ("WWW-Authenticate" in error.headers) is challenged


async def test_a_registered_client_cannot_introspect(env: Env) -> None:
    issued = await env.code_flow(await env.register_confidential())
    error = await refused(
        env.server.introspect(
            {"token": issued.tokens.access_token}, credentials(issued.registration)
        )
    )
    assert error.error == "invalid_client"


async def test_introspection_without_configured_credential(env_with: EnvFactory) -> None:
    env = env_with(introspection={"client_id": "", "client_secret": ""})
    issued = await env.code_flow()
    for creds in (INTROSPECTOR, ClientCredentials("", "", "client_secret_post")):
        error = await refused(env.server.introspect({"token": issued.tokens.access_token}, creds))
        assert error.error == "invalid_client"


async def test_introspection_secret_is_read_at_start_not_per_request(
    env: Env, tmp_path: Path
) -> None:
    """The secret file is read once (oauthd.keyring); rotating it takes a SIGHUP, which
    calls `reload_secrets` (tests/test_reload_secrets.py)."""
    issued = await env.code_flow()
    form = {"token": issued.tokens.access_token}
    write_secret(tmp_path / "introspection.secret", "rotated-secret\n")
    assert (await env.server.introspect(form, INTROSPECTOR))["active"] is True
    rotated = ClientCredentials(INTROSPECTION_ID, "rotated-secret", "client_secret_basic")
    assert (await refused(env.server.introspect(form, rotated))).error == "invalid_client"
    assert env.server.reload_secrets(env.config) == ["introspection.client_secret"]
    assert (await env.server.introspect(form, rotated))["active"] is True
    error = await refused(env.server.introspect(form, INTROSPECTOR))
    assert error.error == "invalid_client"
    (tmp_path / "introspection.secret").unlink()  # unreadable: the reload fails, no change
    with pytest.raises(ConfigError, match=r"introspection\.client_secret: cannot read"):
        env.server.reload_secrets(env.config)
    assert (await env.server.introspect(form, rotated))["active"] is True


async def test_introspection_needs_a_token(env: Env) -> None:
    error = await refused(env.server.introspect({}, INTROSPECTOR))
    assert (error.error, error.status) == ("invalid_request", 400)
