"""`Accounts`: a user's connected apps (from a scan of the grants) and revoking one (through
`AuthServer.revoke_connected_app`); the /account sessions in the store."""

from __future__ import annotations

from pathlib import Path

from oauthd.clock import FakeClock
from oauthd.config import default_config
from oauthd.model import consent_key
from oauthd.oauth.account import SESSION_TTL, Accounts
from oauthd.oauth.tokens import Tokens
from oauthd.store import MemoryStore
from tests.support.protocol import RESOURCE, Env
from tests.support.records import DAY, NOW, make_client, make_consent, make_grant

MCP = "http://127.0.0.1:8080/mcp"  # the default config's one resource


def accounts(tmp_path: Path) -> tuple[Accounts, MemoryStore, FakeClock]:
    clock = FakeClock()
    store = MemoryStore(clock)
    return Accounts(store, Tokens(default_config(tmp_path), store, clock), clock), store, clock


async def test_connected_apps_are_the_users_live_grants_most_recent_first(
    tmp_path: Path,
) -> None:
    acc, store, clock = accounts(tmp_path)
    notes, editor = make_client(client_name="Notes"), make_client(client_name="Editor")
    for client in (notes, editor):
        await store.clients.add(client)
    old = make_grant(user="alice", client_id=notes.client_id, last_used_at=NOW - DAY)
    mine = make_grant(user="alice", client_id=notes.client_id, resource=MCP, last_used_at=NOW)
    recent = make_grant(user="alice", client_id=editor.client_id, last_used_at=NOW - 60)
    orphan = make_grant(user="alice", client_id="gone", last_used_at=NOW - 2 * DAY)
    expired = make_grant(user="alice", client_id=notes.client_id, expires_at=NOW + 10)
    bobs = make_grant(user="bob", client_id=notes.client_id)
    for grant in (old, recent, orphan, expired, bobs, mine):
        await store.grants.add(grant)
    clock.advance(10)

    apps = await acc.connected_apps("alice")
    assert (apps[0].grant_id, apps[0].resource_name) == (mine.id, "MCP server")  # its name
    apps = apps[1:]
    assert [(a.grant_id, a.client_name) for a in apps] == [
        (recent.id, "Editor"),
        (old.id, "Notes"),
        (orphan.id, "gone"),  # no longer registered: its client_id stands in for the name
    ]
    assert apps[1].scopes == old.scopes and apps[1].created_at == old.created_at
    # the grants' resource (https://mcp.example/) is not configured here: named by its path
    assert apps[1].resource_name == "https://mcp.example/"
    assert [a.grant_id for a in await acc.connected_apps("bob")] == [bobs.id]
    assert await acc.connected_apps("carol") == []


async def test_revoke_ends_the_grant_and_forgets_the_consent(env: Env) -> None:
    """`AuthServer.revoke_connected_app`: only the user's own grant (`Accounts.owned`),
    ended as `revoke_grant` ends one."""
    store = env.store
    grant = make_grant(user="alice", client_id="c1", resource=RESOURCE)
    other_client = make_grant(user="alice", client_id="c2", resource=RESOURCE)
    for g in (grant, other_client):
        await store.grants.add(g)
    await store.consents.add(make_consent(user="alice", client_id="c1"))
    await store.consents.add(make_consent(user="alice", client_id="c2"))
    other_resource = make_consent(user="alice", client_id="c1", resource="/files/mcp")
    await store.consents.add(other_resource)
    revoke = env.server.revoke_connected_app

    assert await revoke("bob", grant.id) is None  # not bob's
    assert await store.grants.get(grant.id) is not None
    assert await revoke("alice", "") is None
    assert await revoke("alice", "no-such-grant") is None

    ended = await revoke("alice", grant.id)
    assert ended is not None and ended.id == grant.id
    assert await store.grants.get(grant.id) is None
    assert await store.consents.get(consent_key("alice", "c1", "/mcp")) is None
    assert await store.consents.get(consent_key("alice", "c2", "/mcp")) is not None
    assert await store.consents.get(other_resource.key) is not None  # another resource's
    assert await store.grants.get(other_client.id) is not None
    assert await revoke("alice", grant.id) is None  # once


async def test_a_session_is_found_by_its_cookie_only_with_the_right_secret(tmp_path: Path) -> None:
    sessions, store, clock = accounts(tmp_path)
    cookie, session = await sessions.sign_in("alice")
    assert await sessions.session(cookie) == session
    key, secret = cookie.split(".")
    for forged in (f"{key}.{secret[::-1]}", key, f"{key}.", "", None, "a.b.c", "x" * 600):
        assert await sessions.session(forged) is None
    clock.advance(SESSION_TTL)
    assert await sessions.session(cookie) is None  # expired: invisible before any purge
    assert await store.purge_expired() == 1


async def test_sign_out_ends_the_session(tmp_path: Path) -> None:
    sessions, store, _ = accounts(tmp_path)
    cookie, session = await sessions.sign_in("alice")
    other, _ = await sessions.sign_in("alice")
    await sessions.sign_out(session)
    assert await sessions.session(cookie) is None
    assert await sessions.session(other) is not None  # another sign-in of the same user
    assert await store.account_sessions.count() == 1
