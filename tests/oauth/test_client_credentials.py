"""oauth/client_credentials.py: a confidential client's tokens for itself (SEP-1046):
the registered scope is the limit, the resource is the one asked, the client's, or the
default; the principal is the client ("client:<client_id>", a service); no refresh token."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from oauthd.model import PRINCIPAL_SERVICE
from oauthd.oauth import NewClient
from oauthd.oauth.client_auth import ClientCredentials
from oauthd.oauth.client_credentials import principal_name
from oauthd.oauth.clients import Registration
from tests.support.protocol import FILES, RESOURCE, Env, build_env, refused, two_resources

GRANT = {"grant_type": "client_credentials"}


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return build_env(tmp_path, resources=two_resources)


async def machine(env: Env, **changes: object) -> Registration:
    spec = NewClient("robot", ("client_credentials",), "client_secret_basic", **changes)  # type: ignore[arg-type]
    return await env.server.add_client(spec)


def creds(made: Registration) -> ClientCredentials:
    return ClientCredentials(made.client.client_id, made.secret, "client_secret_basic")


async def test_tokens_for_the_client_itself(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    made = await machine(env, scopes=("mcp",))
    caplog.set_level(logging.INFO, "oauthd.audit")
    issued = await env.server.token(GRANT, creds(made))
    body = issued.body()
    assert "refresh_token" not in body and body["scope"] == "mcp"
    grant = await env.server.verify_bearer(issued.access_token)
    assert grant is not None
    assert grant.user == principal_name(made.client.client_id) == f"client:{made.client.client_id}"
    assert grant.principal == PRINCIPAL_SERVICE and grant.resource == RESOURCE
    assert env.server.groups_of(grant) == frozenset()
    audit = next(r for r in caplog.records if getattr(r, "event", "") == "audit.token_issued")
    assert (audit.grant_type, audit.principal) == ("client_credentials", "service")  # type: ignore[attr-defined]


async def test_the_registered_scope_is_the_limit(env: Env) -> None:
    made = await machine(env, scopes=("files:read",))
    error = await refused(
        env.server.token({**GRANT, "scope": "files:write", "resource": FILES}, creds(made))
    )
    assert error.error == "invalid_scope" and "beyond" in error.description
    error = await refused(
        env.server.token({**GRANT, "scope": "nope", "resource": FILES}, creds(made))
    )
    assert error.error == "invalid_scope"
    # nothing asked: what it registered that the resource offers
    issued = await env.server.token({**GRANT, "resource": FILES}, creds(made))
    assert issued.scope == "files:read"
    # registered for nothing that /mcp offers
    assert (await refused(env.server.token(GRANT, creds(made)))).error == "invalid_scope"


async def test_the_scope_hierarchy_is_honoured(tmp_path: Path) -> None:
    env = build_env(
        tmp_path, resources=two_resources, oauth={"scope_implies": {"files:write": ["files:read"]}}
    )
    made = await machine(env, scopes=("files:write",))
    issued = await env.server.token(
        {**GRANT, "scope": "files:read", "resource": FILES}, creds(made)
    )
    assert issued.scope == "files:read"


async def test_the_resource_asked_the_clients_or_the_default(env: Env) -> None:
    made = await machine(env, resource="/files/mcp", scopes=("files:read", "mcp"))
    issued = await env.server.token(GRANT, creds(made))
    grant = await env.server.verify_bearer(issued.access_token, FILES)
    assert grant is not None and grant.resource == FILES and issued.scope == "files:read"
    issued = await env.server.token({**GRANT, "resource": RESOURCE}, creds(made))
    assert issued.scope == "mcp"
    error = await refused(env.server.token({**GRANT, "resource": "https://else/mcp"}, creds(made)))
    assert error.error == "invalid_target"


async def test_only_clients_registered_for_it(env: Env) -> None:
    public = await env.register()  # authorization_code, a public client
    sent = ClientCredentials(public.client.client_id, None, "none")
    error = await refused(env.server.token(GRANT, sent))
    assert error.error == "unauthorized_client"
