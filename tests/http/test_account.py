"""/account ("Connected apps") over HTTP: sign-in, the user's own grants only, revoke (the
tokens stop working at once, the consent is forgotten), CSRF, session cookie attributes,
expiry and sign-out. The same pages in a real browser: tests/browser/."""

from __future__ import annotations

from http.cookies import SimpleCookie
from typing import Any

import pytest

from oauthd.http.account import SESSION_TTL
from oauthd.http.keys import AUTH
from oauthd.users import Users
from tests.support.app import Running, Start
from tests.support.browser import Answer, Browser
from tests.support.configs import OTHER_PASSWORD, OTHER_USER, PASSWORD, USER
from tests.support.forms import parse_forms
from tests.support.http_client import OauthdClient, Pkce

REDIRECT = "http://127.0.0.1:43123/callback"


@pytest.fixture
async def app(client: OauthdClient) -> dict[str, Any]:
    return await client.register_public(client_name="Notes App")


async def signed_in(
    client: OauthdClient, username: str = USER, password: str = PASSWORD
) -> tuple[Browser, Answer]:
    browser = client.browser()
    login = await browser.go("GET", "/account")
    assert login.status == 200 and login.form().action == "/account/login", login.text
    assert "Sign in to see the apps connected to your account." in login.text
    page = await browser.submit(login, username=username, password=password)
    assert page.status == 200 and "Connected apps" in page.text, page.text
    return browser, page


def logout_form(page: Answer) -> dict[str, str]:
    (form,) = [f for f in parse_forms(page.text) if f.action == "/account/logout"]
    return form.fields


def revoke_forms(page: Answer) -> dict[str, dict[str, str]]:
    """grant id -> the fields of its Revoke form."""
    return {
        f.fields["grant"]: f.fields for f in parse_forms(page.text) if f.action == "/account/revoke"
    }


async def test_own_grants_listed_and_revoke_ends_them(
    client: OauthdClient, app: dict[str, Any]
) -> None:
    other_app = await client.register_public(client_name="Bob's Tool")
    tokens = await client.tokens(app)
    await client.tokens(other_app)  # alice's too
    bobs = await client.register_public(client_name="Only Bob")
    bob_browser = client.browser()
    pkce = Pkce.new()
    params = client.authorize_params(bobs["client_id"], REDIRECT, pkce)
    page = await bob_browser.authorize(params)
    consent = await bob_browser.sign_in(page, OTHER_USER, OTHER_PASSWORD)
    assert (await bob_browser.decide(consent)).status == 303

    assert (await client.call_mcp(tokens["access_token"])).status != 401
    browser, page = await signed_in(client)
    assert "Notes App" in page.text and "Bob&#x27;s Tool" in page.text
    assert "Only Bob" not in page.text  # bob's grant is not alice's business
    assert f"Signed in as <strong>{USER}</strong>" in page.text
    forms = revoke_forms(page)
    assert len(forms) == 2
    grant_id = tokens["access_token"].split(".")[0]
    assert grant_id in forms

    done = await browser.go("POST", "/account/revoke", data=forms[grant_id])
    assert done.status == 200 and done.url.endswith("/account?revoked=1")
    assert 'role="status"' in done.text and "Notes App" not in done.text
    assert list(revoke_forms(done)) != [grant_id] and len(revoke_forms(done)) == 1
    assert (await client.call_mcp(tokens["access_token"])).status == 401
    refreshed = await client.refresh(app, tokens["refresh_token"])
    assert refreshed.status == 400 and refreshed.json()["error"] == "invalid_grant"

    # The consent is forgotten: the next authorization asks again.
    again = client.browser()
    params = client.authorize_params(app["client_id"], REDIRECT, Pkce.new())
    answer = await again.sign_in(await again.authorize(params))
    assert answer.status == 200 and "decision" in dict(answer.form().buttons)

    # Revoking it a second time changes nothing and says nothing.
    twice = await browser.go("POST", "/account/revoke", data=forms[grant_id])
    assert twice.status == 200 and twice.url.endswith("/account")


async def test_another_users_grant_cannot_be_revoked(
    client: OauthdClient, app: dict[str, Any]
) -> None:
    bob = client.browser()
    pkce = Pkce.new()
    params = client.authorize_params(app["client_id"], REDIRECT, pkce)
    consent = await bob.sign_in(await bob.authorize(params), OTHER_USER, OTHER_PASSWORD)
    code = (await bob.decide(consent)).redirect_query()["code"]
    answer = await client.token(
        grant_type="authorization_code",
        code=code,
        code_verifier=pkce.verifier,
        redirect_uri=REDIRECT,
        resource=client.resource,
        client_id=app["client_id"],
    )
    bobs_token = answer.json()["access_token"]

    browser, page = await signed_in(client)
    assert revoke_forms(page) == {}
    assert "No apps are connected to your account." in page.text
    fields = {**page.form().fields, "grant": bobs_token.split(".")[0]}
    done = await browser.go("POST", "/account/revoke", data=fields)
    assert done.status == 200 and not done.url.endswith("revoked=1")
    assert (await client.call_mcp(bobs_token)).status != 401


