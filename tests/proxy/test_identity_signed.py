"""Signed identity to the upstream (a resource's `signed_identity`): the JWT in
`signed_identity_header` on every relayed request and on the DELETE that closes a session,
verified here against oauthd's own JWKS with joserfc; its claims for a user grant and a
service grant; a client-sent copy never crosses; one assertion serves a grant's requests
while it has more than half its life left, then a new one is signed."""

from __future__ import annotations

import dataclasses
from typing import Any

from joserfc import jwt
from joserfc.jwk import KeySet

from oauthd.model import PRINCIPAL_SERVICE
from tests.support.proxy_app import Oauthd, StartOauthd
from tests.support.upstream import FakeUpstream, SessionsAnswer
from tests.support.wait import eventually

HEADER = "X-Oauthd-Identity"
SIGNED = {"signed_identity": True}


async def verified(oauthd: Oauthd, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of an identity JWT, its signature checked against /jwks.json."""
    reply = await oauthd.call("GET", "/.well-known/jwks.json")
    keys = KeySet.import_key_set(reply.json())
    decoded = jwt.decode(token, keys, algorithms=["ES256"])
    return dict(decoded.header), dict(decoded.claims)


async def test_a_relayed_request_carries_a_verifiable_identity(
    start_oauthd: StartOauthd, upstream: FakeUpstream
) -> None:
    oauthd = await start_oauthd(upstream=SIGNED)
    granted = await oauthd.grant(scopes=("mcp",))
    reply = await oauthd.mcp(
        "POST", granted, headers={HEADER: "forged", "X-Forwarded-Principal": "service"}
    )
    assert reply.status == 200
    seen = upstream.requests[-1].headers
    assert seen.getall(HEADER) != ["forged"] and len(seen.getall(HEADER)) == 1
    assert seen["X-Forwarded-Principal"] == "user"
    header, claims = await verified(oauthd, seen[HEADER])
    assert header["typ"] == "oauthd-identity+jwt" and header["kid"] == "k1"
    now = int(oauthd.clock.now())
    assert claims == {
        "iss": oauthd.config.server.issuer,
        "aud": oauthd.mcp_url,
        "sub": "alice",
        "client_id": granted.client_id,
        "scope": "mcp",
        "grant": granted.grant_id[:8],
        "principal": "user",
        "iat": now,
        "exp": now + 60,
        "jti": claims["jti"],
    }


async def test_a_service_grant_says_service(
    start_oauthd: StartOauthd, upstream: FakeUpstream
) -> None:
    oauthd = await start_oauthd(upstream=SIGNED)
    granted = await oauthd.grant(user="svc-backup")
    await oauthd.store.grants.update(
        granted.grant_id, lambda g: dataclasses.replace(g, principal=PRINCIPAL_SERVICE)
    )
    assert (await oauthd.mcp("POST", granted)).status == 200
    seen = upstream.requests[-1].headers
    assert seen["X-Forwarded-Principal"] == "service"
    _, claims = await verified(oauthd, seen[HEADER])
    assert (claims["sub"], claims["principal"]) == ("svc-backup", "service")


async def test_one_assertion_is_reused_for_half_its_life_then_signed_again(
    start_oauthd: StartOauthd, upstream: FakeUpstream
) -> None:
    oauthd = await start_oauthd(upstream=SIGNED)
    granted = await oauthd.grant()
    for _ in range(3):
        assert (await oauthd.mcp("POST", granted)).status == 200
    first = {seen.headers[HEADER] for seen in upstream.requests}
    assert len(first) == 1 and oauthd.auth.assertions.signed == 1
    oauthd.clock.advance(29)
    assert (await oauthd.mcp("POST", granted)).status == 200
    assert upstream.requests[-1].headers[HEADER] in first
    oauthd.clock.advance(1)
    assert (await oauthd.mcp("POST", granted)).status == 200
    fresh = upstream.requests[-1].headers[HEADER]
    assert fresh not in first and oauthd.auth.assertions.signed == 2
    _, claims = await verified(oauthd, fresh)
    assert claims["iat"] == int(oauthd.clock.now())
    other = await oauthd.grant()
    assert (await oauthd.mcp("POST", other)).status == 200
    assert upstream.requests[-1].headers[HEADER] != fresh  # per grant


async def test_the_delete_closing_a_session_carries_it(
    start_oauthd: StartOauthd, upstream: FakeUpstream
) -> None:
    upstream.answer = SessionsAnswer()
    oauthd = await start_oauthd(upstream=SIGNED)
    granted = await oauthd.grant()
    assert (await oauthd.mcp("POST", granted)).status == 200
    await oauthd.revoke(granted.refresh, granted.client_id)
    await eventually(lambda: len(upstream.of_method("DELETE")) == 1)
    [closing] = upstream.of_method("DELETE")
    _, claims = await verified(oauthd, closing.headers[HEADER])
    assert claims["sub"] == "alice" and claims["grant"] == granted.grant_id[:8]
    assert oauthd.auth.assertions._cache == {}  # the ended grant is forgotten


async def test_without_signed_identity_no_header_and_a_forged_one_is_dropped(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    granted = await oauthd.grant()
    reply = await oauthd.mcp("POST", granted, headers={HEADER: "forged"})
    assert reply.status == 200
    assert HEADER not in upstream.requests[-1].headers
    assert oauthd.auth.assertions.signed == 0


async def test_a_custom_header_name(start_oauthd: StartOauthd, upstream: FakeUpstream) -> None:
    oauthd = await start_oauthd(
        upstream={**SIGNED, "signed_identity_header": "X-Who", "principal_header": "X-Kind"}
    )
    granted = await oauthd.grant()
    reply = await oauthd.mcp("POST", granted, headers={"X-Who": "forged", HEADER: "also"})
    assert reply.status == 200
    seen = upstream.requests[-1].headers
    assert seen["X-Kind"] == "user" and seen[HEADER] == "also"  # not ours: passed as sent
    _, claims = await verified(oauthd, seen["X-Who"])
    assert claims["sub"] == "alice"
