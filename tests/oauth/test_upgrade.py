"""In-place upgrade of a grant (`oauthd.oauth.upgrade`): owner only, offered scopes only,
the hierarchy, narrowed tokens, the same access token passing a check for the added
scopes, the remembered consent, the audit line, and durability on the file backend."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from oauthd.config import ResourceConfig
from oauthd.keyring import read_keyring
from oauthd.model import consent_key
from oauthd.oauth import upgrade_url
from oauthd.oauth.server import AuthServer
from oauthd.oauth.upgrade import NO_SUCH_GRANT
from oauthd.users import Users
from tests.support.backends import StoreHarness, open_harness
from tests.support.configs import OTHER_USER, USER
from tests.support.protocol import (
    ISSUER,
    RESOURCE,
    Env,
    EnvFactory,
    Issued,
    build_env,
    protocol_config,
    refused,
)

HIERARCHY = {"scope_implies": (("files:write", ("files:read",)),)}


def grant_id(issued: Issued) -> str:
    return issued.tokens.access_token.split(".")[0]


async def token_scopes(env: Env, token: str) -> list[str]:
    grant = await env.server.verify_bearer(token, RESOURCE)
    assert grant is not None
    return list(grant.token_scopes)


def test_the_url_names_the_grant_and_the_missing_scopes() -> None:
    url = upgrade_url(ISSUER, "abc", ["files:write", "files:read"])
    assert url == f"{ISSUER}/upgrade?grant=abc&scope=files%3Awrite%20files%3Aread"


async def test_the_owner_adds_scopes_and_the_same_token_carries_them(env: Env) -> None:
    issued = await env.code_flow(scope="mcp")
    token = issued.tokens.access_token
    assert await token_scopes(env, token) == ["mcp"]
    offer = await env.server.upgrade_offer(USER, grant_id(issued), ("files:write",))
    assert (offer.client_name, offer.resource.path, offer.added) == (
        "Test client",
        "/mcp",
        ("files:write",),
    )
    await env.server.upgrade_grant(USER, grant_id(issued), ("files:write",))
    assert await token_scopes(env, token) == ["mcp", "files:write"]
    introspected = await env.server.tokens.introspect(token, ISSUER)
    assert introspected["scope"] == "mcp files:write"
    # the refresh family keeps them
    refreshed = await env.refresh(issued)
    assert refreshed.scope == "mcp files:write"


async def test_only_the_owner_may_upgrade_and_every_refusal_reads_the_same(env: Env) -> None:
    issued = await env.code_flow(scope="mcp")
    other = await refused(env.server.upgrade_grant(OTHER_USER, grant_id(issued), ("files:read",)))
    unknown = await refused(env.server.upgrade_grant(USER, "no-such-grant", ("files:read",)))
    await env.server.revoke_grant(grant_id(issued), by="admin")
    ended = await refused(env.server.upgrade_grant(USER, grant_id(issued), ("files:read",)))
    assert {(e.status, e.description) for e in (other, unknown, ended)} == {(404, NO_SUCH_GRANT)}


async def test_unchanged_after_a_refused_upgrade(env: Env) -> None:
    issued = await env.code_flow(scope="mcp")
    await refused(env.server.upgrade_grant(OTHER_USER, grant_id(issued), ("files:read",)))
    assert await token_scopes(env, issued.tokens.access_token) == ["mcp"]


async def test_only_scopes_the_resource_offers(env: Env) -> None:
    issued = await env.code_flow(scope="mcp")
    error = await refused(env.server.upgrade_offer(USER, grant_id(issued), ("admin",)))
    assert error.error == "invalid_scope" and "'admin'" in error.description
    empty = await refused(env.server.upgrade_grant(USER, grant_id(issued), ()))
    assert empty.error == "invalid_scope" and "no scope" in empty.description


async def test_a_scope_beyond_the_registration_is_offered(env: Env) -> None:
    """A registered scope is a default, not a limit (clients register with what they knew
    then, and step up later)."""
    registration = await env.register(scope="mcp")
    issued = await env.code_flow(registration)
    offer = await env.server.upgrade_offer(USER, grant_id(issued), ("files:read",))
    assert offer.added == ("files:read",)


async def test_held_scopes_are_not_added_hierarchy_honoured(env_with: EnvFactory) -> None:
    env = env_with(oauth=HIERARCHY)
    issued = await env.code_flow(scope="mcp files:write")
    offer = await env.server.upgrade_offer(USER, grant_id(issued), ("files:read", "mcp"))
    assert offer.added == ()
    before = await env.store.grants.get(grant_id(issued))
    await env.server.upgrade_grant(USER, grant_id(issued), ("files:read",))
    assert await env.store.grants.get(grant_id(issued)) is before  # nothing written


async def test_an_implied_scope_is_added_once(env_with: EnvFactory) -> None:
    env = env_with(oauth=HIERARCHY)
    issued = await env.code_flow(scope="mcp")
    offer = await env.server.upgrade_grant(
        USER, grant_id(issued), ("files:write", "files:read", "files:write")
    )
    assert offer.added == ("files:write",)  # files:read comes with files:write
    assert await token_scopes(env, issued.tokens.access_token) == ["mcp", "files:write"]


async def test_a_narrowed_token_stays_narrowed_plus_the_added(env: Env) -> None:
    issued = await env.code_flow(scope="mcp files:read")
    narrowed = await env.refresh(issued, scope="mcp")
    assert await token_scopes(env, narrowed.access_token) == ["mcp"]
    offer = await env.server.upgrade_grant(USER, grant_id(issued), ("files:write",))
    assert offer.added == ("files:write",)
    grant = await env.store.grants.get(grant_id(issued))
    assert grant is not None
    assert grant.scopes == ("mcp", "files:read", "files:write")
    assert grant.access_scopes == ("mcp", "files:write")


async def test_a_narrowed_token_regains_a_scope_of_its_grant(env: Env) -> None:
    issued = await env.code_flow(scope="mcp files:read")
    narrowed = await env.refresh(issued, scope="mcp")
    offer = await env.server.upgrade_grant(USER, grant_id(issued), ("files:read",))
    assert offer.added == ("files:read",)
    grant = await env.store.grants.get(grant_id(issued))
    assert grant is not None and grant.access_scopes is None  # all of its scopes again
    assert await token_scopes(env, narrowed.access_token) == ["mcp", "files:read"]


async def test_the_remembered_consent_gains_the_added(env: Env) -> None:
    issued = await env.code_flow(scope="mcp")
    await env.server.upgrade_grant(USER, grant_id(issued), ("files:read",))
    client_id = issued.registration.client.client_id
    consent = await env.store.consents.get(consent_key(USER, client_id, "/mcp"))
    assert consent is not None and consent.scopes == ("mcp", "files:read")


async def test_the_upgrade_is_audited_without_a_token(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    issued = await env.code_flow(scope="mcp")
    with caplog.at_level(logging.INFO, logger="oauthd.audit"):
        await env.server.upgrade_grant(USER, grant_id(issued), ("files:read",))
    (line,) = [r for r in caplog.records if getattr(r, "event", "") == "audit.grant_upgraded"]
    fields = vars(line)
    assert fields["user"] == USER and fields["scopes"] == "files:read"
    assert fields["resource"] == RESOURCE and fields["grant"] == grant_id(issued)[:8]
    assert fields["client_id"] == issued.registration.client.client_id
    secrets = (issued.tokens.access_token, issued.tokens.refresh_token or "")
    assert not any(s in str(v) for v in fields.values() for s in secrets)


@pytest.fixture(params=["file", "redis", "postgres"])
async def durable_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreHarness]:
    """The file backend (journaled), and the shared ones, whose `update` may run the
    change again."""
    async for harness in open_harness(request.param, tmp_path):
        yield harness


async def test_the_upgrade_is_durable_and_survives_a_restart(
    durable_store: StoreHarness, tmp_path: Path
) -> None:
    env = build_env(tmp_path, durable_store.store, durable_store.clock)
    issued = await env.code_flow(scope="mcp")
    before = durable_store.writes()
    await env.server.upgrade_grant(USER, grant_id(issued), ("files:read",))
    assert (durable_store.writes() or 0) > (before or 0)  # journaled before the answer
    store = await durable_store.reopen()
    config = protocol_config(tmp_path)
    again = AuthServer(
        config, store, durable_store.clock, Users(config.login.users), keyring=read_keyring(config)
    )
    grant = await again.verify_bearer(issued.tokens.access_token, RESOURCE)
    assert grant is not None and grant.token_scopes == ("mcp", "files:read")


async def test_each_resource_offers_its_own_scopes(tmp_path: Path) -> None:
    """With `[[resource]]` tables, a grant may gain only what its own resource offers."""
    base = protocol_config(tmp_path)
    files = ResourceConfig("/files/mcp", "Files", base.upstream, ("files:read", "files:write"))
    other = ResourceConfig("/other/mcp", "Other", base.upstream, ("mcp",))
    config = dataclasses.replace(base, resource=(files, other))
    env = build_env(tmp_path)
    server = AuthServer(
        config, env.store, env.clock, Users(config.login.users), keyring=read_keyring(config)
    )
    registration = await env.register()
    resource = files.uri(ISSUER)
    await server.tokens.create("g1", USER, registration.client.client_id, ("files:read",), resource)
    error = await refused(server.upgrade_offer(USER, "g1", ("mcp",)))
    assert error.error == "invalid_scope" and "Files does not offer" in error.description
    offer = await server.upgrade_grant(USER, "g1", ("files:write",))
    assert offer.resource.name == "Files" and offer.added == ("files:write",)
