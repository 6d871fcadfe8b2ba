"""The pages in a real browser: Playwright (Python) driving Debian's chromium through the
authorization code flow (login, consent, back to the app), the device flow (code entry,
login, approval, polling) and "Connected apps" at /account (sign in, revoke, sign out),
plus an error page.

Every page is checked for a Content-Security-Policy violation (reported on the console
and by a `securitypolicyviolation` listener installed before any page script could run)
and for being styled by /static/oauthd.css, and saved as a screenshot in
tests/artifacts/browser/ (a CI artifact; git-ignored).

The browser is the system's (/usr/bin/chromium, `apt-get install chromium`); Playwright's
own downloads are never used. Without it, or without the playwright package, the tests
skip, or fail when OAUTHD_REQUIRE_SERVICES=1 (CI).

There is deliberately no tests/browser/__init__.py (see conftest.py).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from oauthd.assembly import create_app
from oauthd.clock import FakeClock
from oauthd.config import Config
from tests.support.configs import PASSWORD, USER, make_config
from tests.support.http_client import OauthdClient, Pkce, user_code_as_typed
from tests.support.ports import free_port
from tests.support.services import service_missing

try:
    from playwright.async_api import (
        Browser,
        BrowserContext,
        ConsoleMessage,
        Page,
        Response,
        async_playwright,
    )
except ImportError:  # pragma: no cover - the dev extra installs it
    async_playwright = None  # type: ignore[assignment]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "browser"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SCOPES = ("mcp", "files:read")
TIMEOUT_MS = 10_000

pytestmark = pytest.mark.timeout(60)

# Reports every CSP violation on the console, whichever way Chrome itself reports it.
CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (e) => {
  console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI}`);
}, true);
"""


# -- fixtures --------------------------------------------------------------------------------


@dataclass
class Oauthd:
    config: Config
    clock: FakeClock
    base: str
    client: OauthdClient


@contextlib.asynccontextmanager
async def served(config: Config, port: int) -> AsyncIterator[Oauthd]:
    """`config`'s app on a test server at `port`, with a fake clock and a client of it."""
    clock = FakeClock(time.time())
    server = TestServer(create_app(config, clock=clock), host="127.0.0.1", port=port)
    await server.start_server()
    base = f"http://127.0.0.1:{port}"
    client = OauthdClient(base, config.server.issuer)
    try:
        yield Oauthd(config, clock, base, client)
    finally:
        await client.close()
        await server.close()


@pytest.fixture
async def oauthd(tmp_path: Path) -> AsyncIterator[Oauthd]:
    port = free_port()
    config = make_config(tmp_path, port, oauth={"scopes": SCOPES})
    async with served(config, port) as running:
        yield running


@pytest.fixture
async def callback() -> AsyncIterator[str]:
    """The app's loopback redirect URI, served by a tiny handler so that the page loads."""

    async def landed(request: web.Request) -> web.Response:
        return web.Response(
            text="<!doctype html><title>App</title><h1>Signed in to the app</h1>",
            content_type="text/html",
        )

    app = web.Application()
    app.router.add_get("/callback", landed)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}/callback"
    finally:
        await server.close()


