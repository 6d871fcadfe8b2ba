"""/upgrade over HTTP (`oauthd.http.upgrade`): the password sign-in leading back to the
page, what the page shows, Approve (the same access token carries the added scope),
Cancel, the CSRF and origin checks, another user's and an unknown grant (one answer),
bad scopes, and the sign-in form never leading to another site. The same page in a real
browser: tests/browser/test_upgrade_browser.py."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import pytest

from oauthd.oauth import upgrade_url
from oauthd.oauth.upgrade import NO_SUCH_GRANT
from tests.support.app import Running, Start
from tests.support.browser import Answer, Browser
from tests.support.configs import OTHER_PASSWORD, OTHER_USER, PASSWORD, USER
from tests.support.http_client import Pkce

REDIRECT = "http://127.0.0.1:43123/callback"
SCOPES = ("mcp", "files:read", "files:write")
DESCRIPTIONS = (("files:write", "Change your files"),)


@pytest.fixture
async def oauthd(start_oauthd: Start) -> Running:
    return await start_oauthd(
        oauth={"scopes": SCOPES, "scope_descriptions": DESCRIPTIONS, "resource_name": "Files"}
    )


@pytest.fixture
async def tokens(oauthd: Running) -> dict[str, Any]:
    """alice's tokens for "Notes App", with the scope `mcp` only."""
    app = await oauthd.client.register_public(client_name="Notes App")
    return await oauthd.client.tokens(app)


def link(oauthd: Running, tokens: dict[str, Any], *scopes: str) -> str:
    """The upgrade URL as the proxy's 403 names it, relative to the running app."""
    grant = tokens["access_token"].split(".")[0]
    url = upgrade_url(oauthd.config.server.issuer, grant, scopes or ("files:write",))
    return url.removeprefix(oauthd.config.server.issuer)


async def scope_of(oauthd: Running, token: str) -> str:
    body = await oauthd.client.introspect(token, oauthd.introspection_secret)
    assert body["active"] is True, body
    scope: str = body["scope"]
    return scope


async def signed_in_at(
    oauthd: Running, path: str, username: str = USER, password: str = PASSWORD
) -> tuple[Browser, Answer]:
    """A new browser opens `path`, is asked to sign in, and is led back to it."""
    browser = oauthd.client.browser()
    login = await browser.go("GET", path)
    assert login.status == 200 and login.form().action == "/account/login", login.text
    assert login.form().fields["next"] == path
    assert "approve more access" in login.text
    page = await browser.submit(login, username=username, password=password)
    assert unquote(page.url).endswith(unquote(path)), page.url
    return browser, page


async def test_sign_in_leads_back_and_approve_widens_the_same_token(
    oauthd: Running, tokens: dict[str, Any]
) -> None:
    token = tokens["access_token"]
    assert await scope_of(oauthd, token) == "mcp"
    browser, page = await signed_in_at(oauthd, link(oauthd, tokens))
    assert page.status == 200, page.text
    assert "Notes App" in page.text and "<strong>Files</strong>" in page.text
    assert "Change your files (files:write)" in page.text
    assert "<li>mcp</li>" not in page.text  # only what is added
    assert "details are not verified" in page.text  # a self-registered name, as on consent
    assert [b for b in page.form().buttons if b[0] == "decision"] == [
        ("decision", "deny"),
        ("decision", "allow"),
    ]
    done = await browser.submit(page, button=("decision", "allow"))
    assert done.status == 200 and "Access upgraded" in done.text and "retry" in done.text
    assert await scope_of(oauthd, token) == "mcp files:write"
    assert (await oauthd.client.call_mcp(token)).status != 401


async def test_cancel_changes_nothing(oauthd: Running, tokens: dict[str, Any]) -> None:
    browser, page = await signed_in_at(oauthd, link(oauthd, tokens))
    answer = await browser.submit(page, button=("decision", "deny"))
    assert answer.status == 200 and "Nothing changed" in answer.text
    assert await scope_of(oauthd, tokens["access_token"]) == "mcp"


