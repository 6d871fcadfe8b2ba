"""Known-browser cookies on the pages: a sign-in at /login or /account gives the browser
one, and a browser holding one signs in while strangers' guesses have the user refused."""

from __future__ import annotations

from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from oauthd.http.cookies import known_browser, remember_browser
from oauthd.http.keys import AUTH, CONFIG
from tests.support.app import Running
from tests.support.browser import Answer, Browser
from tests.support.configs import PASSWORD, USER
from tests.support.http_client import OauthdClient, Pkce
from tests.support.protocol import build_env

REDIRECT = "http://127.0.0.1:43123/callback"


@pytest.fixture
async def app(client: OauthdClient) -> dict[str, Any]:
    return await client.register_public(client_name="App")


async def login_page(client: OauthdClient, app: dict[str, Any], browser: Browser) -> Answer:
    params = client.authorize_params(app["client_id"], REDIRECT, Pkce.new())
    page = await browser.authorize(params)
    assert page.status == 200 and "username" in page.form().fields
    return page


def known_cookie_set(answer: Answer) -> SimpleCookie:
    for header in answer.cookies_set():
        cookie: SimpleCookie = SimpleCookie()
        cookie.load(header)
        if "oauthd_known" in next(iter(cookie)):
            return cookie
    raise AssertionError(f"no known-browser cookie in {answer.cookies_set()}")


async def strangers_guess(oauthd: Running, app: dict[str, Any], guesses: int) -> Answer:
    """`guesses` wrong passwords for USER, each from a fresh browser; the last answer."""
    answer = None
    for _ in range(guesses):
        stranger = oauthd.client.browser()
        answer = await stranger.sign_in(
            await login_page(oauthd.client, app, stranger), password="guess"
        )
    assert answer is not None
    return answer


async def test_a_sign_in_gives_the_browser_a_known_browser_cookie(
    oauthd: Running, app: dict[str, Any]
) -> None:
    browser = oauthd.client.browser()
    await browser.sign_in(await login_page(oauthd.client, app, browser))
    signed_in = next(a for a in browser.history if a.status == 303)
    cookie = known_cookie_set(signed_in)
    (morsel,) = cookie.values()
    assert morsel.key == "oauthd_known"  # http issuer: no __Host- prefix
    assert morsel["httponly"] and morsel["samesite"] == "Strict" and morsel["path"] == "/"
    assert int(morsel["max-age"]) == int(oauthd.config.login.known_browser_ttl)
    assert PASSWORD not in morsel.value


async def test_a_known_browser_signs_in_while_strangers_have_the_user_refused(
    oauthd: Running, app: dict[str, Any]
) -> None:
    alice = oauthd.client.browser()
    assert (await alice.sign_in(await login_page(oauthd.client, app, alice))).status == 200
    alice.forget_sign_in()  # her password again below, not her sign-in session
    limit = oauthd.config.login.max_failures
    assert (await strangers_guess(oauthd, app, limit)).status == 401
    blocked = await strangers_guess(oauthd, app, 1)
    assert blocked.status == 429 and int(blocked.headers["Retry-After"]) > 0
    new_browser = oauthd.client.browser()  # alice on a browser she never used: refused
    page = await login_page(oauthd.client, app, new_browser)
    assert (await new_browser.sign_in(page)).status == 429
    page = await login_page(oauthd.client, app, alice)
    assert "username" in page.form().fields
    consent = await alice.sign_in(page)
    assert consent.status == 200 and "decision" in dict(consent.form().buttons)
    alice.forget_sign_in()
    account = await alice.go("GET", "/account")
    signed_in = await alice.submit(account, username=USER, password=PASSWORD)
    assert signed_in.status == 200 and "Connected apps" in signed_in.text


async def test_a_sign_in_at_account_gives_the_cookie_too(oauthd: Running) -> None:
    browser = oauthd.client.browser()
    login = await browser.go("GET", "/account")
    await browser.submit(login, username=USER, password=PASSWORD)
    signed_in = next(a for a in browser.history if a.status == 303)
    assert known_cookie_set(signed_in)


async def test_an_https_issuer_gets_a_host_only_secure_cookie(tmp_path: Path) -> None:
    env = build_env(tmp_path)  # issuer https://mcp.example.com
    app = web.Application()
    app[CONFIG], app[AUTH] = env.config, env.server
    response = web.Response()
    remember_browser(make_mocked_request("POST", "/login", app=app), response, USER)
    (morsel,) = response.cookies.values()
    assert morsel.key == "__Host-oauthd_known"
    assert morsel["secure"] and morsel["httponly"] and morsel["samesite"] == "Strict"
    sent = make_mocked_request(
        "POST", "/login", app=app, headers={"Cookie": f"__Host-oauthd_known={morsel.value}"}
    )
    assert known_browser(sent) == morsel.value
