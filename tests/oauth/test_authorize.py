"""`/authorize` and the browser's steps: validation, browser binding, approve, deny, consent."""

from __future__ import annotations

import asyncio

import pytest

from oauthd import crypto
from oauthd.model import Consent, consent_key
from oauthd.oauth.authorize import widen_consent
from oauthd.oauth.errors import Delivery, OAuthError
from tests.support.configs import OTHER_USER, USER
from tests.support.protocol import (
    ISSUER,
    LOOPBACK_REDIRECT,
    RESOURCE,
    SCOPES,
    WEB_REDIRECT,
    Env,
    EnvFactory,
    query_of,
    refused,
)


def _redirected(error: OAuthError, env: Env) -> dict[str, str]:
    """What the browser would be sent to for a REDIRECT error."""
    assert error.delivery is Delivery.REDIRECT and error.redirect is not None
    return query_of(env.server.authorizer.error_redirect(error, error.redirect))


async def test_begin_records_the_request(env: Env) -> None:
    registration = await env.register()
    started = await env.begin(registration.client, scope="mcp", state="xyz")
    pending = await env.store.pending.get(started.pending.id)
    assert pending is not None
    assert pending.client_id == registration.client.client_id
    assert pending.redirect_uri == LOOPBACK_REDIRECT
    assert pending.scopes == ("mcp",)
    assert pending.resource == RESOURCE
    assert pending.state == "xyz"
    assert pending.code_challenge == crypto.pkce_challenge(started.verifier)
    assert pending.user is None
    assert pending.browser_hash == crypto.hash_secret(started.browser)
    assert pending.expires_at == env.clock.now() + env.config.tokens.pending_ttl


# -- errors shown as a page: the client or its redirect URI cannot be trusted ---------------


@pytest.mark.parametrize("client_id", ["", "no-such-client", "https://unknown.example/doc.json"])
async def test_unknown_client_is_a_page(env: Env, client_id: str) -> None:
    registration = await env.register()
    error = await refused(env.begin(registration.client, client_id=client_id))
    assert (error.error, error.delivery) == ("invalid_client", Delivery.PAGE)
    assert error.redirect is None
    assert await env.store.pending.count() == 0


@pytest.mark.parametrize(
    "requested",
    [
        "https://evil.example/oauth/callback",
        "https://app.example.com/oauth/other",
        "https://app.example.com/oauth/callback?x=1",
        "https://app.example.com/oauth/callback/",
        "https://app.example.com/oauth/callback#f",
        "https://user@app.example.com/oauth/callback",
        "http://app.example.com/oauth/callback",
        "https://app.example.com:8443/oauth/callback",
        "https://APP.example.com/oauth/CALLBACK",
    ],
)
async def test_redirect_mismatch_is_a_page(env: Env, requested: str) -> None:
    registration = await env.register_confidential()
    error = await refused(env.begin(registration.client, redirect_uri=requested))
    assert (error.error, error.delivery) == ("invalid_request", Delivery.PAGE)
    assert error.redirect is None


async def test_redirect_uri_may_be_omitted_with_one_registered(env: Env) -> None:
    registration = await env.register_confidential()
    started = await env.begin(registration.client, redirect_uri=None)
    assert started.pending.redirect_uri == WEB_REDIRECT


async def test_redirect_uri_required_for_loopback_or_several(env: Env) -> None:
    loopback = await env.register()
    error = await refused(env.begin(loopback.client, redirect_uri=None))
    assert error.delivery is Delivery.PAGE
    several = await env.register(redirect_uris=[WEB_REDIRECT, "https://app.example.com/b"])
    error = await refused(env.begin(several.client, redirect_uri=None))
    assert error.delivery is Delivery.PAGE


@pytest.mark.parametrize(
    "requested",
    ["HTTPS://App.Example.COM/oauth/callback", "https://APP.example.com/oauth/callback"],
)
async def test_redirect_uri_is_compared_as_an_exact_string(env: Env, requested: str) -> None:
    """OAuth 2.1 s2.3.1: simple string comparison, so a case change in scheme or host is
    another URI (a page, never a redirect to it)."""
    registration = await env.register_confidential()
    error = await refused(env.begin(registration.client, redirect_uri=requested))
    assert (error.error, error.delivery) == ("invalid_request", Delivery.PAGE)
    assert error.redirect is None


