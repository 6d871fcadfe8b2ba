"""Every /mcp request carries a bearer token of ours, for our resource, alive and with the
required scopes; otherwise the proxy answers itself and the upstream sees nothing."""

from __future__ import annotations

from tests.support.browser import Answer
from tests.support.proxy_app import Oauthd, StartOauthd
from tests.support.upstream import FakeUpstream


def metadata_url(oauthd: Oauthd) -> str:
    return f"{oauthd.base}/.well-known/oauth-protected-resource/mcp"


def assert_unauthorized(reply: Answer, oauthd: Oauthd, error: str | None) -> None:
    assert reply.status == 401, (reply.status, reply.text)
    params = reply.challenge()
    assert params["resource_metadata"] == metadata_url(oauthd)
    assert params["scope"] == "mcp"
    if error is None:
        assert "error" not in params, params
    else:
        assert params["error"] == error, params
    assert reply.headers.get("Cache-Control") == "no-store"


async def test_no_token_gets_the_discovery_challenge(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    for method in ("POST", "GET", "DELETE"):
        reply = await oauthd.mcp(method)
        assert_unauthorized(reply, oauthd, None)
    # The metadata URL named in the challenge is served and names this resource.
    prm = await oauthd.call("GET", "/.well-known/oauth-protected-resource/mcp")
    assert prm.status == 200 and prm.json()["resource"] == oauthd.mcp_url
    assert upstream.requests == []


async def test_a_valid_token_passes(oauthd: Oauthd, upstream: FakeUpstream) -> None:
    granted = await oauthd.grant()
    reply = await oauthd.mcp("POST", granted)
    assert reply.status == 200, reply.text
    assert reply.json()["result"]["method"] == "POST"
    assert len(upstream.requests) == 1


async def test_tokens_from_the_real_login_flow_work(oauthd: Oauthd, upstream: FakeUpstream) -> None:
    granted = await oauthd.login()
    reply = await oauthd.mcp("POST", granted)
    assert reply.status == 200, reply.text
    assert upstream.requests[0].headers["X-Forwarded-User"] == "alice"


async def test_unknown_or_malformed_tokens_are_invalid(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    granted = await oauthd.grant()
    grant_id = granted.grant_id
    for token in ("nope.nope", "garbage", f"{grant_id}.wrongsecret", granted.refresh, "x" * 600):
        reply = await oauthd.mcp("POST", headers={"Authorization": f"Bearer {token}"})
        assert_unauthorized(reply, oauthd, "invalid_token")
    assert upstream.requests == []


async def test_other_schemes_are_refused_with_a_challenge(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    granted = await oauthd.grant()
    for header in (f"Basic {granted.access}", "Bearer ", "Bearer"):
        reply = await oauthd.mcp("POST", headers={"Authorization": header})
        assert reply.status == 401, (header, reply.status)
        assert reply.challenge()["resource_metadata"] == metadata_url(oauthd)
    assert upstream.requests == []


async def test_an_expired_token_is_invalid(oauthd: Oauthd, upstream: FakeUpstream) -> None:
    granted = await oauthd.grant()
    assert (await oauthd.mcp("POST", granted)).status == 200
    oauthd.clock.advance(oauthd.config.tokens.access_ttl + 1)
    assert_unauthorized(await oauthd.mcp("POST", granted), oauthd, "invalid_token")
    assert len(upstream.requests) == 1


async def test_a_revoked_access_token_is_invalid(oauthd: Oauthd, upstream: FakeUpstream) -> None:
    granted = await oauthd.grant()
    await oauthd.revoke(granted.access, granted.client_id)
    assert_unauthorized(await oauthd.mcp("POST", granted), oauthd, "invalid_token")
    assert upstream.requests == []


async def test_a_token_of_a_revoked_grant_is_invalid(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    granted = await oauthd.grant()
    await oauthd.revoke(granted.refresh, granted.client_id)
    assert_unauthorized(await oauthd.mcp("POST", granted), oauthd, "invalid_token")
    assert upstream.requests == []


async def test_a_token_in_the_query_string_is_not_accepted(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    granted = await oauthd.grant()
    for name in ("access_token", "token"):
        reply = await oauthd.mcp("POST", params={name: granted.access})
        assert_unauthorized(reply, oauthd, None)
    reply = await oauthd.mcp("POST", data={"access_token": granted.access})  # nor in a form
    assert_unauthorized(reply, oauthd, None)
    assert upstream.requests == []


async def test_a_token_for_another_resource_is_refused(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    for resource in ("https://other.example/mcp", f"{oauthd.base}/other"):
        granted = await oauthd.grant(resource=resource)
        assert_unauthorized(await oauthd.mcp("POST", granted), oauthd, "invalid_token")
    assert upstream.requests == []


async def test_insufficient_scope_is_403(start_oauthd: StartOauthd, upstream: FakeUpstream) -> None:
    oauthd = await start_oauthd(
        oauth={"scopes": ("mcp", "mcp:admin")}, upstream={"required_scopes": ("mcp", "mcp:admin")}
    )
    granted = await oauthd.grant(scopes=("mcp",))
    reply = await oauthd.mcp("POST", granted)
    assert reply.status == 403, reply.text
    params = reply.challenge()
    assert params["error"] == "insufficient_scope"
    assert params["scope"] == "mcp mcp:admin"  # every scope needed, in one challenge
    assert params["resource_metadata"] == metadata_url(oauthd)
    # Without a token, the 401 names the scopes to ask for.
    assert (await oauthd.mcp("POST")).challenge()["scope"] == "mcp mcp:admin"
    assert upstream.requests == []

    full = await oauthd.grant(scopes=("mcp", "mcp:admin"))
    assert (await oauthd.mcp("POST", full)).status == 200
    assert upstream.requests[0].headers["X-Forwarded-Scopes"] == "mcp mcp:admin"