@pytest.mark.parametrize("csrf", [None, "", "forged"])
async def test_revoke_needs_the_sessions_csrf_token(
    client: OauthdClient, app: dict[str, Any], csrf: str | None
) -> None:
    tokens = await client.tokens(app)
    browser, page = await signed_in(client)
    (fields,) = revoke_forms(page).values()
    data = dict(fields)
    if csrf is None:
        del data["csrf_token"]
    else:
        data["csrf_token"] = csrf
    refused = await browser.request("POST", "/account/revoke", data=data)
    assert refused.status == 403 and refused.is_page
    assert (await client.call_mcp(tokens["access_token"])).status != 401


async def test_csrf_tokens_of_the_login_or_an_earlier_session_do_not_revoke(
    client: OauthdClient, app: dict[str, Any]
) -> None:
    tokens = await client.tokens(app)
    browser = client.browser()
    login = await browser.go("GET", "/account")
    page = await browser.submit(login, username=USER, password=PASSWORD)
    (fields,) = revoke_forms(page).values()
    data = {**fields, "csrf_token": login.form().fields["csrf_token"]}
    assert (await browser.request("POST", "/account/revoke", data=data)).status == 403
    out = await browser.go("POST", "/account/logout", data=logout_form(page))
    assert (await browser.submit(out, username=USER, password=PASSWORD)).status == 200
    assert (await browser.request("POST", "/account/revoke", data=fields)).status == 403
    assert (await client.call_mcp(tokens["access_token"])).status != 401


async def test_revoke_without_a_session(client: OauthdClient, app: dict[str, Any]) -> None:
    await client.tokens(app)
    _, page = await signed_in(client)
    (fields,) = revoke_forms(page).values()
    stranger = client.browser()
    await stranger.go("GET", "/account")
    refused = await stranger.request("POST", "/account/revoke", data=fields)
    assert refused.status == 403 and refused.is_page and "Sign in again" in refused.text


async def test_wrong_password_and_rate_limit(oauthd: Running) -> None:
    browser = oauthd.client.browser()
    login = await browser.go("GET", "/account")
    for _ in range(oauthd.config.login.max_failures):
        page = await browser.submit(login, username=USER, password="wrong")
        assert page.status == 401 and 'role="alert"' in page.text
        assert "Wrong username or password." in page.text
        assert page.form().action == "/account/login"
    blocked = await browser.submit(login, username=USER, password=PASSWORD)
    assert blocked.status == 429 and "Too many failed sign-ins" in blocked.text
    assert blocked.headers["Retry-After"] == str(int(oauthd.config.login.failure_window))


async def test_login_without_a_valid_csrf_token(oauthd: Running) -> None:
    browser = oauthd.client.browser()
    login = await browser.go("GET", "/account")
    data = {**login.form().fields, "csrf_token": "forged", "username": USER, "password": PASSWORD}
    refused = await browser.request("POST", "/account/login", data=data)
    assert refused.status == 403 and not refused.cookies_set()
    metrics = await oauthd.client.call("GET", "/metrics")
    assert 'endpoint="/account/login",error="invalid_request",reason="csrf_failed"' in metrics.text


def _session_cookie(answer: Answer) -> SimpleCookie:
    cookie = SimpleCookie()
    for header in answer.cookies_set():
        cookie.load(header)
    return cookie


async def test_session_cookie_on_http(oauthd: Running) -> None:
    browser = oauthd.client.browser()
    login = await browser.go("GET", "/account")
    data = {**login.form().fields, "username": USER, "password": PASSWORD}
    answer = await browser.request("POST", "/account/login", data=data)
    assert answer.status == 303 and answer.location == "/account"
    morsel = _session_cookie(answer)["oauthd_account"]
    assert morsel["httponly"] and morsel["samesite"] == "Lax" and morsel["path"] == "/"
    assert not morsel["secure"] and not morsel["domain"]
    assert morsel["max-age"] == str(int(SESSION_TTL))


