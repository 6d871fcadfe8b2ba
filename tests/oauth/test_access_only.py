"""oauth/access_only.py: a grant with an access token and no refresh token."""

from __future__ import annotations

from oauthd.model import PRINCIPAL_SERVICE, PRINCIPAL_USER
from oauthd.oauth.access_only import AccessOnlyGrants
from tests.support.protocol import RESOURCE, Env


async def test_an_access_token_alone_for_a_service(env: Env) -> None:
    grants = AccessOnlyGrants(env.config, env.store, env.clock, env.server.tokens)
    issued = await grants.issue(
        "client:c1", "c1", ("mcp",), RESOURCE, grant_type="client_credentials"
    )
    body = issued.body()
    assert "refresh_token" not in body and body["expires_in"] == int(env.config.tokens.access_ttl)
    grant = await env.server.verify_bearer(issued.access_token)
    assert grant is not None
    assert (grant.user, grant.client_id, grant.principal) == ("client:c1", "c1", PRINCIPAL_SERVICE)
    assert grant.expires_at == grant.access_expires_at  # goes with its access token
    env.clock.advance(env.config.tokens.access_ttl + 1)
    assert await env.server.verify_bearer(issued.access_token) is None


async def test_a_person_through_an_assertion(env: Env) -> None:
    grants = AccessOnlyGrants(env.config, env.store, env.clock, env.server.tokens)
    issued = await grants.issue(
        "alice",
        "c1",
        ("mcp",),
        RESOURCE,
        grant_type="urn:ietf:params:oauth:grant-type:jwt-bearer",
        principal=PRINCIPAL_USER,
        groups=("ops",),
    )
    grant = await env.server.verify_bearer(issued.access_token)
    assert grant is not None and grant.principal == PRINCIPAL_USER and grant.groups == ("ops",)
