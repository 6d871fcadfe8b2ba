"""Several resources at the authorization server (issue #12 item 1): RFC 8707 targets at
/authorize, device authorization and /token; scopes checked against the named resource;
the default resource; metadata per resource."""

from __future__ import annotations

import pytest

from oauthd.model import consent_key
from oauthd.oauth.errors import Delivery, OAuthError
from oauthd.oauth.resources import Targets, canonical_resource
from tests.support.configs import USER
from tests.support.protocol import (
    FILES,
    ISSUER,
    RESOURCE,
    Env,
    EnvFactory,
    Issued,
    credentials,
    query_of,
    refused,
    two_resources,
)


@pytest.fixture
def env2(env_with: EnvFactory) -> Env:
    return env_with(resources=two_resources)


def _redirected(error: OAuthError, env: Env) -> dict[str, str]:
    assert error.delivery is Delivery.REDIRECT and error.redirect is not None
    return query_of(env.server.authorizer.error_redirect(error, error.redirect))


async def _code_flow(env: Env, resource: str | None, scope: str | None) -> Issued:
    """A code flow for `resource` (None: named nowhere)."""
    registration = await env.register()
    started = await env.begin(registration.client, resource=resource, scope=scope)
    query = await env.approved(started)
    form = {
        "grant_type": "authorization_code",
        "code": query["code"],
        "code_verifier": started.verifier,
        "redirect_uri": started.pending.redirect_uri,
    }
    tokens = await env.token(registration, form)
    return Issued(registration, started.verifier, started.pending.redirect_uri, tokens, query)


# -- /authorize ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("named", "bound"),
    [
        (FILES, FILES),
        (FILES + "/", FILES),  # canonical: no trailing slash
        ("HTTPS://MCP.EXAMPLE.COM/files/mcp", FILES),  # case-insensitive scheme and host
        (RESOURCE, RESOURCE),
        (None, RESOURCE),  # none named: the first resource
    ],
)
async def test_authorize_binds_the_named_resource(env2: Env, named: str | None, bound: str) -> None:
    registration = await env2.register()
    scope = "files:read" if bound == FILES else "mcp"
    started = await env2.begin(registration.client, resource=named, scope=scope)
    assert started.pending.resource == bound


@pytest.mark.parametrize(
    "named",
    [f"{ISSUER}/other/mcp", f"{ISSUER}/files", "https://elsewhere.example/mcp", f"{FILES}#x", ""],
)
async def test_authorize_unknown_resource_is_invalid_target(env2: Env, named: str) -> None:
    registration = await env2.register()
    error = await refused(env2.begin(registration.client, resource=named, scope="mcp"))
    query = _redirected(error, env2)
    assert query["error"] == "invalid_target"
    assert RESOURCE in query["error_description"] and FILES in query["error_description"]
    assert await env2.store.pending.count() == 0


async def test_scopes_are_checked_against_the_named_resource(env2: Env) -> None:
    registration = await env2.register()
    # `mcp` is offered by /mcp, not by /files/mcp
    error = await refused(env2.begin(registration.client, resource=FILES, scope="files:read mcp"))
    query = _redirected(error, env2)
    assert query["error"] == "invalid_scope"
    assert "'mcp'" in query["error_description"] and "Files" in query["error_description"]
    error = await refused(env2.begin(registration.client, resource=RESOURCE, scope="files:read"))
    assert _redirected(error, env2)["error"] == "invalid_scope"


async def test_no_scope_gets_the_clients_scopes_that_the_resource_offers(env2: Env) -> None:
    registration = await env2.register()  # registered without scope: every scope offered
    assert registration.client.scope.split() == ["mcp", "files:read", "files:write"]
    files = await env2.begin(registration.client, resource=FILES, scope=None)
    assert files.pending.scopes == ("files:read", "files:write")
    notes = await env2.begin(registration.client, resource=None, scope=None)
    assert notes.pending.scopes == ("mcp",)


async def test_a_client_that_registered_none_of_a_resources_scopes(env2: Env) -> None:
    registration = await env2.register(scope="mcp")
    # Registered for another resource only: no scope asked gets what this one offers
    # (its required_scopes when it has them).
    default = await env2.begin(registration.client, resource=FILES, scope=None)
    assert default.pending.scopes == ("files:read", "files:write")
    # Asked by name, a scope the resource offers is fine: the registration is a default.
    files = await env2.begin(registration.client, resource=FILES, scope="files:read")
    assert files.pending.scopes == ("files:read",)


async def test_the_configured_default_resource(env_with: EnvFactory) -> None:
    env = env_with(resources=two_resources, oauth={"default_resource": "/files/mcp"})
    registration = await env.register()
    started = await env.begin(registration.client, resource=None, scope=None)
    assert started.pending.resource == FILES
    assert started.pending.scopes == ("files:read", "files:write")


# -- /token ----------------------------------------------------------------------------------


async def test_code_exchange_and_refresh_keep_the_resource(env2: Env) -> None:
    issued = await _code_flow(env2, FILES, "files:read")
    grant = await env2.server.verify_bearer(issued.tokens.access_token, FILES)
    assert grant is not None and grant.resource == FILES and grant.scopes == ("files:read",)
    assert await env2.server.verify_bearer(issued.tokens.access_token, RESOURCE) is None
    refreshed = await env2.refresh(issued)  # no resource: the grant's
    assert await env2.server.verify_bearer(refreshed.access_token, FILES) is not None
    again = await env2.refresh(issued, refreshed.refresh_token, resource=FILES + "/")
    assert again.scope == "files:read"


