"""The proxy's required scopes under a scope hierarchy (`oauth.scope_implies`)."""

from __future__ import annotations

from tests.support.proxy_app import StartOauthd
from tests.support.upstream import FakeUpstream

SCOPES = ["mcp", "files:read", "files:write"]


async def test_a_scope_that_implies_the_required_one_passes(
    start_oauthd: StartOauthd, upstream: FakeUpstream
) -> None:
    oauthd = await start_oauthd(
        oauth={"scopes": SCOPES, "scope_implies": (("files:write", ("files:read",)),)},
        upstream={"required_scopes": ("files:read",)},
    )
    writer = await oauthd.grant(scopes=("files:write",))
    assert (await oauthd.mcp("POST", writer)).status == 200
    other = await oauthd.grant(scopes=("mcp",))
    refused = await oauthd.mcp("POST", other)
    assert refused.status == 403
    assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
    assert len(upstream.requests) == 1


async def test_without_a_hierarchy_scopes_are_compared_as_they_are(
    start_oauthd: StartOauthd, upstream: FakeUpstream
) -> None:
    oauthd = await start_oauthd(
        oauth={"scopes": SCOPES}, upstream={"required_scopes": ("files:read",)}
    )
    writer = await oauthd.grant(scopes=("files:write",))
    assert (await oauthd.mcp("POST", writer)).status == 403
    assert upstream.requests == []