@pytest.mark.parametrize(
    ("registered", "requested"),
    [
        (LOOPBACK_REDIRECT, "http://127.0.0.1:53682/callback"),
        ("http://127.0.0.1:3000/callback", "http://127.0.0.1:53682/callback"),
        ("http://localhost/callback", "http://localhost:8976/callback"),
        ("http://[::1]/callback", "http://[::1]:1234/callback"),
    ],
)
async def test_loopback_port_may_vary(env: Env, registered: str, requested: str) -> None:
    registration = await env.register(redirect_uris=[registered])
    started = await env.begin(registration.client, redirect_uri=requested)
    query = await env.approved(started)
    assert "code" in query
    assert started.pending.redirect_uri == requested


@pytest.mark.parametrize(
    "requested",
    [
        "http://localhost:53682/callback",
        "http://127.0.0.1:53682/other",
        "https://127.0.0.1:53682/callback",
        "http://127.0.0.2:53682/callback",
    ],
)
async def test_loopback_host_and_path_stay_exact(env: Env, requested: str) -> None:
    registration = await env.register()
    error = await refused(env.begin(registration.client, redirect_uri=requested))
    assert error.delivery is Delivery.PAGE


async def test_https_port_must_match(env: Env) -> None:
    registration = await env.register(redirect_uris=["https://127.0.0.1:8443/cb"])
    error = await refused(env.begin(registration.client, redirect_uri="https://127.0.0.1:9443/cb"))
    assert error.delivery is Delivery.PAGE


async def test_overlong_state_is_a_page(env: Env) -> None:
    registration = await env.register()
    error = await refused(env.begin(registration.client, state="s" * 2001))
    assert error.delivery is Delivery.PAGE


# -- errors redirected with state and iss ------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"response_type": None}, "unsupported_response_type"),
        ({"code_challenge": None}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": "s256"}, "invalid_request"),
        ({"code_challenge": "too-short"}, "invalid_request"),
        ({"code_challenge": "a" * 44}, "invalid_request"),
        ({"code_challenge": "+" * 43}, "invalid_request"),
        ({"scope": "mcp admin"}, "invalid_scope"),
        ({"resource": "https://other.example.com/mcp"}, "invalid_target"),
        ({"resource": f"{ISSUER}/other"}, "invalid_target"),
        ({"resource": ISSUER}, "invalid_target"),
        ({"resource": f"{ISSUER}/mcp#frag"}, "invalid_target"),
    ],
)
async def test_errors_after_the_redirect_is_known_are_redirected(
    env: Env, extra: dict[str, str | None], code: str
) -> None:
    registration = await env.register()
    error = await refused(env.begin(registration.client, state="st/ate &1", **extra))
    assert error.error == code
    assert error.redirect is not None
    assert error.redirect.redirect_uri == LOOPBACK_REDIRECT
    query = _redirected(error, env)
    assert query["error"] == code
    assert query["state"] == "st/ate &1"
    assert query["iss"] == ISSUER
    assert await env.store.pending.count() == 0


async def test_redirected_error_without_state_has_none(env: Env) -> None:
    registration = await env.register()
    error = await refused(env.begin(registration.client, state=None, code_challenge_method="plain"))
    query = _redirected(error, env)
    assert "state" not in query
    assert query["iss"] == ISSUER


async def test_client_without_the_code_grant(env: Env) -> None:
    registration = await env.register(
        grant_types=["urn:ietf:params:oauth:grant-type:device_code"],
        redirect_uris=[LOOPBACK_REDIRECT],
    )
    error = await refused(env.begin(registration.client))
    assert error.error == "unauthorized_client"
    assert error.delivery is Delivery.REDIRECT


# -- resource (RFC 8707) and scopes --------------------------------------------------------


@pytest.mark.parametrize(
    "resource",
    [None, RESOURCE, f"{RESOURCE}/", "HTTPS://MCP.EXAMPLE.COM/mcp", "https://Mcp.Example.com/mcp/"],
)
async def test_our_resource_in_any_spelling(env: Env, resource: str | None) -> None:
    registration = await env.register()
    started = await env.begin(registration.client, resource=resource)
    assert started.pending.resource == RESOURCE