async def test_refresh_naming_another_resource_is_invalid_target(env2: Env) -> None:
    issued = await _code_flow(env2, FILES, "files:read")
    for other in (RESOURCE, f"{ISSUER}/nowhere"):
        error = await refused(env2.refresh(issued, resource=other))
        assert error.error == "invalid_target"
    assert await env2.refresh(issued)  # the grant is still good


async def test_code_exchange_naming_another_resource_is_invalid_target(env2: Env) -> None:
    registration = await env2.register()
    started = await env2.begin(registration.client, resource=FILES, scope="files:read")
    query = await env2.approved(started)
    form = {
        "grant_type": "authorization_code",
        "code": query["code"],
        "code_verifier": started.verifier,
        "redirect_uri": started.pending.redirect_uri,
        "resource": RESOURCE,
    }
    error = await refused(env2.token(registration, form))
    assert error.error == "invalid_target"


# -- device authorization --------------------------------------------------------------------


async def test_device_authorization_takes_a_resource(env2: Env) -> None:
    registration = await env2.register(
        grant_types=["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"]
    )
    creds = credentials(registration)
    await env2.server.device_authorization({"resource": FILES}, creds)
    (flow,) = [f async for f in env2.store.devices.scan()]
    assert flow.resource == FILES and flow.scopes == ("files:read", "files:write")
    error = await refused(
        env2.server.device_authorization({"resource": "https://x.example/"}, creds)
    )
    assert error.error == "invalid_target"
    error = await refused(
        env2.server.device_authorization({"resource": FILES, "scope": "mcp"}, creds)
    )
    assert error.error == "invalid_scope" and "'mcp'" in error.description


# -- consent per resource --------------------------------------------------------------------


async def test_consent_is_remembered_per_resource(env2: Env) -> None:
    registration = await env2.register()
    client = registration.client
    await env2.approved(await env2.begin(client, resource=RESOURCE, scope="mcp"))
    notes = await env2.store.consents.get(consent_key(USER, client.client_id, "/mcp"))
    assert notes is not None and notes.resource == "/mcp" and notes.scopes == ("mcp",)
    assert await env2.store.consents.get(consent_key(USER, client.client_id, "/files/mcp")) is None

    started = await env2.begin(client, resource=FILES, scope="files:read")
    flow, consented = await env2.server.signed_in(
        await env2.server.flow(started.pending.id, started.browser), USER
    )
    assert not consented  # consent to /mcp says nothing about /files/mcp
    await env2.server.finish(flow, allow=True)
    files = await env2.store.consents.get(consent_key(USER, client.client_id, "/files/mcp"))
    assert files is not None and files.scopes == ("files:read",)

    again = await env2.begin(client, resource=FILES, scope="files:read")
    _, consented = await env2.server.signed_in(
        await env2.server.flow(again.pending.id, again.browser), USER
    )
    assert consented


async def test_revoking_a_grant_forgets_only_its_resources_consent(env2: Env) -> None:
    notes = await env2.code_flow(scope="mcp")
    client = notes.registration.client
    started = await env2.begin(client, resource=FILES, scope="files:read")
    await env2.approved(started)
    grant_id = notes.tokens.access_token.split(".")[0]
    assert await env2.server.revoke_grant(grant_id, by="admin") is not None
    assert await env2.store.consents.get(consent_key(USER, client.client_id, "/mcp")) is None
    files = await env2.store.consents.get(consent_key(USER, client.client_id, "/files/mcp"))
    assert files is not None


# -- the targets ------------------------------------------------------------------------------


def test_targets_name_paths_and_labels(env2: Env) -> None:
    targets = Targets(env2.config)
    assert targets.identifier(env2.config.resources[1]) == FILES
    assert targets.path_of(FILES) == "/files/mcp"
    assert targets.path_of(f"{ISSUER}/gone/mcp") == "/gone/mcp"  # no longer configured
    assert targets.name_of(FILES) == "Files" and targets.name_of(f"{ISSUER}/gone") == "/gone"
    assert targets.label_of(FILES) == "/files/mcp" and targets.label_of("x") == "other"
    assert canonical_resource("HTTPS://A.Example/x/") == "https://a.example/x"


def test_targets_find_a_resource_as_stored_and_in_another_spelling(env2: Env) -> None:
    targets = Targets(env2.config)
    files = env2.config.resources[1]
    assert targets.of(FILES) is files  # canonical, as a grant stores it
    assert targets.of(FILES.upper().replace("/FILES/MCP", "/files/mcp") + "/") is files
    assert targets.of(f"{ISSUER}/files/MCP") is None  # the path stays case-sensitive


def test_metadata_per_resource(env2: Env) -> None:
    server = env2.server
    files = server.protected_resource_metadata("/files/mcp")
    assert files == {
        "resource": FILES,
        "authorization_servers": [ISSUER],
        "scopes_supported": ["files:read", "files:write"],
        "bearer_methods_supported": ["header"],
        "resource_name": "Files",
    }
    notes = server.protected_resource_metadata("/mcp")
    assert notes is not None and notes["resource"] == RESOURCE
    assert notes["scopes_supported"] == ["mcp"] and notes["resource_name"] == "Notes"
    assert server.protected_resource_metadata("") == notes  # the default resource's
    assert server.protected_resource_metadata("/nowhere") is None
    assert server.authorization_server_metadata()["scopes_supported"] == [
        "mcp",
        "files:read",
        "files:write",
    ]
