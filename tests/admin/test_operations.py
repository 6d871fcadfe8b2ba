"""The admin operations by resource (issue #12 item 2): `sessions list --resource` and
`sessions revoke --resource`, alone or with a user or client, through the admin socket;
each session shows its resource's path; a revocation forgets that resource's consent only."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from oauthd.admin import server as admin_server
from oauthd.admin.client import AdminClient, AdminRefused
from oauthd.admin.operations import Admin
from oauthd.clock import FakeClock
from oauthd.config import Config, ResourceConfig, default_config
from oauthd.keyring import read_keyring
from oauthd.model import Grant
from oauthd.oauth import AuthServer
from oauthd.store import MemoryStore
from oauthd.users import Users
from tests.support.records import make_client, make_consent, make_grant

ISSUER = "http://127.0.0.1:8080"  # the default config's
NOTES, FILES = f"{ISSUER}/mcp", f"{ISSUER}/files/mcp"


def two_resources(tmp_path: Path) -> Config:
    base = default_config(tmp_path)
    return dataclasses.replace(
        base,
        resource=(
            ResourceConfig("/mcp", "Notes", base.upstream, ("mcp",)),
            ResourceConfig("/files/mcp", "Files", base.upstream, ("files:read",)),
        ),
    )


async def _grants(store: MemoryStore) -> dict[str, Grant]:
    await store.clients.add(make_client(client_id="c1", client_name="Editor"))
    grants = {
        "alice-notes": make_grant(user="alice", client_id="c1", resource=NOTES),
        "alice-files": make_grant(user="alice", client_id="c1", resource=FILES),
        "bob-files": make_grant(user="bob", client_id="c1", resource=FILES),
        "gone": make_grant(user="bob", client_id="c1", resource=f"{ISSUER}/old/mcp"),
    }
    for grant in grants.values():
        await store.grants.add(grant)
    return grants


async def test_sessions_by_resource(tmp_path: Path) -> None:
    store = MemoryStore(FakeClock())
    config = two_resources(tmp_path)
    auth = AuthServer(config, store, store.clock, Users(()), keyring=read_keyring(config))
    grants = await _grants(store)
    await store.consents.add(make_consent(user="alice", client_id="c1", resource="/mcp"))
    await store.consents.add(make_consent(user="alice", client_id="c1", resource="/files/mcp"))
    path = tmp_path / "admin.sock"
    server = admin_server.AdminServer(path, Admin(store, auth, config))
    await server.start()
    try:
        admin = AdminClient(path)
        every = await asyncio.to_thread(admin.sessions)
        shown = {v.id: v.resource for v in every}
        assert shown == {
            grants["alice-notes"].id: "/mcp",
            grants["alice-files"].id: "/files/mcp",
            grants["bob-files"].id: "/files/mcp",
            grants["gone"].id: "/old/mcp",  # no longer configured: its path all the same
        }
        for named in ("/files/mcp", FILES):  # a path or the identifier
            files = await asyncio.to_thread(admin.sessions, None, None, named)
            assert {v.id for v in files} == {grants["alice-files"].id, grants["bob-files"].id}
        old = await asyncio.to_thread(admin.sessions, None, None, "/old/mcp")
        assert [v.id for v in old] == [grants["gone"].id]
        assert await asyncio.to_thread(admin.sessions, None, None, "/nowhere") == []

        ended = await asyncio.to_thread(admin.revoke, None, "alice", None, "/files/mcp")
        assert [v.id for v in ended] == [grants["alice-files"].id]
        assert await store.grants.get(grants["alice-notes"].id) is not None
        remaining = {c.resource async for c in store.consents.scan()}
        assert remaining == {"/mcp"}  # only the ended grant's resource's consent is forgotten

        ended = await asyncio.to_thread(admin.revoke, None, None, None, FILES)
        assert [v.id for v in ended] == [grants["bob-files"].id]
        with pytest.raises(AdminRefused, match="give no other selector"):
            await asyncio.to_thread(admin.revoke, grants["gone"].id, None, None, "/mcp")
        assert await store.grants.count() == 2
    finally:
        await server.close()
