"""Refresh token rotation: one live branch per grant, retries of a request whose answer was
lost (the superseded token while its successor is unused), and reuse detection that ends the
whole grant."""

from __future__ import annotations

import pytest

from oauthd import crypto
from oauthd.oauth.families import SUPERSEDED_BYTES, SUPERSEDED_KEPT
from tests.support.protocol import RESOURCE, Env, EnvFactory, Issued, refused

GRACE = 10.0  # the default refresh_grace


async def _alive(env: Env, access_token: str) -> bool:
    return await env.server.verify_bearer(access_token) is not None


async def _grant_gone(env: Env, issued: Issued) -> bool:
    grant_id = issued.tokens.access_token.split(".")[0]
    return await env.store.grants.get(grant_id) is None


async def test_every_refresh_rotates_the_pair(env: Env) -> None:
    issued = await env.code_flow(scope="mcp files:read")
    seen = {issued.tokens.access_token, issued.tokens.refresh_token}
    current = issued.tokens
    for _ in range(3):
        env.clock.advance(GRACE + 1)
        fresh = await env.refresh(issued, current.refresh_token)
        assert fresh.refresh_token is not None
        assert {fresh.access_token, fresh.refresh_token}.isdisjoint(seen)
        seen |= {fresh.access_token, fresh.refresh_token}
        assert fresh.expires_in == int(env.config.tokens.access_ttl)
        assert fresh.scope == "mcp files:read"
        assert not await _alive(env, current.access_token)
        grant = await env.server.verify_bearer(fresh.access_token)
        assert grant is not None
        assert (grant.resource, grant.scopes) == (RESOURCE, ("mcp", "files:read"))
        current = fresh
    assert len({t.split(".")[0] for t in seen}) == 1  # one grant throughout


async def test_retry_inside_the_window_gets_a_fresh_pair(env: Env) -> None:
    assert env.config.tokens.refresh_grace == GRACE  # the default the issue asks for
    issued = await env.code_flow()
    lost = await env.refresh(issued)  # the client never saw this answer
    env.clock.advance(GRACE - 1)
    retried = await env.refresh(issued)
    assert retried.access_token not in (lost.access_token, issued.tokens.access_token)
    assert retried.refresh_token != lost.refresh_token
    assert not await _alive(env, lost.access_token)  # the unused successor is void
    assert await _alive(env, retried.access_token)
    following = await env.refresh(issued, retried.refresh_token)
    assert await _alive(env, following.access_token)


async def test_several_retries_inside_the_window(env: Env) -> None:
    issued = await env.code_flow()
    answers = [await env.refresh(issued) for _ in range(3)]
    assert len({a.access_token for a in answers}) == 3
    assert [await _alive(env, a.access_token) for a in answers] == [False, False, True]


async def test_voided_successor_is_reuse(env: Env) -> None:
    """RFC 9700 s4.14.2: an invalidated refresh token presented again reveals a second
    holder; the grant ends."""
    issued = await env.code_flow()
    lost = await env.refresh(issued)
    retried = await env.refresh(issued)
    error = await refused(env.refresh(issued, lost.refresh_token))
    assert (error.error, error.status) == ("invalid_grant", 400)
    assert not await _alive(env, retried.access_token)
    assert await _grant_gone(env, issued)


async def test_window_ends_once_the_successor_access_token_is_used(env: Env) -> None:
    issued = await env.code_flow()
    successor = await env.refresh(issued)
    assert await _alive(env, successor.access_token)  # used at the MCP endpoint
    error = await refused(env.refresh(issued))
    assert (error.error, error.status) == ("invalid_grant", 400)
    assert not await _alive(env, successor.access_token)
    assert (await refused(env.refresh(issued, successor.refresh_token))).error == "invalid_grant"
    assert await _grant_gone(env, issued)


async def test_window_ends_once_the_successor_refresh_token_is_used(env: Env) -> None:
    issued = await env.code_flow()
    successor = await env.refresh(issued)
    third = await env.refresh(issued, successor.refresh_token)
    error = await refused(env.refresh(issued))  # the first refresh token, replayed
    assert (error.error, error.status) == ("invalid_grant", 400)
    assert not await _alive(env, third.access_token)
    assert (await refused(env.refresh(issued, third.refresh_token))).error == "invalid_grant"
    assert await _grant_gone(env, issued)


async def test_replay_of_the_successor_inside_its_own_window(env: Env) -> None:
    issued = await env.code_flow()
    successor = await env.refresh(issued)
    lost = await env.refresh(issued, successor.refresh_token)
    retried = await env.refresh(issued, successor.refresh_token)
    assert not await _alive(env, lost.access_token)
    assert await _alive(env, retried.access_token)