def _prepare() -> None:
    if not CHROMIUM.exists():
        service_missing(f"{CHROMIUM} is missing (apt-get install chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if async_playwright is None:
        service_missing("the playwright package is not installed (pip install -e '.[dev]')")
    _prepare()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Tab:
    """One page of a fresh browser context, watching the console."""

    page: Page
    console: list[str] = field(default_factory=list)

    def errors(self) -> list[str]:
        """Console errors, page errors and failed loads of anything but the page itself
        (whose 4xx status Chrome also reports on the console: that one is expected)."""
        own_status = "Failed to load resource: the server responded with a status of 4"
        return [
            m
            for m in self.console
            if m.startswith(("error:", "pageerror:", "subresource:")) and own_status not in m
        ]

    def csp_violations(self) -> list[str]:
        return [m for m in self.console if "Content Security Policy" in m or "CSP violation" in m]

    async def check(self, shot: str | None = None) -> None:
        """The page is styled, nothing was refused or failed; save a screenshot."""
        assert self.csp_violations() == [], self.console
        assert self.errors() == [], self.console
        await assert_styled(self.page)
        if shot is not None:
            await self.page.screenshot(path=str(ARTIFACTS / f"{shot}.png"), full_page=True)


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context(viewport={"width": 800, "height": 720}, locale="en-GB")
    context.set_default_timeout(TIMEOUT_MS)
    await context.add_init_script(CSP_LISTENER)
    try:
        yield context
    finally:
        await context.close()


@pytest.fixture
async def tab(context: BrowserContext) -> Tab:
    tab = Tab(await context.new_page())

    def on_console(message: ConsoleMessage) -> None:
        tab.console.append(f"{message.type}: {message.text}")

    tab.page.on("console", on_console)

    def on_response(response: Response) -> None:
        if response.request.resource_type != "document" and response.status >= 400:
            tab.console.append(f"subresource: {response.status} {response.url}")

    tab.page.on("pageerror", lambda error: tab.console.append(f"pageerror: {error}"))
    tab.page.on("response", on_response)
    tab.page.on("requestfailed", lambda r: tab.console.append(f"subresource: failed {r.url}"))
    return tab


# -- helpers ---------------------------------------------------------------------------------


async def assert_styled(page: Page) -> None:
    """oauthd.css was applied: the card has its radius, width limit and border, the body
    its background; the browser's defaults have none of these."""
    style: dict[str, str] = await page.evaluate(
        """() => {
          const card = getComputedStyle(document.querySelector("main.card"));
          const body = getComputedStyle(document.body);
          return {radius: card.borderTopLeftRadius, maxWidth: card.maxWidth,
                  border: card.borderTopStyle, bodyBg: body.backgroundColor,
                  display: body.display};
        }"""
    )
    assert style["radius"] == "14px" and style["maxWidth"] != "none", style
    assert style["border"] == "solid" and style["display"] == "flex", style
    assert style["bodyBg"] not in ("rgba(0, 0, 0, 0)", "transparent"), style


async def sign_in(page: Page, username: str = USER, password: str = PASSWORD) -> None:
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


def path_of(page: Page) -> str:
    return urlsplit(page.url).path


async def heading(page: Page) -> str:
    return (await page.locator("h1").inner_text()).strip()


# -- the authorization code flow -------------------------------------------------------------


async def test_authorization_code_flow(oauthd: Oauthd, callback: str, tab: Tab) -> None:
    client = oauthd.client
    app = await client.register_public(client_name="Notes App", scope=" ".join(SCOPES))
    pkce = Pkce.new()
    params = client.authorize_params(app["client_id"], callback, pkce, scope=" ".join(SCOPES))
    page = tab.page

    await page.goto(f"{oauthd.base}/authorize?{urlencode(params)}")
    assert path_of(page) == "/login" and await heading(page) == "Sign in"
    assert "Notes App wants to access your MCP server" in await page.locator(".lead").inner_text()
    await tab.check("login")

    await sign_in(page, password="not the password")
    await page.get_by_role("alert").wait_for()
    assert "Wrong username or password." in await page.get_by_role("alert").inner_text()
    assert await page.get_by_label("Username").input_value() == USER
    await tab.check("login-error")

    await sign_in(page)
    await page.wait_for_url("**/consent?request=*")
    question = await heading(page)
    assert "Notes App" in question and USER in question
    assert "127.0.0.1" in await page.locator(".lead").inner_text()  # where it returns
    assert callback in await page.locator("main").inner_text()
    assert await page.locator("ul.scopes li").all_inner_texts() == list(SCOPES)
    await tab.check("consent")

    await page.get_by_role("button", name="Allow").click()
    await page.wait_for_url(f"{callback}?*")
    assert await heading(page) == "Signed in to the app"
    query = {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}
    assert set(query) == {"code", "state", "iss"}
    assert query["state"] == params["state"] and query["iss"] == oauthd.config.server.issuer
    assert tab.csp_violations() == [] and tab.errors() == [], tab.console

    answer = await client.token(
        grant_type="authorization_code",
        code=query["code"],
        code_verifier=pkce.verifier,
        redirect_uri=callback,
        resource=client.resource,
        client_id=app["client_id"],
    )
    assert answer.status == 200, answer.text
    assert answer.json()["scope"] == " ".join(SCOPES)
    assert (await client.call_mcp(answer.json()["access_token"])).status != 401


# -- one login for several resources -------------------------------------------------------


@pytest.fixture
async def two_resources(tmp_path: Path) -> AsyncIterator[Oauthd]:
    """oauthd in front of "Notes" at /mcp and "Files" at /files/mcp, with scope words."""
    port = free_port()
    config = make_config(
        tmp_path,
        port,
        resources=[("/mcp", "Notes", ("mcp",)), ("/files/mcp", "Files", FILE_SCOPES)],
        oauth={"scopes": ("mcp", *FILE_SCOPES), "scope_descriptions": FILE_WORDS},
    )
    async with served(config, port) as running:
        yield running


FILE_SCOPES = ("files:read", "files:write")
FILE_WORDS = (("files:read", "Read your files"), ("files:write", "Change your files"))


async def test_one_login_for_two_resources_and_a_step_up(
    two_resources: Oauthd, callback: str, tab: Tab
) -> None:
    oauthd, page = two_resources, tab.page
    client = oauthd.client
    app = await client.register_public([callback], client_name="Editor")

    def url(path: str, scope: str) -> str:
        resource = f"{oauthd.config.server.issuer}{path}"
        params = client.authorize_params(
            app["client_id"], callback, Pkce.new(), resource=resource, scope=scope
        )
        return f"{oauthd.base}/authorize?{urlencode(params)}"

    await page.goto(url("/mcp", "mcp"))
    assert path_of(page) == "/login"
    await sign_in(page)
    await page.wait_for_url("**/consent?request=*")
    assert "Notes" in await heading(page)
    await page.get_by_role("button", name="Allow").click()
    await page.wait_for_url(f"{callback}?*")

    await page.goto(url("/files/mcp", "files:read"))  # the same browser: no password
    await page.wait_for_url("**/consent?request=*")
    assert await page.get_by_label("Password").count() == 0
    assert "Files" in await heading(page)
    assert await page.locator("ul.scopes li").all_inner_texts() == ["Read your files (files:read)"]
    await tab.check("consent-second-resource")
    await page.get_by_role("button", name="Allow").click()
    await page.wait_for_url(f"{callback}?*")

    await page.goto(url("/files/mcp", "files:read files:write"))  # a step-up
    await page.wait_for_url("**/consent?request=*")
    assert await page.locator("ul.scopes li").all_inner_texts() == [
        "Change your files (files:write)"
    ]
    assert "Already allowed: Read your files" in await page.locator("main").inner_text()
    await tab.check("consent-step-up")
    await page.get_by_role("button", name="Allow").click()
    await page.wait_for_url(f"{callback}?*")
    assert tab.csp_violations() == [] and tab.errors() == [], tab.console


# -- the device flow -------------------------------------------------------------------------


async def test_device_flow(oauthd: Oauthd, tab: Tab) -> None:
    client = oauthd.client
    tv = await client.register_public(client_name="Living-room TV", grant_types=[DEVICE_GRANT])
    started = await client.start_device(tv)
    page = tab.page

    await page.goto(f"{oauthd.base}/device")
    assert await heading(page) == "Connect a device"
    await tab.check("device-code")

    typed = user_code_as_typed(started["user_code"])
    assert typed.islower() and "-" not in typed
    await page.get_by_label("Code").press_sequentially(typed)  # typed, key by key
    await page.get_by_role("button", name="Continue").click()
    await page.wait_for_url("**/login?request=*")
    await tab.check()
    await sign_in(page)

    await page.wait_for_url("**/consent?request=*")
    question = await heading(page)
    assert "Living-room TV" in question and started["user_code"] in question
    await tab.check("device-approve")
    await page.get_by_role("button", name="Allow").click()
    await page.get_by_role("heading", name="Device connected").wait_for()
    await tab.check("device-done")

    oauthd.clock.advance(started["interval"])
    answer = await client.poll(tv, started["device_code"])
    assert answer.status == 200, answer.text
    assert (await client.call_mcp(answer.json()["access_token"])).status != 401


# -- /account --------------------------------------------------------------------------------


async def test_account_revoke(oauthd: Oauthd, tab: Tab) -> None:
    client = oauthd.client
    notes = await client.register_public(client_name="Notes App", scope=" ".join(SCOPES))
    first = await client.tokens(notes)  # through the HTTP harness's browser
    oauthd.clock.advance(2 * 86400)
    refreshed = await client.refresh(notes, first["refresh_token"])
    tokens = refreshed.json()
    # registered now: one unused for a day is gone (oauth.unused_client_lifetime)
    editor = await client.register_public(client_name="Code Editor")
    kept = await client.tokens(editor)
    oauthd.clock.advance(40 * 60)
    assert (await client.call_mcp(kept["access_token"])).status != 401  # used just now
    page = tab.page

    await page.goto(f"{oauthd.base}/account")
    assert await heading(page) == "Sign in"
    assert "apps connected to your account" in await page.locator(".lead").inner_text()
    await tab.check("account-login")
    await sign_in(page)
    await page.wait_for_url("**/account")
    assert await heading(page) == "Connected apps"
    apps = page.locator("li.app")
    assert await apps.locator("h2").all_inner_texts() == ["Code Editor", "Notes App"]
    notes_row = apps.filter(has_text="Notes App")
    assert await notes_row.locator(".chip").all_inner_texts() == ["mcp"]
    meta = await notes_row.locator("p").inner_text()
    assert "Connected 2 days ago" in meta and "Last used 40 minutes ago" in meta, meta
    assert "Access to MCP server" in meta  # its resource (oauth.resource_name)
    editor_meta = await apps.filter(has_text="Code Editor").locator("p").inner_text()
    assert "Connected 40 minutes ago" in editor_meta and "Last used just now" in editor_meta
    await tab.check("account")
    await page.set_viewport_size({"width": 390, "height": 720})
    await tab.check("account-narrow")
    await page.set_viewport_size({"width": 800, "height": 720})
    await page.emulate_media(color_scheme="dark")
    await tab.check("account-dark")
    await page.emulate_media(color_scheme="light")

    await page.get_by_role("button", name="Revoke Notes App").click()
    await page.wait_for_url("**/account?revoked=1")
    assert "Access revoked" in await page.get_by_role("status").inner_text()
    assert await page.locator("li.app h2").all_inner_texts() == ["Code Editor"]
    await tab.check("account-revoked")
    assert (await client.call_mcp(tokens["access_token"])).status == 401
    assert (await client.call_mcp(kept["access_token"])).status != 401

    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url("**/account")
    assert await heading(page) == "Sign in"
    await tab.check()


# -- an error page, and the CSP check itself -----------------------------------------------


async def test_error_page_and_the_csp_detector(oauthd: Oauthd, tab: Tab) -> None:
    page = tab.page
    params = {"response_type": "code", "client_id": "nobody", "redirect_uri": "http://x/"}
    response = await page.goto(f"{oauthd.base}/authorize?{urlencode(params)}")
    assert response is not None and response.status == 400
    assert await heading(page) == "This application is not known here"
    await tab.check("error")

    # The detector works: an inline style, refused by the page's CSP, is reported.
    await page.evaluate(
        """() => { const s = document.createElement("style");
                   s.textContent = "body { color: red }"; document.head.append(s); }"""
    )
    for _ in range(50):
        if tab.csp_violations():
            break
        await page.wait_for_timeout(20)
    # Both reports arrive: Chrome's own console message and the listener's.
    assert any("Content Security Policy" in m for m in tab.csp_violations()), tab.console
    for _ in range(50):
        if any("CSP violation: style-src" in m for m in tab.console):
            break
        await page.wait_for_timeout(20)
    assert any("CSP violation: style-src" in m for m in tab.console), tab.console
    assert await page.evaluate("() => getComputedStyle(document.body).color") != "rgb(255, 0, 0)"