async def test_the_form_needs_its_csrf_token_and_our_origin(
    oauthd: Running, tokens: dict[str, Any]
) -> None:
    browser, page = await signed_in_at(oauthd, link(oauthd, tokens))
    fields = {**page.form().fields, "decision": "allow"}
    forged = await browser.go(
        "POST",
        "/upgrade",
        data={**fields, "csrf_token": "x" * 43},
        headers={"Origin": browser.base},
    )
    assert forged.status == 403 and "CSRF" in forged.text
    foreign = await browser.go(
        "POST", "/upgrade", data=fields, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status == 403 and "another site" in foreign.text
    # a token made for another signed-in session does not pass either
    _, other_page = await signed_in_at(oauthd, link(oauthd, tokens))
    mixed = await browser.go(
        "POST",
        "/upgrade",
        data={**fields, "csrf_token": other_page.form().fields["csrf_token"]},
        headers={"Origin": browser.base},
    )
    assert mixed.status == 403
    assert await scope_of(oauthd, tokens["access_token"]) == "mcp"


async def test_not_signed_in_the_form_is_refused(oauthd: Running, tokens: dict[str, Any]) -> None:
    _, page = await signed_in_at(oauthd, link(oauthd, tokens))
    stranger = oauthd.client.browser()
    fields = {**page.form().fields, "decision": "allow"}
    answer = await stranger.go("POST", "/upgrade", data=fields, headers={"Origin": stranger.base})
    assert answer.status == 403 and "sign-in has ended" in answer.text
    assert await scope_of(oauthd, tokens["access_token"]) == "mcp"


async def test_another_users_grant_and_an_unknown_one_read_the_same(
    oauthd: Running, tokens: dict[str, Any]
) -> None:
    bob, page = await signed_in_at(oauthd, link(oauthd, tokens), OTHER_USER, OTHER_PASSWORD)
    unknown = await bob.go("GET", "/upgrade?grant=nosuchgrant&scope=files%3Awrite")
    assert page.status == unknown.status == 404
    assert NO_SUCH_GRANT.replace("'", "&#x27;") in page.text
    assert _message(page) == _message(unknown)
    assert "Notes App" not in page.text and "Files" not in page.text
    # nor can bob approve it with an upgrade form of his own session
    bobs = await oauthd.client.register_public(client_name="Bob's App")
    bob_tokens = await bobs_tokens(oauthd, bobs)
    own = await bob.go("GET", link(oauthd, bob_tokens))
    assert own.status == 200 and "Bob&#x27;s App" in own.text
    fields = {**own.form().fields, "grant": tokens["access_token"].split(".")[0]}
    answer = await bob.submit(own, button=("decision", "allow"), **fields)
    assert answer.status == 404 and _message(answer) == NO_SUCH_GRANT
    assert await scope_of(oauthd, tokens["access_token"]) == "mcp"


async def test_an_ended_grant_reads_the_same(oauthd: Running, tokens: dict[str, Any]) -> None:
    browser, _ = await signed_in_at(oauthd, link(oauthd, tokens))
    await oauthd.auth.revoke_grant(tokens["access_token"].split(".")[0], by="admin")
    answer = await browser.go("GET", link(oauthd, tokens))
    assert answer.status == 404 and _message(answer) == NO_SUCH_GRANT


async def bobs_tokens(oauthd: Running, app: dict[str, Any]) -> dict[str, Any]:
    client, pkce = oauthd.client, Pkce.new()
    browser = client.browser()
    params = client.authorize_params(app["client_id"], REDIRECT, pkce)
    consent = await browser.sign_in(await browser.authorize(params), OTHER_USER, OTHER_PASSWORD)
    code = (await browser.decide(consent)).redirect_query()["code"]
    answer = await client.exchange(app, code, pkce, REDIRECT, resource=client.resource)
    assert answer.status == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _message(answer: Answer) -> str:
    start = answer.text.index('<p class="center">') + len('<p class="center">')
    return answer.text[start : answer.text.index("</p>", start)].replace("&#x27;", "'")


async def test_bad_scopes_are_named(oauthd: Running, tokens: dict[str, Any]) -> None:
    browser, page = await signed_in_at(oauthd, link(oauthd, tokens, "admin"))
    assert page.status == 400 and "does not offer the scope &#x27;admin&#x27;" in page.text
    grant = tokens["access_token"].split(".")[0]
    empty = await browser.go("GET", f"/upgrade?grant={grant}&scope=")
    assert empty.status == 400 and "names no scope" in empty.text


async def test_held_scopes_need_no_approval(oauthd: Running, tokens: dict[str, Any]) -> None:
    _, page = await signed_in_at(oauthd, link(oauthd, tokens, "mcp"))
    assert page.status == 200 and "Nothing to approve" in page.text
    assert "<form" not in page.text


async def test_the_sign_in_never_leads_to_another_site(oauthd: Running) -> None:
    browser = oauthd.client.browser()
    login = await browser.go("GET", "/account")
    for target in ("https://evil.example/upgrade?x", "//evil.example/", "/account/revoke"):
        answer = await browser.request(
            "POST",
            "/account/login",
            data={**login.form().fields, "next": target, "username": USER, "password": PASSWORD},
            headers={"Origin": browser.base},
        )
        assert answer.status == 303 and answer.location == "/account", (target, answer.location)
