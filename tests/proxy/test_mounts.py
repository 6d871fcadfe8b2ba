"""Two resources behind one oauthd, each at its path with its own upstream: a token for
one is refused by the other (401 invalid_token), each reaches its own upstream with its
own identity headers and static credential, each has its own challenge, and ending a
grant closes its MCP sessions at its own resource's upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.configs import resource
from tests.support.proxy_app import Oauthd, StartOauthd
from tests.support.upstream import FakeUpstream, SessionsAnswer
from tests.support.wait import eventually

FILES = "/files/mcp"
SCOPES = ("mcp", "files")


@pytest.fixture
async def files_upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as fake:
        yield fake


@pytest.fixture
async def two(
    start_oauthd: StartOauthd,
    upstream: FakeUpstream,
    files_upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> Oauthd:
    monkeypatch.setenv("FILES_UPSTREAM_AUTH", "Bearer files-static")
    return await start_oauthd(
        oauth={"scopes": SCOPES},
        resources=[
            resource("/mcp", upstream.url, scopes=SCOPES),
            resource(
                FILES,
                files_upstream.url,
                scopes=SCOPES,
                required_scopes=("files",),
                user_header="X-Files-User",
                authorization="env:FILES_UPSTREAM_AUTH",
            ),
        ],
    )


async def test_each_resource_reaches_its_own_upstream(
    two: Oauthd, upstream: FakeUpstream, files_upstream: FakeUpstream
) -> None:
    main = await two.grant()
    files = await two.grant(scopes=("files",), resource=two.resource_uri(FILES))
    assert (await two.mcp("POST", main)).status == 200
    assert (await two.mcp("POST", files, path=FILES)).status == 200
    assert len(upstream.requests) == 1 and len(files_upstream.requests) == 1
    seen = files_upstream.requests[0]
    assert seen.headers["X-Files-User"] == "alice" and "X-Forwarded-User" not in seen.headers
    assert seen.headers["Authorization"] == "Bearer files-static"
    assert upstream.requests[0].headers["X-Forwarded-User"] == "alice"
    assert "Authorization" not in upstream.requests[0].headers


async def test_a_token_for_one_resource_is_refused_by_the_other(
    two: Oauthd, upstream: FakeUpstream, files_upstream: FakeUpstream
) -> None:
    main = await two.grant(scopes=SCOPES)
    files = await two.grant(scopes=SCOPES, resource=two.resource_uri(FILES))
    for granted, path in ((main, FILES), (files, "/mcp")):
        answer = await two.mcp("POST", granted, path=path)
        assert answer.status == 401
        assert 'error="invalid_token"' in answer.headers["WWW-Authenticate"]
    assert upstream.requests == [] and files_upstream.requests == []


async def test_each_resource_has_its_own_challenge(two: Oauthd) -> None:
    issuer = two.config.server.issuer
    for path, scope in (("/mcp", "mcp"), (FILES, "files")):
        answer = await two.mcp("POST", path=path)
        assert answer.status == 401
        assert answer.headers["WWW-Authenticate"] == (
            f'Bearer resource_metadata="{issuer}/.well-known/oauth-protected-resource{path}", '
            f'scope="{scope}"'
        )


async def test_ending_a_grant_closes_its_sessions_at_its_own_upstream(
    two: Oauthd, upstream: FakeUpstream, files_upstream: FakeUpstream
) -> None:
    sessions = SessionsAnswer()
    files_upstream.answer = sessions
    upstream.answer = SessionsAnswer()
    files = await two.grant(scopes=("files",), resource=two.resource_uri(FILES))
    opened = await two.mcp("POST", files, path=FILES)
    assert opened.headers["Mcp-Session-Id"] == "upstream-session-1"
    await two.revoke(files.refresh, files.client_id)
    await eventually(lambda: sessions.closed == ["upstream-session-1"])
    deleted = files_upstream.of_method("DELETE")[0]
    assert deleted.headers["Authorization"] == "Bearer files-static"
    assert deleted.headers["X-Files-User"] == "alice"
    assert upstream.requests == []


async def test_the_shorthand_is_one_resource_at_mcp(oauthd: Oauthd, upstream: FakeUpstream) -> None:
    granted = await oauthd.grant()
    assert (await oauthd.mcp("POST", granted)).status == 200
    assert (await oauthd.mcp("POST", granted, path=FILES)).status == 404
    assert len(upstream.requests) == 1
