"""`verify_bearer`: what the MCP endpoint accepts."""

from __future__ import annotations

import pytest

from oauthd import crypto
from oauthd.keyring import read_keyring
from oauthd.oauth.server import AuthServer
from oauthd.users import Users
from tests.support.configs import USER
from tests.support.protocol import RESOURCE, Env, EnvFactory, credentials


async def test_valid_access_token(env: Env) -> None:
    issued = await env.code_flow(scope="mcp")
    grant = await env.server.verify_bearer(issued.tokens.access_token)
    assert grant is not None
    assert (grant.user, grant.client_id, grant.scopes, grant.resource) == (
        USER,
        issued.registration.client.client_id,
        ("mcp",),
        RESOURCE,
    )


async def test_wrong_secret(env: Env) -> None:
    issued = await env.code_flow()
    grant_id = issued.tokens.access_token.split(".")[0]
    assert await env.server.verify_bearer(f"{grant_id}.{crypto.new_secret()}") is None
    assert await env.server.verify_bearer(issued.tokens.refresh_token or "") is None
    assert await env.server.verify_bearer(issued.tokens.access_token) is not None


@pytest.mark.parametrize("token", ["", "garbage", ".", "a.", ".b", "a.b.c", "x" * 600])
async def test_malformed(env: Env, token: str) -> None:
    await env.code_flow()
    assert await env.server.verify_bearer(token) is None


async def test_expired_access_token(env: Env) -> None:
    issued = await env.code_flow()
    ttl = env.config.tokens.access_ttl
    env.clock.advance(ttl - 1)
    assert await env.server.verify_bearer(issued.tokens.access_token) is not None
    env.clock.advance(1)
    assert await env.server.verify_bearer(issued.tokens.access_token) is None
    fresh = await env.refresh(issued)  # the refresh token outlives it
    assert await env.server.verify_bearer(fresh.access_token) is not None


async def test_token_for_another_resource(env: Env, env_with: EnvFactory) -> None:
    """A token minted by an oauthd with another issuer (so for another /mcp) sharing the
    store is not accepted here."""
    other_config = env_with(server={"issuer": "https://other.example.com"}).config
    other = AuthServer(
        other_config,
        env.store,
        env.clock,
        Users(other_config.login.users),
        keyring=read_keyring(other_config),
    )
    client = (await env.register()).client
    tokens = await other.tokens.issue(
        crypto.new_key(), USER, client.client_id, ("mcp",), "https://other.example.com/mcp"
    )
    assert await other.verify_bearer(tokens.access_token) is not None
    assert await env.server.verify_bearer(tokens.access_token) is None


async def test_revoked_grant(env: Env) -> None:
    issued = await env.code_flow()
    form = {"token": issued.tokens.refresh_token or ""}
    await env.server.revoke(form, credentials(issued.registration))
    assert await env.server.verify_bearer(issued.tokens.access_token) is None


async def test_use_is_recorded_at_most_once_a_minute(env: Env) -> None:
    issued = await env.code_flow()
    grant_id = issued.tokens.access_token.split(".")[0]
    created = env.clock.now()
    env.clock.advance(5)
    await env.server.verify_bearer(issued.tokens.access_token)
    first = await env.store.grants.get(grant_id)
    assert first is not None and first.successor_used and first.last_used_at == created + 5
    env.clock.advance(30)
    await env.server.verify_bearer(issued.tokens.access_token)
    same = await env.store.grants.get(grant_id)
    assert same is first  # not rewritten
    env.clock.advance(30)
    await env.server.verify_bearer(issued.tokens.access_token)
    later = await env.store.grants.get(grant_id)
    assert later is not None and later.last_used_at == created + 65


async def test_requests_racing_the_first_use_do_not_all_write(env: Env) -> None:
    """Concurrent requests that all read the grant before the first of them marked it used
    call `_mark_used` with that old copy; the change sees the mark in the current record
    and leaves it alone, so only the first one writes (no burst of writes)."""
    issued = await env.code_flow()
    grant_id = issued.tokens.access_token.split(".")[0]
    env.clock.advance(5)
    before = await env.store.grants.get(grant_id)
    assert before is not None and not before.successor_used  # what every request read
    await env.server.verify_bearer(issued.tokens.access_token)  # the first one marks it
    marked = await env.store.grants.get(grant_id)
    assert marked is not None and marked.successor_used
    env.clock.advance(1)
    assert await env.server.tokens._mark_used(before, env.clock.now()) is marked
    assert await env.store.grants.get(grant_id) is marked  # not rewritten
    env.clock.advance(60)  # a minute later the next use is recorded again
    later = await env.server.tokens._mark_used(before, env.clock.now())
    assert later is not None and later is not marked and later.last_used_at == env.clock.now()
