"""A resource with JWT access tokens behind the gate: the JWT the token endpoint issued is
accepted at its path, refused at once once its grant is revoked (the grant stays the
source of truth), and a refreshed one works."""

from __future__ import annotations

from joserfc import jwt
from joserfc.jwk import KeySet

from tests.support.proxy_app import StartOauthd
from tests.support.upstream import FakeUpstream


async def test_a_jwt_access_token_at_mcp(start_oauthd: StartOauthd, upstream: FakeUpstream) -> None:
    oauthd = await start_oauthd(upstream={"access_token_format": "jwt"})
    granted = await oauthd.login()
    keys = KeySet.import_key_set((await oauthd.call("GET", "/.well-known/jwks.json")).json())
    token = jwt.decode(granted.access, keys, algorithms=["ES256"])
    assert token.header["typ"] == "at+jwt"
    assert token.claims["aud"] == oauthd.mcp_url
    assert (await oauthd.mcp("POST", granted)).status == 200

    again = await oauthd.refreshed(granted)
    assert again.access.count(".") == 2 and again.access != granted.access
    assert (await oauthd.mcp("POST", again)).status == 200
    assert (await oauthd.mcp("POST", granted)).status == 401  # the old one is void

    await oauthd.revoke(again.refresh, again.client_id)
    assert (await oauthd.mcp("POST", again)).status == 401  # at once, despite its exp
    assert len(upstream.requests) == 2
