"""The demo upstream (examples/demo_server.py) driven by the official MCP Python SDK client,
with no oauthd in between: the baseline the /mcp proxy's interop tests build on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.support.upstream import DemoUpstream, text_of

pytestmark = pytest.mark.timeout(15)


@pytest.fixture(params=["stateful", "stateless"])
def demo_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    demo = DemoUpstream(tmp_path / "demo.log", stateless=request.param == "stateless")
    demo.start()
    try:
        yield demo.url
    finally:
        demo.stop()


async def exercise(session: ClientSession) -> None:
    tools = await session.list_tools()
    assert {t.name for t in tools.tools} >= {"echo", "add", "whoami", "countdown"}

    assert text_of(await session.call_tool("echo", {"text": "hi"})) == "hi"
    added = await session.call_tool("add", {"a": 2, "b": 3})
    assert text_of(added) == "5"
    assert added.structured_content == {"result": 5}

    seen: list[tuple[float, float | None, str | None]] = []

    # Parameter names matter: the callback must match the SDK's `ProgressFnT` protocol.
    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    counted = await session.call_tool(
        "countdown", {"n": 3, "delay": 0.05}, progress_callback=on_progress
    )
    assert text_of(counted) == "done"
    assert [(p, t) for p, t, _ in seen] == [(1, 3), (2, 3), (3, 3)]

    me = await session.call_tool("whoami", {})
    assert me.structured_content == {
        "user": "",
        "client_id": "",
        "scopes": "",
        "principal": "",
        "authorization_received": False,
    }


async def test_handshake_client(demo_url: str) -> None:
    """2025-11-25 client: initialize handshake (+ Mcp-Session-Id unless --stateless)."""
    with anyio.fail_after(10):
        async with (
            streamable_http_client(demo_url) as (read, write),
            ClientSession(read, write) as session,
        ):
            init = await session.initialize()
            assert init.protocol_version == "2025-11-25"
            assert init.server_info.name == "oauthd-demo"
            await exercise(session)


async def test_stateless_2026_client(demo_url: str) -> None:
    """2026-07-28 client: server/discover, then self-contained requests (no session)."""
    with anyio.fail_after(10):
        async with (
            streamable_http_client(demo_url) as (read, write),
            ClientSession(read, write) as session,
        ):
            found = await session.discover()
            assert "2026-07-28" in found.supported_versions
            await exercise(session)


async def test_whoami_reads_forwarded_headers(demo_url: str) -> None:
    """What oauthd's proxy sends is what whoami reports (and a stray token would show)."""
    headers = {
        "X-Forwarded-User": "demo",
        "X-Forwarded-Client-Id": "client-1",
        "X-Forwarded-Scopes": "mcp",
        "Authorization": "Bearer must-not-reach-upstream",
    }
    with anyio.fail_after(10):
        async with (
            httpx2.AsyncClient(headers=headers) as http,
            streamable_http_client(demo_url, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            me = await session.call_tool("whoami", {})
    assert me.structured_content == {
        "user": "demo",
        "client_id": "client-1",
        "scopes": "mcp",
        "principal": "",
        "authorization_received": True,
    }