async def test_a_late_retry_while_the_successor_is_unused_gets_a_fresh_pair(env: Env) -> None:
    """#11: a refresh answered 503 whose write landed anyway (a backend timeout), retried
    after the backend is back, long after any grace window: a retry, not reuse."""
    issued = await env.code_flow()
    lost = await env.refresh(issued)  # landed, but the client got a 503
    env.clock.advance(GRACE * 100)
    retried = await env.refresh(issued)
    assert await _alive(env, retried.access_token)
    assert not await _alive(env, lost.access_token)
    assert not await _grant_gone(env, issued)
    # whoever holds the voided successor ends the family when presenting it
    assert (await refused(env.refresh(issued, lost.refresh_token))).error == "invalid_grant"
    assert await _grant_gone(env, issued)


async def test_replay_after_the_successor_was_used_is_reuse_at_any_time(env: Env) -> None:
    issued = await env.code_flow()
    successor = await env.refresh(issued)
    assert await _alive(env, successor.access_token)
    env.clock.advance(GRACE * 100)
    error = await refused(env.refresh(issued))
    assert (error.error, error.status) == ("invalid_grant", 400)
    assert not await _alive(env, successor.access_token)
    assert (await refused(env.refresh(issued, successor.refresh_token))).error == "invalid_grant"
    assert await _grant_gone(env, issued)


async def test_no_grace_window_when_it_is_zero(env_with: EnvFactory) -> None:
    """refresh_grace = "0s": even a retry at the very same instant (or with a clock behind
    the rotation's, as on another instance) is reuse and ends the grant."""
    env = env_with(tokens={"refresh_grace": 0.0})
    issued = await env.code_flow()
    successor = await env.refresh(issued)
    assert (await refused(env.refresh(issued))).error == "invalid_grant"
    assert not await _alive(env, successor.access_token)
    assert await _grant_gone(env, issued)


async def test_a_guessed_secret_under_a_known_grant_id_does_not_end_the_grant(env: Env) -> None:
    """Knowing a grant id (it is in every token of the grant, and in logs' prefixes) and
    sending any value is a plain invalid_grant: only a superseded refresh token is reuse."""
    issued = await env.code_flow()
    env.clock.advance(GRACE + 1)
    successor = await env.refresh(issued)
    grant_id = issued.tokens.access_token.split(".")[0]
    for guess in ("x", crypto.new_secret(), crypto.mint_token(grant_id).token.split(".")[1]):
        error = await refused(env.refresh(issued, f"{grant_id}.{guess}"))
        assert (error.error, error.status) == ("invalid_grant", 400)
        assert "the session is revoked" not in error.description
    assert await _alive(env, successor.access_token)
    assert (await env.refresh(issued, successor.refresh_token)).access_token


async def test_an_older_superseded_refresh_token_is_still_reuse(env: Env) -> None:
    """Not only the last superseded one: any of the grant's last ones ends the family."""
    issued = await env.code_flow()
    tokens = [issued.tokens]
    for _ in range(5):
        env.clock.advance(GRACE + 1)
        tokens.append(await env.refresh(issued, tokens[-1].refresh_token))
    error = await refused(env.refresh(issued, tokens[1].refresh_token))
    assert (error.error, error.status) == ("invalid_grant", 400)
    assert "the session is revoked" in error.description
    assert not await _alive(env, tokens[-1].access_token)
    assert await _grant_gone(env, issued)


async def test_the_superseded_set_is_bounded(env: Env) -> None:
    issued = await env.code_flow()
    current = issued.tokens
    for _ in range(SUPERSEDED_KEPT + 5):
        env.clock.advance(GRACE + 1)
        current = await env.refresh(issued, current.refresh_token)
    grant = await env.store.grants.get(current.access_token.split(".")[0])
    assert grant is not None
    assert len(grant.superseded_hashes) == SUPERSEDED_KEPT * SUPERSEDED_BYTES
    # the oldest fell out of the set: refused, and the grant is kept
    assert (await refused(env.refresh(issued))).error == "invalid_grant"
    assert await _alive(env, current.access_token)


async def test_access_token_sent_as_refresh_token_is_refused(env: Env) -> None:
    issued = await env.code_flow()
    error = await refused(env.refresh(issued, issued.tokens.access_token))
    assert error.error == "invalid_grant"
    assert await _alive(env, issued.tokens.access_token)


@pytest.mark.parametrize("token", ["malformed", "no-such-grant.secret", "a.b.c"])
async def test_unknown_refresh_token(env: Env, token: str) -> None:
    issued = await env.code_flow()
    error = await refused(env.refresh(issued, token))
    assert (error.error, error.status) == ("invalid_grant", 400)


