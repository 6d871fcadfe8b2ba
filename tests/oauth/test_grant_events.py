"""The records of what happens to grants, on the memory backend's trail: issued with the
code's claim, refreshed, revoked (by whom), reuse detected and code replay with their
reason codes; each invalid_grant names its reason. Never a token in a record."""

from __future__ import annotations

from typing import Any

import orjson

from oauthd.audit import MemoryTrail, reasons
from tests.support.protocol import Env, refused


def trail(env: Env) -> list[dict[str, Any]]:
    audit = env.store.audit
    assert isinstance(audit, MemoryTrail)
    return [orjson.loads(line) for line in audit.lines]


def events(env: Env, name: str) -> list[dict[str, Any]]:
    return [r for r in trail(env) if r["event"] == name]


async def test_issue_and_refresh_are_recorded_with_their_expiry(env: Env) -> None:
    issued = await env.code_flow()
    (record,) = events(env, "token_issued")
    grant = issued.tokens.access_token.split(".")[0]
    assert record["grant"] == grant[:8] and record["grant_type"] == "authorization_code"
    assert record["principal"] == "user" and record["resource"] == "/mcp"
    assert record["expires_at"] > env.clock.now()
    env.clock.advance(60)
    fresh = await env.refresh(issued)
    (refreshed,) = events(env, "token_refreshed")
    assert refreshed["grant"] == grant[:8] and refreshed["expires_at"] > record["expires_at"]
    lines = b"".join(env.store.audit.lines)  # type: ignore[attr-defined]
    for secret in (issued.tokens.access_token, fresh.access_token, fresh.refresh_token):
        assert secret.split(".")[1].encode() not in lines


async def test_reuse_after_the_grace_ends_the_grant_with_its_reason(env: Env) -> None:
    issued = await env.code_flow()
    successor = await env.refresh(issued)
    assert await env.server.verify_bearer(successor.access_token) is not None  # used
    error = await refused(env.refresh(issued))  # the first token, replayed
    assert error.reason == reasons.REPLAY_AFTER_GRACE
    (reuse,) = events(env, "reuse_detected")
    assert reuse["reason"] == reasons.REPLAY_AFTER_GRACE
    assert reuse["token_type"] == "refresh_token"


async def test_an_older_superseded_token_is_named_so(env: Env) -> None:
    issued = await env.code_flow()
    second = await env.refresh(issued)
    third = await env.refresh(issued, second.refresh_token)
    await env.refresh(issued, third.refresh_token)
    error = await refused(env.refresh(issued))
    assert error.reason == reasons.SUPERSEDED_REFRESH_TOKEN_REPLAYED


async def test_an_unknown_refresh_token_is_refused_without_a_record(env: Env) -> None:
    issued = await env.code_flow()
    before = len(trail(env))
    error = await refused(env.refresh(issued, "nothing.here"))
    assert (error.error, error.reason) == ("invalid_grant", reasons.UNKNOWN_TOKEN)
    assert len(trail(env)) == before


async def test_a_dead_token_of_a_live_grant_is_refused_with_a_record(env: Env) -> None:
    issued = await env.code_flow()
    grant = issued.tokens.refresh_token.split(".")[0]
    error = await refused(env.refresh(issued, f"{grant}.not-the-secret"))
    assert error.reason == reasons.TOKEN_NOT_CURRENT
    (record,) = events(env, "refused")
    assert record["reason"] == reasons.TOKEN_NOT_CURRENT and record["grant"] == grant[:8]


async def test_revocations_say_who(env: Env) -> None:
    issued = await env.code_flow()
    grant = issued.tokens.access_token.split(".")[0]
    await env.server.revoke_grant(grant, by="admin")
    revoked = events(env, "token_revoked")
    assert [(r["by"], r["reason"]) for r in revoked] == [("admin", reasons.REVOKED_BY_ADMIN)]
    (withdrawn,) = events(env, "consent_withdrawn")
    assert withdrawn["reason"] == reasons.REVOKED_BY_ADMIN


async def test_login_and_consent_are_recorded(env: Env) -> None:
    await env.code_flow()
    (consent,) = events(env, "consent")
    assert consent["decision"] == "allow" and consent["scopes"]
    (client,) = events(env, "client_registered")
    assert len(client["fingerprint"]) == 12