async def test_session_cookie_with_an_https_issuer(start_oauthd: Start) -> None:
    oauthd = await start_oauthd(issuer="https://auth.example")
    client = oauthd.client
    first = await client.call("GET", "/account")
    binding = _session_cookie(first)["__Host-oauthd_browser"].value
    cookie = {"Cookie": f"__Host-oauthd_browser={binding}"}
    fields = parse_forms(first.text)[0].fields
    data = {**fields, "username": USER, "password": PASSWORD}
    answer = await client.call("POST", "/account/login", data=data, headers=cookie)
    assert answer.status == 303, answer.text
    morsel = _session_cookie(answer)["__Host-oauthd_account"]
    assert morsel["secure"] and morsel["httponly"] and morsel["samesite"] == "Lax"
    assert morsel["path"] == "/" and not morsel["domain"]
    session = {"Cookie": f"{cookie['Cookie']}; __Host-oauthd_account={morsel.value}"}
    page = await client.call("GET", "/account", headers=session)
    assert "Connected apps" in page.text and USER in page.text


async def test_session_expires(oauthd: Running) -> None:
    browser, _ = await signed_in(oauthd.client)
    oauthd.clock.advance(SESSION_TTL - 5)
    assert "Connected apps" in (await browser.go("GET", "/account")).text
    oauthd.clock.advance(10)
    page = await browser.go("GET", "/account")
    assert page.form().action == "/account/login"


async def test_sign_out_ends_the_session_even_for_a_copied_cookie(oauthd: Running) -> None:
    browser, page = await signed_in(oauthd.client)
    (value,) = [m.value for m in browser.jar if m.key == "oauthd_account"]
    copy = oauthd.client.browser()
    copy.jar.update_cookies({"oauthd_account": value})
    assert "Connected apps" in (await copy.go("GET", "/account")).text  # the copy works
    out = await browser.go("POST", "/account/logout", data=logout_form(page))
    assert out.status == 200 and out.form().action == "/account/login"
    assert not [m for m in browser.jar if m.key == "oauthd_account"]
    replay = oauthd.client.browser()
    replay.jar.update_cookies({"oauthd_account": value})
    assert (await replay.go("GET", "/account")).form().action == "/account/login"


@pytest.mark.parametrize("change", ["key", "secret", "shape"])
async def test_a_tampered_session_cookie_is_ignored(oauthd: Running, change: str) -> None:
    browser, _ = await signed_in(oauthd.client)
    (value,) = [m.value for m in browser.jar if m.key == "oauthd_account"]
    key, secret = value.split(".")
    copy = oauthd.client.browser()
    copy.jar.update_cookies({"oauthd_account": value})
    assert "Connected apps" in (await copy.go("GET", "/account")).text  # the copy works
    if change == "key":
        forged = f"{key[:-2]}{'AA' if key[-2:] != 'AA' else 'BB'}.{secret}"
    elif change == "secret":
        forged = f"{key}.{secret[:-2]}{'AA' if secret[-2:] != 'AA' else 'BB'}"
    else:
        forged = f"{key}.{secret}.{secret}"
    other = oauthd.client.browser()
    other.jar.update_cookies({"oauthd_account": forged})
    assert (await other.go("GET", "/account")).form().action == "/account/login"


async def test_only_a_digest_of_the_session_secret_is_stored(oauthd: Running) -> None:
    browser, _ = await signed_in(oauthd.client)
    (value,) = [m.value for m in browser.jar if m.key == "oauthd_account"]
    key, secret = value.split(".")
    (session,) = [s async for s in oauthd.store.account_sessions.scan()]
    assert session.session_key == key and session.user == USER
    assert secret.encode() not in repr(session).encode() and len(session.secret_hash) == 32
    assert session.expires_at == oauthd.clock.now() + SESSION_TTL


async def test_the_session_survives_a_restart(oauthd: Running) -> None:
    """Sessions live in the store (the file backend here): a restart keeps them, and a
    sign-out after it still ends them."""
    browser, _ = await signed_in(oauthd.client)
    await oauthd.restart()
    page = await browser.go("GET", "/account")
    assert "Connected apps" in page.text and f"<strong>{USER}</strong>" in page.text
    out = await browser.go("POST", "/account/logout", data=logout_form(page))
    assert out.form().action == "/account/login"
    assert await oauthd.store.account_sessions.count() == 0


async def test_expired_sessions_are_purged(oauthd: Running) -> None:
    await signed_in(oauthd.client)
    assert await oauthd.store.account_sessions.count() == 1
    oauthd.clock.advance(SESSION_TTL)
    assert await oauthd.store.purge_expired() >= 1
    assert await oauthd.store.account_sessions.count() == 0


async def test_account_pages_are_pages(oauthd: Running) -> None:
    """Framing and caching headers (checked by the harness on every page), no referrer."""
    _, page = await signed_in(oauthd.client)
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert "form-action 'self';" in page.headers["Content-Security-Policy"]


async def test_a_user_removed_from_the_config_is_signed_out(oauthd: Running) -> None:
    browser, _ = await signed_in(oauthd.client)
    auth = oauthd.server.app[AUTH]
    auth.users = Users([u for u in oauthd.config.login.users if u.username != USER])
    assert (await browser.go("GET", "/account")).form().action == "/account/login"