async def test_scope_narrowing(env: Env) -> None:
    issued = await env.code_flow(scope="mcp files:read")
    narrowed = await env.refresh(issued, scope="files:read")
    assert narrowed.scope == "files:read"
    grant = await env.server.verify_bearer(narrowed.access_token)
    assert grant is not None and grant.token_scopes == ("files:read",)
    assert grant.scopes == ("mcp", "files:read")  # the grant itself is not narrowed


async def test_omitted_scope_after_narrowing_is_the_original(env: Env) -> None:
    issued = await env.code_flow(scope="mcp files:read")
    narrowed = await env.refresh(issued, scope="files:read")
    again = await env.refresh(issued, narrowed.refresh_token)
    assert again.scope == "mcp files:read"


async def test_narrowing_to_an_implied_scope(env_with: EnvFactory) -> None:
    env = env_with(oauth={"scope_implies": (("files:write", ("files:read",)),)})
    issued = await env.code_flow(scope="files:write")
    narrowed = await env.refresh(issued, scope="files:read")
    assert narrowed.scope == "files:read"
    grant = await env.server.verify_bearer(narrowed.access_token)
    assert grant is not None and grant.token_scopes == ("files:read",)
    error = await refused(env.refresh(issued, narrowed.refresh_token, scope="mcp"))
    assert (error.error, error.status) == ("invalid_scope", 400)


@pytest.mark.parametrize("scope", ["files:write", "mcp admin"])
async def test_scope_cannot_widen(env: Env, scope: str) -> None:
    issued = await env.code_flow(scope="mcp files:read")
    error = await refused(env.refresh(issued, scope=scope))
    assert (error.error, error.status) == ("invalid_scope", 400)
    assert await _alive(env, issued.tokens.access_token)  # nothing rotated


async def test_refresh_token_of_another_client(env: Env) -> None:
    issued = await env.code_flow()
    other = await env.register()
    form = {"grant_type": "refresh_token", "refresh_token": issued.tokens.refresh_token or ""}
    error = await refused(env.token(other, form))
    assert (error.error, error.status) == ("invalid_grant", 400)
    assert await _alive(env, issued.tokens.access_token)
    assert (await env.refresh(issued)).access_token  # the owner's token still works


async def test_confidential_client_must_authenticate_to_refresh(env: Env) -> None:
    issued = await env.code_flow(await env.register_confidential())
    form = {"grant_type": "refresh_token", "refresh_token": issued.tokens.refresh_token or ""}
    error = await refused(env.token(issued.registration, form, method="none"))
    assert (error.error, error.status) == ("invalid_client", 401)
    assert (await env.refresh(issued)).access_token


@pytest.mark.parametrize("resource", [RESOURCE, f"{RESOURCE}/", "HTTPS://MCP.EXAMPLE.COM/mcp"])
async def test_refresh_keeps_our_resource(env: Env, resource: str) -> None:
    issued = await env.code_flow()
    fresh = await env.refresh(issued, resource=resource)
    grant = await env.server.verify_bearer(fresh.access_token)
    assert grant is not None and grant.resource == RESOURCE


async def test_refresh_for_another_resource(env: Env) -> None:
    issued = await env.code_flow()
    error = await refused(env.refresh(issued, resource="https://other.example.com/mcp"))
    assert (error.error, error.status) == ("invalid_target", 400)
    assert await _alive(env, issued.tokens.access_token)


async def test_refresh_lifetime_slides(env: Env) -> None:
    ttl = env.config.tokens.refresh_ttl
    issued = await env.code_flow()
    current = issued.tokens
    for _ in range(3):  # well past the first expiry, because every use extends it
        env.clock.advance(ttl - 60)
        current = await env.refresh(issued, current.refresh_token)
        grant_id, _ = current.refresh_token.split(".") if current.refresh_token else ("", "")
        stored = await env.store.grants.get(grant_id)
        assert stored is not None and stored.expires_at == env.clock.now() + ttl
    env.clock.advance(ttl)
    error = await refused(env.refresh(issued, current.refresh_token))
    assert (error.error, error.status) == ("invalid_grant", 400)


async def test_only_digests_are_stored(env: Env) -> None:
    issued = await env.code_flow()
    grant_id, access_secret = issued.tokens.access_token.split(".")
    refresh_secret = (issued.tokens.refresh_token or "").split(".")[1]
    stored = await env.store.grants.get(grant_id)
    assert stored is not None
    assert stored.access_hash == crypto.hash_secret(access_secret)
    assert stored.refresh_hash == crypto.hash_secret(refresh_secret)
    assert access_secret not in repr(stored) and refresh_secret not in repr(stored)
