"""`SessionBindings` alone, on the memory store: what an upstream answer does to the MCP
sessions bound to a grant (`track`), and that a binding works only with its own grant."""

from __future__ import annotations

import os

import pytest

from oauthd.clock import FakeClock
from oauthd.crypto import Sealer
from oauthd.model import Grant
from oauthd.proxy.sessions import MAX_SESSIONS_PER_GRANT, SessionBindings
from oauthd.store import MemoryStore
from tests.support.records import make_grant

TTL = 3600.0


async def bindings() -> tuple[SessionBindings, MemoryStore, Grant]:
    clock = FakeClock()
    store = MemoryStore(clock)
    grant = make_grant(mcp_sessions=(), expires_at=None)
    await store.grants.put(grant)
    return SessionBindings(store, clock, Sealer(os.urandom(32)), TTL), store, grant


async def listed(store: MemoryStore, grant: Grant) -> int:
    current = await store.grants.get(grant.id)
    assert current is not None
    return len(current.mcp_sessions)


@pytest.mark.parametrize("status", [200, 202, 307])
async def test_a_new_session_id_is_bound_to_the_grant(status: int) -> None:
    sessions, store, grant = await bindings()
    await sessions.track("POST", status, grant, None, "s1")
    assert await sessions.belongs_to("s1", grant)
    assert await listed(store, grant) == 1


@pytest.mark.parametrize("status", [400, 404, 500])
async def test_a_refused_request_binds_nothing(status: int) -> None:
    sessions, store, grant = await bindings()
    await sessions.track("POST", status, grant, None, "s1")
    assert not await sessions.belongs_to("s1", grant)
    assert await listed(store, grant) == 0


async def test_a_session_belongs_only_to_its_own_grant() -> None:
    sessions, store, grant = await bindings()
    other = make_grant(mcp_sessions=())
    await store.grants.put(other)
    await sessions.track("POST", 200, grant, None, "s1")
    assert not await sessions.belongs_to("s1", other)
    await sessions.track("POST", 200, other, None, "s1")  # an upstream reusing an id
    assert await sessions.belongs_to("s1", grant) and not await sessions.belongs_to("s1", other)


@pytest.mark.parametrize("status", [200, 202, 204, 404])
async def test_a_delete_the_upstream_accepted_forgets_the_session(status: int) -> None:
    sessions, store, grant = await bindings()
    await sessions.track("POST", 200, grant, None, "s1")
    await sessions.track("DELETE", status, grant, "s1", None)
    assert not await sessions.belongs_to("s1", grant)
    assert await listed(store, grant) == 0


@pytest.mark.parametrize(("method", "status"), [("DELETE", 500), ("DELETE", 405), ("GET", 404)])
async def test_otherwise_the_session_stays(method: str, status: int) -> None:
    sessions, store, grant = await bindings()
    await sessions.track("POST", 200, grant, None, "s1")
    await sessions.track(method, status, grant, "s1", None)
    assert await sessions.belongs_to("s1", grant)
    assert await listed(store, grant) == 1


async def test_the_same_id_again_changes_nothing() -> None:
    sessions, store, grant = await bindings()
    await sessions.track("POST", 200, grant, None, "s1")
    await sessions.track("POST", 200, grant, "s1", "s1")
    assert await listed(store, grant) == 1


async def test_an_ended_grant_releases_its_session_ids() -> None:
    sessions, store, grant = await bindings()
    for session_id in ("s1", "s2"):
        await sessions.track("POST", 200, grant, None, session_id)
    current = await store.grants.get(grant.id)
    assert current is not None
    assert sorted(await sessions.release_all(current)) == ["s1", "s2"]
    assert not await sessions.belongs_to("s1", current)


async def test_session_records_never_pile_up_past_what_the_grant_tracks() -> None:
    """Past MAX_SESSIONS_PER_GRANT the oldest binding goes: from the grant's list and as a
    record, so every record left is one the grant can release when it ends."""
    sessions, store, grant = await bindings()
    opened = [f"s{i}" for i in range(MAX_SESSIONS_PER_GRANT + 10)]
    for session_id in opened:
        await sessions.track("POST", 200, grant, None, session_id)
    assert await listed(store, grant) == MAX_SESSIONS_PER_GRANT
    assert await store.mcp_sessions.count() == MAX_SESSIONS_PER_GRANT
    assert not await sessions.belongs_to(opened[0], grant)  # the oldest were evicted
    assert not await sessions.belongs_to(opened[9], grant)
    assert await sessions.belongs_to(opened[10], grant)
    assert await sessions.belongs_to(opened[-1], grant)
    current = await store.grants.get(grant.id)
    assert current is not None
    released = await sessions.release_all(current)
    assert sorted(released) == sorted(opened[10:])
    assert await store.mcp_sessions.count() == 0


async def test_a_binding_made_after_its_grant_ended_is_not_kept() -> None:
    sessions, store, grant = await bindings()
    await store.grants.take(grant.id)
    await sessions.track("POST", 200, grant, None, "late")
    assert await store.mcp_sessions.count() == 0
