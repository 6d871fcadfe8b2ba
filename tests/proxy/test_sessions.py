"""MCP sessions belong to the grant that opened them: an `Mcp-Session-Id` works only with
that grant's tokens (across refreshes and restarts), and ending the grant closes its
sessions upstream."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from oauthd.crypto import lookup_key
from tests.support.configs import OTHER_USER, write_secret
from tests.support.proxy_app import Granted, Oauthd, StartOauthd
from tests.support.upstream import FakeUpstream, Seen
from tests.support.wait import eventually

SESSION = "3f6c1e0a-session-A"


async def open_session(
    oauthd: Oauthd, upstream: FakeUpstream, session_id: str = SESSION
) -> Granted:
    """A grant whose `initialize` made the upstream hand out `session_id`."""
    granted = await oauthd.grant()
    upstream.session_id = session_id
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    reply = await oauthd.mcp("POST", granted, json=initialize)
    upstream.session_id = None
    assert reply.status == 200, reply.text
    assert reply.headers["Mcp-Session-Id"] == session_id
    return granted


def with_session(session_id: str = SESSION) -> dict[str, str]:
    return {"Mcp-Session-Id": session_id}


async def assert_unknown_session(
    oauthd: Oauthd, upstream: FakeUpstream, granted: Granted, session_id: str = SESSION
) -> None:
    before = len(upstream.requests)
    for method in ("POST", "GET", "DELETE"):
        reply = await oauthd.mcp(method, granted, headers=with_session(session_id))
        reply.assert_jsonrpc_error(404)
    assert len(upstream.requests) == before  # refused before the upstream


async def test_the_session_works_with_its_grant(oauthd: Oauthd, upstream: FakeUpstream) -> None:
    granted = await open_session(oauthd, upstream)
    reply = await oauthd.mcp("POST", granted, headers=with_session())
    assert reply.status == 200, reply.text
    assert upstream.requests[-1].session_id == SESSION
    get = await oauthd.mcp("GET", granted, headers=with_session())
    assert get.status == 200 and upstream.requests[-1].session_id == SESSION


async def test_the_session_id_with_another_grants_token_is_404(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    await open_session(oauthd, upstream)
    same_user_other_client = await oauthd.grant()
    other_user = await oauthd.grant(user=OTHER_USER)
    for granted in (same_user_other_client, other_user):
        await assert_unknown_session(oauthd, upstream, granted)


async def test_a_new_grant_of_the_same_user_and_client_takes_the_session_over(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    """A step-up: the client authorized again (a new grant, more scopes) and goes on in
    its session. The session moves to the new grant: the old grant's end leaves it open,
    the new grant's closes it; another client of the same user still gets a 404."""
    first = await open_session(oauthd, upstream)
    oauthd.clock.advance(1)
    again = await oauthd.grant(scopes=("mcp", "files:read"), client_id=first.client_id)
    reply = await oauthd.mcp("POST", again, headers=with_session())
    assert reply.status == 200 and upstream.requests[-1].session_id == SESSION
    binding = await oauthd.store.mcp_sessions.get(lookup_key(SESSION))
    new_grant = await oauthd.store.grants.get(again.access.split(".")[0])
    assert binding is not None and new_grant is not None
    assert binding.grant_id == new_grant.id and binding.session_key in new_grant.mcp_sessions
    await assert_unknown_session(oauthd, upstream, await oauthd.grant())

    # never back to the older grant
    await assert_unknown_session(oauthd, upstream, first)
    await oauthd.revoke(first.refresh, first.client_id)
    await asyncio.sleep(0.2)
    assert upstream.of_method("DELETE") == []  # the old grant's end closes nothing
    assert (await oauthd.mcp("POST", again, headers=with_session())).status == 200
    await oauthd.revoke(again.refresh, again.client_id)
    await eventually(lambda: [s.session_id for s in upstream.of_method("DELETE")] == [SESSION])


