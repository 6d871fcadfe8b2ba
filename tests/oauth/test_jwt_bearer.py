"""oauthd/oauth/jwt_bearer.py, workload identity (SEP-1933, RFC 7523 s2.1): Kubernetes,
SPIFFE and cloud identity tokens for service principals, and every refusal with its own
reason in the log line and the metric."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from oauthd import crypto
from oauthd.model import PRINCIPAL_SERVICE
from oauthd.oauth.assertions import JWT_BEARER
from oauthd.oauth.clients import ClientCredentials
from tests.support.assertions import (
    GOOGLE_ISSUER,
    K8S_ISSUER,
    SPIFFE_ISSUER,
    FakeKeySource,
    Signer,
    bearer_env,
    bearer_form,
    google_claims,
    kubernetes_claims,
    spiffe_claims,
    trusted_issuer,
)
from tests.support.protocol import ISSUER, RESOURCE, Env, refused
from tests.support.records import make_client


@pytest.fixture
def k8s() -> Signer:
    return Signer("k8s-1")


@pytest.fixture
def source(k8s: Signer) -> FakeKeySource:
    source = FakeKeySource()
    source.keys[f"{K8S_ISSUER}/jwks"] = [k8s]
    return source


def k8s_issuer(**keys: Any) -> Any:
    keys.setdefault("subjects", {"system:serviceaccount:ci:*": "ci-runner"})
    return trusted_issuer(K8S_ISSUER, **keys)


@pytest.fixture
def env(tmp_path: Path, source: FakeKeySource) -> Env:
    return bearer_env(tmp_path, (k8s_issuer(),), source)


def k8s_token(env: Env, signer: Signer, **changes: Any) -> str:
    claims = kubernetes_claims(ISSUER, env.clock.now(), "ci", "builder")
    claims.update(changes)
    return signer.sign({k: v for k, v in claims.items() if v is not None})


def refusals(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [
        (r.__dict__["kind"], r.__dict__["reason"])
        for r in caplog.records
        if r.__dict__.get("event") == "token.assertion_refused"
    ]


def refused_count(env: Env, kind: str, reason: str) -> float:
    value = env.server.metrics.registry.get_sample_value(
        "oauthd_assertions_refused_total", {"kind": kind, "reason": reason}
    )
    return value or 0.0


async def test_a_kubernetes_token_gets_an_access_token_for_its_principal(
    env: Env, k8s: Signer
) -> None:
    issued = await env.server.token(bearer_form(k8s_token(env, k8s), resource=RESOURCE), None)
    assert issued.refresh_token is None and issued.scope == "mcp"
    grant = await env.server.verify_bearer(issued.access_token, RESOURCE)
    assert grant is not None
    assert (grant.user, grant.principal, grant.client_id) == (
        "ci-runner",
        PRINCIPAL_SERVICE,
        K8S_ISSUER,
    )


async def test_a_workload_token_may_be_used_again_while_it_lives(env: Env, k8s: Signer) -> None:
    token = k8s_token(env, k8s, jti="same-jti")
    first = await env.server.token(bearer_form(token, resource=RESOURCE), None)
    second = await env.server.token(bearer_form(token, resource=RESOURCE), None)
    assert first.access_token != second.access_token


async def test_spiffe_and_cloud_tokens_map_their_subjects(tmp_path: Path) -> None:
    spire, google = Signer("spire", ec=True), Signer("g1")
    source = FakeKeySource()
    source.keys[f"{SPIFFE_ISSUER}/jwks"] = [spire]
    source.keys[f"{GOOGLE_ISSUER}/jwks"] = [google]
    issuers = (
        trusted_issuer(SPIFFE_ISSUER, subjects={"spiffe://example.org/ns/prod/sa/*": "prod-agent"}),
        trusted_issuer(GOOGLE_ISSUER, subjects={"113045127789012345678": "reporting"}),
    )
    env = bearer_env(tmp_path, issuers, source)
    now = env.clock.now()
    svid = spire.sign(spiffe_claims(ISSUER, now, "/ns/prod/sa/agent"), typ="JWT")
    cloud = google.sign(google_claims(ISSUER, now, "reporting@proj.iam.gserviceaccount.com"))
    for token, principal in ((svid, "prod-agent"), (cloud, "reporting")):
        issued = await env.server.token(bearer_form(token, resource=RESOURCE), None)
        grant = await env.server.verify_bearer(issued.access_token, RESOURCE)
        assert grant is not None and grant.user == principal


async def test_a_client_that_authenticates_is_checked_and_named(env: Env, k8s: Signer) -> None:
    client = make_client(
        grant_types=(JWT_BEARER,), secret_hash=crypto.hash_secret("s3cret"), scope="mcp"
    )
    await env.store.clients.add(client)
    form = bearer_form(k8s_token(env, k8s), resource=RESOURCE)
    good = ClientCredentials(client.client_id, "s3cret", "client_secret_basic")
    issued = await env.server.token(form, good)
    grant = await env.server.verify_bearer(issued.access_token, RESOURCE)
    assert grant is not None and grant.client_id == client.client_id
    bad = ClientCredentials(client.client_id, "wrong", "client_secret_basic")
    assert (await refused(env.server.token(form, bad))).error == "invalid_client"


async def test_the_resource_is_required_and_must_be_ours(env: Env, k8s: Signer) -> None:
    token = k8s_token(env, k8s)
    missing = await refused(env.server.token(bearer_form(token), None))
    assert (missing.error, missing.description) == (
        "invalid_request",
        "resource is required (RFC 8707): the resource to access",
    )
    unknown = await refused(
        env.server.token(bearer_form(token, resource="https://other.example/mcp"), None)
    )
    assert unknown.error == "invalid_target"


@pytest.mark.parametrize(
    ("changes", "reason", "description"),
    [
        ({"iss": "https://evil.example"}, "unknown_issuer", "issuer is not trusted"),
        ({"aud": ["https://elsewhere.example"]}, "wrong_audience", "aud must be"),
        ({"exp": -120}, "expired", "has expired"),
        ({"nbf": 600, "iat": None}, "not_yet_valid", "not valid yet"),
        ({"exp": 7200, "iat": None}, "lifetime_too_long", "lives too long"),
        ({"sub": "system:serviceaccount:prod:db"}, "subject_not_allowed", "not mapped"),
        ({"sub": None}, "missing_claim", "no sub claim"),
    ],
)
async def test_each_refusal_has_its_reason(
    env: Env,
    k8s: Signer,
    caplog: pytest.LogCaptureFixture,
    changes: dict[str, Any],
    reason: str,
    description: str,
) -> None:
    now = env.clock.now()
    times = {k: (now + v if k in ("exp", "nbf") else v) for k, v in changes.items()}
    token = k8s_token(env, k8s, **times)
    with caplog.at_level(logging.INFO, "oauthd.token"):
        error = await refused(env.server.token(bearer_form(token, resource=RESOURCE), None))
    assert error.error == "invalid_grant" and description in error.description
    assert refusals(caplog) == [("workload", reason)]
    assert refused_count(env, "workload", reason) == 1
    assert token not in caplog.text


async def test_a_bad_signature_is_refused(env: Env) -> None:
    impostor = Signer("k8s-1")  # the same kid, another key
    token = k8s_token(env, impostor)
    error = await refused(env.server.token(bearer_form(token, resource=RESOURCE), None))
    assert "signature is not valid" in error.description
    assert refused_count(env, "workload", "bad_signature") == 1


async def test_an_unknown_kid_asks_the_source_for_it(
    env: Env, source: FakeKeySource, k8s: Signer
) -> None:
    rotated = Signer("k8s-2")
    token = k8s_token(env, rotated)
    error = await refused(env.server.token(bearer_form(token, resource=RESOURCE), None))
    assert "not known (kid)" in error.description
    assert source.fetches[-1] == (f"{K8S_ISSUER}/jwks", "k8s-2")
    source.keys[f"{K8S_ISSUER}/jwks"] = [k8s, rotated]  # the issuer rotated
    assert (await env.server.token(bearer_form(token, resource=RESOURCE), None)).access_token


async def test_keys_that_cannot_be_had_are_refused(
    env: Env, source: FakeKeySource, k8s: Signer
) -> None:
    source.down = True
    error = await refused(
        env.server.token(bearer_form(k8s_token(env, k8s), resource=RESOURCE), None)
    )
    assert error.error == "invalid_grant" and "keys are not available" in error.description
    assert refused_count(env, "workload", "keys_unavailable") == 1


async def test_an_id_jag_from_a_workload_issuer_is_the_wrong_type(env: Env, k8s: Signer) -> None:
    claims = kubernetes_claims(ISSUER, env.clock.now(), "ci", "builder")
    token = k8s.sign(claims, typ="oauth-id-jag+jwt")
    error = await refused(env.server.token(bearer_form(token, resource=RESOURCE), None))
    assert error.error == "invalid_grant" and refused_count(env, "id_jag", "wrong_type") == 1


async def test_scopes_beyond_the_issuers_are_invalid_scope(
    tmp_path: Path, source: FakeKeySource, k8s: Signer
) -> None:
    env = bearer_env(tmp_path, (k8s_issuer(scopes=("files:read",)),), source)
    token = k8s_token(env, k8s)
    form = bearer_form(token, resource=RESOURCE, scope="files:read files:write")
    error = await refused(env.server.token(form, None))
    assert error.error == "invalid_scope" and "'files:write'" in error.description
    assert refused_count(env, "workload", "scope_not_allowed") == 1
    issued = await env.server.token(bearer_form(token, resource=RESOURCE), None)
    assert issued.scope == "files:read"


async def test_an_issuer_limited_to_other_resources_is_refused(
    tmp_path: Path, source: FakeKeySource, k8s: Signer
) -> None:
    env = bearer_env(tmp_path, (k8s_issuer(resources=("/files/mcp",)),), source)
    error = await refused(
        env.server.token(bearer_form(k8s_token(env, k8s), resource=RESOURCE), None)
    )
    assert error.error == "invalid_target"
    assert refused_count(env, "workload", "unknown_resource") == 1


async def test_a_required_jti_is_single_use(
    tmp_path: Path, source: FakeKeySource, k8s: Signer
) -> None:
    env = bearer_env(tmp_path, (k8s_issuer(require_jti=True),), source)
    without = await refused(
        env.server.token(bearer_form(k8s_token(env, k8s), resource=RESOURCE), None)
    )
    assert "no jti claim" in without.description
    token = k8s_token(env, k8s, jti="once")
    await env.server.token(bearer_form(token, resource=RESOURCE), None)
    again = await refused(env.server.token(bearer_form(token, resource=RESOURCE), None))
    assert again.error == "invalid_grant" and "used before" in again.description
    assert refused_count(env, "workload", "replayed_jti") == 1


async def test_the_grant_type_is_offered_only_with_trusted_issuers(env: Env) -> None:
    assert JWT_BEARER in env.server.authorization_server_metadata()["grant_types_supported"]