async def test_scopes(env: Env) -> None:
    registration = await env.register(scope="mcp files:read")
    default = await env.begin(registration.client, scope=None)
    assert default.pending.scopes == ("mcp", "files:read")
    blank = await env.begin(registration.client, scope="  ")
    assert blank.pending.scopes == ("mcp", "files:read")
    narrow = await env.begin(registration.client, scope="files:read files:read")
    assert narrow.pending.scopes == ("files:read",)
    # Beyond the registration: a registered scope is a default, not a limit (a step-up).
    wider = await env.begin(registration.client, scope="files:write")
    assert wider.pending.scopes == ("files:write",)
    error = await refused(env.begin(registration.client, scope="files:admin"))
    assert error.error == "invalid_scope"  # not offered here at all


# -- browser binding -------------------------------------------------------------------------


async def test_flow_belongs_to_the_browser_that_started_it(env: Env) -> None:
    registration = await env.register()
    started = await env.begin(registration.client)
    flow = await env.server.authorizer.flow(started.pending.id, started.browser)
    assert flow.pending.id == started.pending.id
    assert flow.client.client_id == registration.client.client_id
    for other in (crypto.new_secret(), None, ""):
        error = await refused(env.server.authorizer.flow(started.pending.id, other))
        assert (error.status, error.delivery) == (403, Delivery.PAGE)


async def test_unknown_or_expired_flow(env: Env) -> None:
    registration = await env.register()
    started = await env.begin(registration.client)
    error = await refused(env.server.authorizer.flow("nope", started.browser))
    assert error.delivery is Delivery.PAGE
    env.clock.advance(env.config.tokens.pending_ttl)
    error = await refused(env.server.authorizer.flow(started.pending.id, started.browser))
    assert error.delivery is Delivery.PAGE


# -- approve and deny ----------------------------------------------------------------------------


async def test_approve_redirects_with_code_state_and_iss(env: Env) -> None:
    registration = await env.register()
    started = await env.begin(registration.client, state="a b&c=d/é?")
    flow = await env.signed_in(started)
    assert flow.pending.user == USER
    location = await env.server.finish(flow, allow=True)
    assert location is not None
    assert location.startswith(LOOPBACK_REDIRECT + "?")
    query = query_of(location)
    assert set(query) == {"code", "state", "iss"}
    assert (query["state"], query["iss"]) == ("a b&c=d/é?", ISSUER)
    code_key, _ = query["code"].split(".")
    code = await env.store.codes.get(code_key)
    assert code is not None
    assert code.secret_hash == crypto.hash_secret(query["code"].split(".")[1])
    assert (code.user, code.client_id, code.redirect_uri) == (
        USER,
        registration.client.client_id,
        LOOPBACK_REDIRECT,
    )
    assert code.code_challenge == crypto.pkce_challenge(started.verifier)
    assert code.expires_at == env.clock.now() + env.config.tokens.code_ttl
    assert await env.store.pending.get(started.pending.id) is None  # used up


async def test_approve_keeps_the_redirect_query(env: Env) -> None:
    uri = "https://app.example.com/cb?tenant=7"
    registration = await env.register(redirect_uris=[uri])
    started = await env.begin(registration.client, state="s")
    query = await env.approved(started)
    assert query["tenant"] == "7"
    assert "code" in query


async def test_approve_needs_a_login_and_works_once(env: Env) -> None:
    registration = await env.register()
    started = await env.begin(registration.client)
    flow = await env.server.authorizer.flow(started.pending.id, started.browser)
    error = await refused(env.server.authorizer.approve(flow))
    assert error.delivery is Delivery.PAGE
    assert await env.store.codes.count() == 0
    started = await env.begin(registration.client)
    flow = await env.signed_in(started)
    await env.server.authorizer.approve(flow)
    error = await refused(env.server.authorizer.approve(flow))
    assert error.delivery is Delivery.PAGE
    assert await env.store.codes.count() == 1


