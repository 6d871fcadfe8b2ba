"""oauthd/oauth/jwt_bearer.py and account_links.py, Enterprise-Managed Authorization
(SEP-990): an ID-JAG redeemed by the confidential client it names, for the resource it
names, no consent page, the person linked by (iss, sub); and each refusal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from oauthd import crypto
from oauthd.model import PRINCIPAL_USER, Client, account_link_key
from oauthd.oauth.assertions import JWT_BEARER
from oauthd.oauth.clients import ClientCredentials
from tests.support.assertions import (
    IDP_ISSUER,
    FakeKeySource,
    Signer,
    bearer_env,
    bearer_form,
    id_jag_claims,
    sign_id_jag,
    trusted_issuer,
)
from tests.support.backends import StoreHarness, open_harness
from tests.support.configs import USER
from tests.support.protocol import FILES, ISSUER, RESOURCE, Env, refused, two_resources

SECRET = "enterprise-client-secret"


@pytest.fixture
def idp() -> Signer:
    return Signer("idp-1")


@pytest.fixture
def source(idp: Signer) -> FakeKeySource:
    source = FakeKeySource()
    source.keys[f"{IDP_ISSUER}/jwks"] = [idp]
    return source


def enterprise(**keys: Any) -> Any:
    return trusted_issuer(IDP_ISSUER, "enterprise", **keys)


async def with_client(env: Env, **changes: Any) -> Client:
    client = Client(
        client_id="enterprise-app",
        client_name="Enterprise app",
        redirect_uris=(),
        grant_types=(JWT_BEARER,),
        response_types=(),
        token_endpoint_auth_method="client_secret_post",
        application_type="web",
        scope=changes.pop("scope", ""),
        secret_hash=crypto.hash_secret(SECRET),
        source="dcr",
        created_at=env.clock.now(),
        **changes,
    )
    await env.store.clients.add(client)
    return client


CREDENTIALS = ClientCredentials("enterprise-app", SECRET, "client_secret_post")


@pytest.fixture
async def env(tmp_path: Path, source: FakeKeySource) -> Env:
    env = bearer_env(tmp_path, (enterprise(),), source)
    await with_client(env)
    return env


def id_jag(env: Env, idp: Signer, **changes: Any) -> str:
    claims = id_jag_claims(ISSUER, env.clock.now(), "enterprise-app", RESOURCE)
    claims.update(changes)
    return sign_id_jag(idp, {k: v for k, v in claims.items() if v is not None})


def count(env: Env, reason: str) -> float:
    labels = {"kind": "id_jag", "reason": reason}
    value = env.server.metrics.registry.get_sample_value("oauthd_assertions_refused_total", labels)
    return value or 0.0


async def test_an_id_jag_gets_an_access_token_for_a_linked_user(env: Env, idp: Signer) -> None:
    issued = await env.server.token(bearer_form(id_jag(env, idp), resource=RESOURCE), CREDENTIALS)
    assert issued.refresh_token is None and issued.scope == "mcp"
    grant = await env.server.verify_bearer(issued.access_token, RESOURCE)
    assert grant is not None
    assert (grant.user, grant.principal, grant.client_id) == (
        "00u1a2b3c4@idp.example.com",
        PRINCIPAL_USER,
        "enterprise-app",
    )
    link = await env.store.account_links.get(account_link_key(IDP_ISSUER, "00u1a2b3c4"))
    assert link is not None and (link.user, link.via) == ("00u1a2b3c4@idp.example.com", "subject")


async def test_the_resource_claim_serves_when_the_request_names_none(env: Env, idp: Signer) -> None:
    issued = await env.server.token(bearer_form(id_jag(env, idp)), CREDENTIALS)
    assert await env.server.verify_bearer(issued.access_token, RESOURCE) is not None


async def test_an_id_jag_needs_an_authenticated_client(env: Env, idp: Signer) -> None:
    form = bearer_form(id_jag(env, idp), resource=RESOURCE)
    assert (await refused(env.server.token(form, None))).error == "invalid_client"
    wrong = ClientCredentials("enterprise-app", "wrong", "client_secret_post")
    assert (await refused(env.server.token(form, wrong))).error == "invalid_client"


@pytest.mark.parametrize(
    ("changes", "reason", "error"),
    [
        ({"client_id": "another-app"}, "client_mismatch", "invalid_grant"),
        ({"resource": "https://elsewhere.example/mcp"}, "unknown_resource", "invalid_grant"),
        ({"aud": "https://other-as.example"}, "wrong_audience", "invalid_grant"),
        ({"jti": None}, "missing_claim", "invalid_grant"),
        ({"scope": "admin"}, "scope_not_allowed", "invalid_scope"),
    ],
)
async def test_each_refusal_has_its_reason(
    env: Env, idp: Signer, changes: dict[str, Any], reason: str, error: str
) -> None:
    form = bearer_form(id_jag(env, idp, **changes), resource=RESOURCE)
    assert (await refused(env.server.token(form, CREDENTIALS))).error == error
    assert count(env, reason) == 1


async def test_an_id_jag_without_its_typ_is_the_wrong_type(env: Env, idp: Signer) -> None:
    claims = id_jag_claims(ISSUER, env.clock.now(), "enterprise-app", RESOURCE)
    token = idp.sign(claims, typ="JWT")
    error = await refused(env.server.token(bearer_form(token, resource=RESOURCE), CREDENTIALS))
    assert "oauth-id-jag+jwt" in error.description and count(env, "wrong_type") == 0
    labels = {"kind": "workload", "reason": "wrong_type"}  # it did not say it is one
    assert env.server.metrics.registry.get_sample_value("oauthd_assertions_refused_total", labels)


async def test_the_request_resource_must_be_one_the_id_jag_names(
    tmp_path: Path, source: FakeKeySource, idp: Signer
) -> None:
    env = bearer_env(tmp_path, (enterprise(),), source, resources=two_resources)
    await with_client(env)
    unknown = bearer_form(id_jag(env, idp), resource="https://nowhere.example/mcp")
    assert (await refused(env.server.token(unknown, CREDENTIALS))).error == "invalid_target"
    other = bearer_form(id_jag(env, idp), resource=FILES)
    error = await refused(env.server.token(other, CREDENTIALS))
    assert error.error == "invalid_grant" and count(env, "unknown_resource") == 1
    both = id_jag(env, idp, resource=[RESOURCE, FILES], scope="files:read")
    issued = await env.server.token(bearer_form(both, resource=FILES), CREDENTIALS)
    assert await env.server.verify_bearer(issued.access_token, FILES) is not None
    several = bearer_form(id_jag(env, idp, resource=[RESOURCE, FILES]))
    assert (await refused(env.server.token(several, CREDENTIALS))).error == "invalid_request"


async def test_an_id_jag_is_single_use(env: Env, idp: Signer) -> None:
    form = bearer_form(id_jag(env, idp), resource=RESOURCE)
    await env.server.token(form, CREDENTIALS)
    error = await refused(env.server.token(form, CREDENTIALS))
    assert "used before" in error.description and count(env, "replayed_jti") == 1


async def test_scopes_stay_within_the_id_jag_and_the_client(
    tmp_path: Path, source: FakeKeySource, idp: Signer
) -> None:
    env = bearer_env(tmp_path, (enterprise(),), source)
    await with_client(env, scope="mcp files:read")
    wide = id_jag(env, idp, scope="mcp files:read files:write")
    assert (await env.server.token(bearer_form(wide), CREDENTIALS)).scope == "mcp files:read"
    beyond = bearer_form(id_jag(env, idp, scope="mcp"), scope="mcp files:read")
    assert (await refused(env.server.token(beyond, CREDENTIALS))).error == "invalid_scope"


async def test_email_links_only_where_enabled_and_to_existing_users(
    tmp_path: Path, source: FakeKeySource, idp: Signer
) -> None:
    env = bearer_env(tmp_path, (enterprise(link_by_email=True),), source)
    await with_client(env)
    cases = [
        ("sub-a", USER, True, USER),  # alice is a local user
        ("sub-b", "nobody@example.test", True, "sub-b@idp.example.com"),
        ("sub-c", USER, False, "sub-c@idp.example.com"),  # the IdP says not verified
    ]
    for sub, email, verified, user in cases:
        token = id_jag(env, idp, sub=sub, email=email, email_verified=verified)
        issued = await env.server.token(bearer_form(token), CREDENTIALS)
        grant = await env.server.verify_bearer(issued.access_token, RESOURCE)
        assert grant is not None and grant.user == user, sub
    disabled = bearer_env(tmp_path, (enterprise(),), source)
    await with_client(disabled)
    token = id_jag(disabled, idp, sub="sub-d", email=USER)
    issued = await disabled.server.token(bearer_form(token), CREDENTIALS)
    grant = await disabled.server.verify_bearer(issued.access_token, RESOURCE)
    assert grant is not None and grant.user == "sub-d@idp.example.com"


async def test_no_new_users_and_no_email_match_is_no_account(
    tmp_path: Path, source: FakeKeySource, idp: Signer
) -> None:
    env = bearer_env(tmp_path, (enterprise(link_by_email=True, user_template=""),), source)
    await with_client(env)
    token = id_jag(env, idp, email="stranger@example.test")
    error = await refused(env.server.token(bearer_form(token), CREDENTIALS))
    assert error.error == "invalid_grant" and count(env, "no_account") == 1


async def test_a_template_never_takes_over_a_local_user(
    tmp_path: Path, source: FakeKeySource, idp: Signer
) -> None:
    env = bearer_env(tmp_path, (enterprise(user_template="{sub}"),), source)
    await with_client(env)
    error = await refused(env.server.token(bearer_form(id_jag(env, idp, sub=USER)), CREDENTIALS))
    assert count(env, "no_account") == 1 and "existing local user" in error.description


async def test_a_link_is_kept_when_the_email_changes(env: Env, idp: Signer) -> None:
    for email in ("first@example.test", "second@example.test"):
        issued = await env.server.token(bearer_form(id_jag(env, idp, email=email)), CREDENTIALS)
        grant = await env.server.verify_bearer(issued.access_token, RESOURCE)
        assert grant is not None and grant.user == "00u1a2b3c4@idp.example.com"


# -- replay across restarts and instances ---------------------------------------------------


@pytest.fixture(params=["file", "redis", "postgres"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreHarness]:
    async for opened in open_harness(request.param, tmp_path):
        yield opened


async def test_a_replay_is_refused_after_a_restart_and_on_another_instance(
    harness: StoreHarness, tmp_path: Path, source: FakeKeySource, idp: Signer
) -> None:
    first = bearer_env(tmp_path, (enterprise(),), source, store=harness.store, clock=harness.clock)
    await with_client(first)
    token = id_jag(first, idp)
    await first.server.token(bearer_form(token), CREDENTIALS)
    if harness.name == "file":
        store = await harness.reopen()  # the daemon restarted
    else:  # a second instance on the same shared backend
        store = await harness.backend.open(harness.state, harness.clock)
    try:
        other = bearer_env(tmp_path, (enterprise(),), source, store=store, clock=harness.clock)
        error = await refused(other.server.token(bearer_form(token), CREDENTIALS))
        assert "used before" in error.description
    finally:
        if store is not harness.store:
            await store.close()