async def test_a_grant_made_before_the_hand_over_never_takes_the_session(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    first = await open_session(oauthd, upstream)
    oauthd.clock.advance(1)
    middle = await oauthd.grant(client_id=first.client_id)
    oauthd.clock.advance(1)
    latest = await oauthd.grant(client_id=first.client_id)
    oauthd.clock.advance(1)
    assert (await oauthd.mcp("POST", latest, headers=with_session())).status == 200
    await assert_unknown_session(
        oauthd, upstream, middle
    )  # newer than the first, not the hand-over
    await assert_unknown_session(oauthd, upstream, first)
    assert (await oauthd.mcp("POST", latest, headers=with_session())).status == 200


async def test_an_unknown_session_id_is_404(oauthd: Oauthd, upstream: FakeUpstream) -> None:
    granted = await open_session(oauthd, upstream)
    await assert_unknown_session(oauthd, upstream, granted, "never-issued")


async def test_the_session_survives_a_token_refresh(oauthd: Oauthd, upstream: FakeUpstream) -> None:
    granted = await open_session(oauthd, upstream)
    refreshed = await oauthd.refreshed(granted)
    assert refreshed.access != granted.access and refreshed.grant_id == granted.grant_id
    reply = await oauthd.mcp("POST", refreshed, headers=with_session())
    assert reply.status == 200, reply.text
    assert upstream.requests[-1].session_id == SESSION
    again = await oauthd.refreshed(refreshed)
    assert (await oauthd.mcp("POST", again, headers=with_session())).status == 200


async def test_the_binding_survives_a_restart(oauthd: Oauthd, upstream: FakeUpstream) -> None:
    granted = await open_session(oauthd, upstream)
    other = await oauthd.grant(user=OTHER_USER)
    await oauthd.restart()
    reply = await oauthd.mcp("POST", granted, headers=with_session())
    assert reply.status == 200, reply.text
    assert upstream.requests[-1].session_id == SESSION
    await assert_unknown_session(oauthd, upstream, other)
    # and after the restart a revocation still closes it upstream (the id was sealed)
    await oauthd.revoke(granted.refresh, granted.client_id)
    await eventually(lambda: len(upstream.of_method("DELETE")) == 1)
    assert upstream.of_method("DELETE")[0].session_id == SESSION


async def test_requests_without_a_session_id_pass_unchanged(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    await open_session(oauthd, upstream)  # a session of this grant exists: not implied
    granted = await oauthd.grant()
    body = b'{"jsonrpc":"2.0","id":"x","method":"tools/list"}'
    headers = {
        "Content-Type": "application/json",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/list",
    }
    reply = await oauthd.mcp("POST", granted, data=body, headers=headers)
    assert reply.status == 200, reply.text
    assert "Mcp-Session-Id" not in reply.headers
    seen = upstream.requests[-1]
    assert seen.session_id is None
    assert seen.body == body
    assert seen.headers["MCP-Protocol-Version"] == "2026-07-28"


async def test_delete_with_the_session_id_forgets_the_binding(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    granted = await open_session(oauthd, upstream)
    reply = await oauthd.mcp("DELETE", granted, headers=with_session())
    assert reply.status == 200, reply.text
    (delete,) = upstream.of_method("DELETE")
    assert delete.session_id == SESSION
    await assert_unknown_session(oauthd, upstream, granted)
    assert await oauthd.store.mcp_sessions.get(lookup_key(SESSION)) is None
    grant = await oauthd.store.grants.get(granted.grant_id)
    assert grant is not None and grant.mcp_sessions == ()


async def test_a_refused_delete_keeps_the_binding(oauthd: Oauthd, upstream: FakeUpstream) -> None:
    granted = await open_session(oauthd, upstream)

    async def answer(request: web.Request, seen: Seen) -> web.StreamResponse:
        if request.method == "DELETE":
            return web.Response(status=405)  # servers may refuse client-side termination
        return web.json_response({})

    upstream.answer = answer
    assert (await oauthd.mcp("DELETE", granted, headers=with_session())).status == 405
    assert (await oauthd.mcp("POST", granted, headers=with_session())).status == 200


async def test_revoking_the_grant_closes_its_sessions_upstream(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    granted = await open_session(oauthd, upstream)
    upstream.session_id = "second-session"
    assert (await oauthd.mcp("POST", granted)).status == 200  # a second session, same grant
    upstream.session_id = None
    bystander = await open_session(oauthd, upstream, "bystander-session")

    await oauthd.revoke(granted.refresh, granted.client_id)
    await eventually(lambda: len(upstream.of_method("DELETE")) == 2)
    deletes = upstream.of_method("DELETE")
    assert sorted(seen.session_id or "" for seen in deletes) == sorted(["second-session", SESSION])
    for seen in deletes:
        assert seen.headers["X-Forwarded-User"] == "alice"
        assert seen.headers["X-Forwarded-Client-Id"] == granted.client_id
        assert seen.headers["X-Forwarded-Scopes"] == "mcp"
        assert "Authorization" not in seen.headers

    for session_id in (SESSION, "second-session"):
        assert await oauthd.store.mcp_sessions.get(lookup_key(session_id)) is None
        await assert_unknown_session(oauthd, upstream, await oauthd.grant(), session_id)
    # the other grant's session is untouched
    reply = await oauthd.mcp("POST", bystander, headers=with_session("bystander-session"))
    assert reply.status == 200


async def test_refresh_token_reuse_closes_the_sessions_upstream(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    granted = await open_session(oauthd, upstream)
    successor = await oauthd.refreshed(granted)
    assert (await oauthd.mcp("POST", successor, headers=with_session())).status == 200
    replay = await oauthd.refresh(granted)  # the successor was used: this is reuse
    assert replay.status == 400 and replay.json()["error"] == "invalid_grant"
    await eventually(lambda: len(upstream.of_method("DELETE")) == 1)
    assert upstream.of_method("DELETE")[0].session_id == SESSION
    assert (await oauthd.mcp("POST", successor, headers=with_session())).status == 401
    await assert_unknown_session(oauthd, upstream, await oauthd.grant())


async def test_revocation_sends_the_static_upstream_credential(
    start_oauthd: StartOauthd, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """An upstream that needs oauthd's credential must get it on the closing DELETE too,
    or it refuses to close the session."""
    secret = tmp_path / "upstream.credential"
    write_secret(secret, "Bearer upstream-static-secret\n")
    oauthd = await start_oauthd(upstream={"authorization": f"file:{secret}"})
    granted = await open_session(oauthd, upstream)
    await oauthd.revoke(granted.refresh, granted.client_id)
    await eventually(lambda: len(upstream.of_method("DELETE")) == 1)
    (delete,) = upstream.of_method("DELETE")
    assert delete.session_id == SESSION
    assert delete.headers.get("Authorization") == "Bearer upstream-static-secret"


async def test_revocation_with_the_upstream_down_still_forgets(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    granted = await open_session(oauthd, upstream)
    await upstream.close()
    await oauthd.revoke(granted.refresh, granted.client_id)
    for _ in range(200):
        if await oauthd.store.mcp_sessions.get(lookup_key(SESSION)) is None:
            break
        await asyncio.sleep(0.01)
    assert await oauthd.store.mcp_sessions.get(lookup_key(SESSION)) is None
    await upstream.start()  # back up: the forgotten id is refused before reaching it
    await assert_unknown_session(oauthd, upstream, await oauthd.grant())
