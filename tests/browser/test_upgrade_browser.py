"""In-place upgrade (issue #12 item 5) in a real browser (Playwright, Debian's chromium,
set up as in test_pages_browser.py): a token lacking a scope is refused by `/mcp`, whose
`required_scopes` needs it (403 `insufficient_scope`); the person opens the upgrade URL,
signs in, sees only the added scope in words, approves, and the same token then passes.
Every page is checked for CSP violations and styling, and saved as a screenshot."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from oauthd.oauth import upgrade_url
from tests.browser.test_pages_browser import (  # the browser fixtures and page helpers
    Oauthd,
    Tab,
    browser,
    context,
    heading,
    path_of,
    served,
    sign_in,
    tab,
)
from tests.support.configs import introspection_secret, make_config
from tests.support.ports import free_port

__all__ = ["browser", "context", "tab"]  # fixtures used by name

SCOPES = ("mcp", "files:read")

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    """An MCP server that answers every call."""

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {}})

    app = web.Application()
    app.router.add_post("/mcp", answer)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}/mcp"
    finally:
        await server.close()


@pytest.fixture
async def oauthd(tmp_path: Path, upstream: str) -> AsyncIterator[Oauthd]:
    """oauthd whose `/mcp` needs `files:read`, and describes it in words."""
    port = free_port()
    config = make_config(
        tmp_path,
        port,
        upstream_url=upstream,
        oauth={
            "scopes": SCOPES,
            "resource_name": "Team files",
            "scope_descriptions": (("files:read", "Read your files"),),
        },
        upstream={"required_scopes": ("files:read",)},
    )
    async with served(config, port) as running:
        yield running


async def test_the_same_token_works_after_the_upgrade(oauthd: Oauthd, tab: Tab) -> None:
    client = oauthd.client
    app = await client.register_public(client_name="Notes App", scope=" ".join(SCOPES))
    tokens = await client.tokens(app)  # scope "mcp" only
    token = tokens["access_token"]
    refused = await client.call_mcp(token)
    assert refused.status == 403, refused.text
    assert refused.challenge()["error"] == "insufficient_scope"

    grant = token.split(".")[0]
    page = tab.page
    await page.goto(upgrade_url(oauthd.config.server.issuer, grant, ["files:read"]))
    assert path_of(page) == "/upgrade" and await heading(page) == "Sign in"
    assert "approve more access" in await page.locator(".lead").inner_text()
    await tab.check("upgrade-login")

    await sign_in(page)
    await page.wait_for_url("**/upgrade?grant=*")
    question = await heading(page)
    assert "Notes App" in question and "Team files" in question, question
    assert await page.locator("ul.scopes li").all_inner_texts() == ["Read your files (files:read)"]
    await tab.check("upgrade")

    await page.get_by_role("button", name="Approve").click()
    await page.get_by_role("heading", name="Access upgraded").wait_for()
    assert "retry" in await page.locator(".lead").inner_text()
    await tab.check("upgrade-done")

    again = await client.call_mcp(token)  # the same access token
    assert again.status == 200, again.text
    body = await client.introspect(token, introspection_secret(oauthd.config))
    assert body["scope"] == "mcp files:read"
