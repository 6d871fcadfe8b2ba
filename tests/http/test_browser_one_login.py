"""One login for all resources (issue #12 item 2): a person who signed in while authorizing
an app for one resource and then authorizes it for another in the same browser sees only a
consent page, no password; the page names the resource and says what each scope means; a
step-up asks only for what is added."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.app import Running, Start
from tests.support.browser import Answer, Browser
from tests.support.forms import parse_forms
from tests.support.http_client import OauthdClient, Pkce

REDIRECT = "http://127.0.0.1:43123/callback"
RESOURCES = [("/mcp", "Notes", ("mcp",)), ("/files/mcp", "Files", ("files:read", "files:write"))]
WORDS = (("files:read", "Read your files"), ("files:write", "Change your files"))


@pytest.fixture
async def two(start_oauthd: Start) -> Running:
    return await start_oauthd(
        resources=RESOURCES,
        oauth={"scopes": ("mcp", "files:read", "files:write"), "scope_descriptions": WORDS},
    )


def _params(client: OauthdClient, app: dict[str, Any], path: str, scope: str) -> dict[str, str]:
    resource = f"{client.issuer}{path}"
    return client.authorize_params(
        app["client_id"], REDIRECT, Pkce.new(), resource=resource, scope=scope
    )


def _is_consent(page: Answer) -> bool:
    return page.status == 200 and ("decision", "allow") in page.form().buttons


def _no_password(page: Answer) -> bool:
    return "password" not in page.form().fields and 'type="password"' not in page.text


async def test_a_second_resource_needs_only_consent(two: Running) -> None:
    client = two.client
    app = await client.register_public([REDIRECT], client_name="Editor")
    browser = client.browser()
    login = await browser.authorize(_params(client, app, "/mcp", "mcp"))
    assert "password" in login.form().fields  # the first time: the password
    consent = await browser.sign_in(login)
    assert _is_consent(consent) and "Notes" in consent.text
    assert (await browser.decide(consent)).status == 303

    files = await browser.authorize(_params(client, app, "/files/mcp", "files:read"))
    assert _is_consent(files) and _no_password(files)
    assert "Files" in files.text and "Read your files" in files.text
    back = await browser.decide(files)
    assert back.status == 303 and back.redirect_query()["code"]
    consents = {(c.resource, c.scopes) async for c in two.store.consents.scan()}
    assert consents == {("/mcp", ("mcp",)), ("/files/mcp", ("files:read",))}


async def test_the_tokens_of_the_second_resource_are_bound_to_it(two: Running) -> None:
    client = two.client
    app = await client.register_public([REDIRECT], client_name="Editor")
    browser = client.browser()
    await browser.code_flow(_params(client, app, "/mcp", "mcp"))
    pkce = Pkce.new()
    files = f"{client.issuer}/files/mcp"
    params = client.authorize_params(
        app["client_id"], REDIRECT, pkce, resource=files, scope="files:read"
    )
    consent = await browser.authorize(params)
    assert _is_consent(consent) and _no_password(consent)
    code = (await browser.decide(consent)).redirect_query()["code"]
    answer = await client.exchange(app, code, pkce, REDIRECT)  # no resource: the code's
    assert answer.status == 200, answer.text
    token = answer.json()["access_token"]
    grant = await two.auth.verify_bearer(token, files)
    assert grant is not None and grant.scopes == ("files:read",)
    assert await two.auth.verify_bearer(token, f"{client.issuer}/mcp") is None
    account = await browser.go("GET", "/account")  # connected apps: each grant's resource
    assert "Access to <strong>Files</strong>" in account.text


async def test_a_step_up_asks_only_for_the_added_scope(two: Running) -> None:
    client = two.client
    app = await client.register_public([REDIRECT], client_name="Editor")
    browser = client.browser()
    await browser.code_flow(_params(client, app, "/files/mcp", "files:read"))
    more = await browser.authorize(_params(client, app, "/files/mcp", "files:read files:write"))
    assert _is_consent(more) and _no_password(more)
    asked = more.text.split('<ul class="scopes">')[1].split("</ul>")[0]
    assert "Change your files" in asked and "Read your files" not in asked
    assert "Already allowed: Read your files" in more.text
    assert (await browser.decide(more)).status == 303
    (consent,) = [c async for c in two.store.consents.scan()]
    assert (consent.resource, consent.scopes) == ("/files/mcp", ("files:read", "files:write"))


async def test_another_browser_and_a_signed_out_one_need_the_password(two: Running) -> None:
    client = two.client
    app = await client.register_public([REDIRECT], client_name="Editor")
    browser = client.browser()
    await browser.code_flow(_params(client, app, "/mcp", "mcp"))
    stranger = client.browser()
    page = await stranger.authorize(_params(client, app, "/files/mcp", "files:read"))
    assert "password" in page.form().fields
    account = await browser.go("GET", "/account")  # the same sign-in: no password there
    assert "Connected apps" in account.text
    assert [f.action for f in parse_forms(account.text)] == ["/account/logout"]
    await browser.submit(account)  # sign out
    page = await browser.authorize(_params(client, app, "/files/mcp", "files:read"))
    assert "password" in page.form().fields


async def test_a_device_approval_after_a_sign_in_needs_no_password(two: Running) -> None:
    client = two.client
    app = await client.register_public([REDIRECT], client_name="Editor")
    browser: Browser = client.browser()
    await browser.code_flow(_params(client, app, "/mcp", "mcp"))
    device = await client.register(
        client_name="TV",
        grant_types=["urn:ietf:params:oauth:grant-type:device_code"],
        token_endpoint_auth_method="none",
    )
    started = await client.call(
        "POST",
        "/device_authorization",
        data={"client_id": device["client_id"], "resource": f"{client.issuer}/files/mcp"},
    )
    assert started.status == 200, started.text
    approve = await browser.enter_user_code(started.json()["user_code"])
    assert _is_consent(approve) and _no_password(approve)
    assert "Files" in approve.text and "Read your files" in approve.text