async def test_deny_redirects_access_denied(env: Env) -> None:
    registration = await env.register()
    started = await env.begin(registration.client, state="abc")
    location = await env.server.finish(await env.signed_in(started), allow=False)
    assert location is not None
    query = query_of(location)
    assert query["error"] == "access_denied"
    assert (query["state"], query["iss"]) == ("abc", ISSUER)
    assert "code" not in query
    assert await env.store.codes.count() == 0
    assert await env.store.pending.get(started.pending.id) is None
    assert (
        await env.store.consents.get(consent_key(USER, registration.client.client_id, "/mcp"))
        is None
    )


# -- consent -----------------------------------------------------------------------------------


async def test_consent_is_remembered_per_user_and_client(env: Env) -> None:
    registration = await env.register()
    client = registration.client
    first = await env.signed_in(await env.begin(client, scope="mcp files:read"))
    assert not await env.server.authorizer.has_consent(first)
    await env.server.finish(first, allow=True)
    consent = await env.store.consents.get(consent_key(USER, client.client_id, "/mcp"))
    assert consent is not None
    assert consent.scopes == ("mcp", "files:read")
    assert consent.expires_at == env.clock.now() + env.config.tokens.consent_ttl

    same = await env.signed_in(await env.begin(client, scope="mcp files:read"))
    assert await env.server.authorizer.has_consent(same)
    narrower = await env.signed_in(await env.begin(client, scope="files:read"))
    assert await env.server.authorizer.has_consent(narrower)
    wider = await env.signed_in(await env.begin(client, scope="mcp files:write"))
    assert not await env.server.authorizer.has_consent(wider)
    other_user = await env.signed_in(await env.begin(client, scope="mcp"), OTHER_USER)
    assert not await env.server.authorizer.has_consent(other_user)
    other_client = (await env.register()).client
    other = await env.signed_in(await env.begin(other_client, scope="mcp"))
    assert not await env.server.authorizer.has_consent(other)


async def test_consent_grows_with_wider_approvals(env: Env) -> None:
    client = (await env.register()).client
    await env.approved(await env.begin(client, scope="mcp"))
    await env.approved(await env.begin(client, scope="files:write"))
    consent = await env.store.consents.get(consent_key(USER, client.client_id, "/mcp"))
    assert consent is not None
    assert consent.scopes == ("mcp", "files:write")
    both = await env.signed_in(await env.begin(client, scope="files:write mcp"))
    assert await env.server.authorizer.has_consent(both)


async def test_consent_to_a_scope_covers_what_it_implies(env_with: EnvFactory) -> None:
    env = env_with(oauth={"scope_implies": (("files:write", ("files:read",)),)})
    client = (await env.register()).client
    await env.approved(await env.begin(client, scope="files:write"))
    implied = await env.signed_in(await env.begin(client, scope="files:read"))
    assert await env.server.authorizer.has_consent(implied)
    not_implied = await env.signed_in(await env.begin(client, scope="mcp files:read"))
    assert not await env.server.authorizer.has_consent(not_implied)


async def test_no_consent_before_login_or_after_expiry(env: Env) -> None:
    client = (await env.register()).client
    await env.approved(await env.begin(client))
    started = await env.begin(client)
    flow = await env.server.authorizer.flow(started.pending.id, started.browser)
    assert not await env.server.authorizer.has_consent(flow)  # nobody logged in yet
    env.clock.advance(env.config.tokens.consent_ttl)
    flow = await env.signed_in(await env.begin(client, scope=" ".join(SCOPES)))
    assert not await env.server.authorizer.has_consent(flow)


async def test_concurrent_consents_both_count(env: Env) -> None:
    """A consent and an upgrade (or two consents) at once: the remembered consent gains
    both sets, whichever comes first (no read-then-write losing one)."""
    asked = [
        Consent(USER, "app", scopes, 0.0, None, resource="/mcp")
        for scopes in (("mcp",), ("files:read",), ("files:write", "mcp"))
    ]
    now = env.clock.now()
    await asyncio.gather(*(widen_consent(env.store, a, now, 60.0) for a in asked))
    consent = await env.store.consents.get(consent_key(USER, "app", "/mcp"))
    assert consent is not None and set(consent.scopes) == {"mcp", "files:read", "files:write"}
    assert consent.expires_at == now + 60.0
