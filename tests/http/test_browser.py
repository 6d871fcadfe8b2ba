"""The browser side's defences: CSRF tokens, flows bound to the browser that started them,
framing headers on every page, cookie attributes, and login rate limits."""

from __future__ import annotations

from http.cookies import SimpleCookie
from typing import Any

import pytest

from tests.support.app import Running, Start
from tests.support.browser import Answer, Browser, check_page_headers
from tests.support.configs import PASSWORD, USER
from tests.support.http_client import OauthdClient, Pkce

REDIRECT = "http://127.0.0.1:43123/callback"


@pytest.fixture
async def app(client: OauthdClient) -> dict[str, Any]:
    return await client.register_public(client_name="App")


async def login_page(client: OauthdClient, app: dict[str, Any], browser: Browser) -> Answer:
    params = client.authorize_params(app["client_id"], REDIRECT, Pkce.new())
    page = await browser.authorize(params)
    assert page.status == 200 and "username" in page.form().fields
    return page


def assert_refused(answer: Answer, status: int = 403) -> None:
    assert answer.status == status, (answer.status, answer.text[:300])
    assert answer.is_page
    assert "Location" not in answer.headers
    assert "Traceback" not in answer.text


# -- CSRF ------------------------------------------------------------------------------------


CROSS_ORIGIN = [
    {"Origin": "https://evil.example"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Origin": "null", "Sec-Fetch-Site": "cross-site"},  # a sandboxed frame elsewhere
    {"Origin": "http://127.0.0.1:1"},  # same host, other port: another origin
    {"Origin": "HTTPS://127.0.0.1"},
    {"Referer": "https://evil.example/page"},
    {"Referer": "not a url"},
]


def _same_origin_headers(client: OauthdClient) -> list[dict[str, str]]:
    return [
        {},  # neither header (stripped by a privacy tool): the CSRF token decides
        {"Origin": client.issuer},
        {"Origin": "null", "Sec-Fetch-Site": "same-origin"},  # what browsers send us (no-referrer)
        {"Origin": "null"},
        {"Sec-Fetch-Site": "none"},
        {"Referer": client.issuer + "/login?request=x"},
        {"Origin": client.issuer, "Referer": "https://evil.example/"},  # Origin is what counts
    ]


@pytest.mark.parametrize(
    "headers", CROSS_ORIGIN, ids=lambda h: "-".join(f"{k}:{v}" for k, v in h.items())
)
async def test_cross_origin_login_and_consent_posts_are_refused_with_a_page(
    client: OauthdClient, app: dict[str, Any], headers: dict[str, str]
) -> None:
    """Defence in depth beside the CSRF token: the form is right, the origin is not."""
    browser = client.browser()
    page = await login_page(client, app, browser)
    data = {**page.form().fields, "username": USER, "password": PASSWORD}
    refused = await browser.request("POST", "/login", data=data, headers=headers)
    assert_refused(refused)
    assert "sent from another site" in refused.text
    consent = await browser.sign_in(page)  # the flow is intact
    data = {**consent.form().fields, "decision": "allow"}
    assert_refused(await browser.request("POST", "/consent", data=data, headers=headers))
    assert (await browser.decide(consent)).status == 303


async def test_same_origin_or_no_origin_posts_are_accepted(client: OauthdClient) -> None:
    for headers in _same_origin_headers(client):
        browser = client.browser()
        fresh = await client.register_public(client_name="Another app")  # asks for consent
        page = await login_page(client, fresh, browser)
        data = {**page.form().fields, "username": USER, "password": PASSWORD}
        consent = await browser.go("POST", "/login", data=data, headers=headers)
        assert consent.status == 200 and "decision" in dict(consent.form().buttons), headers
        data = {**consent.form().fields, "decision": "allow"}
        done = await browser.request("POST", "/consent", data=data, headers=headers)
        assert done.status == 303, (headers, done.text[:300])


@pytest.mark.parametrize("csrf", [None, "", "forged", "A" * 43])
async def test_login_without_a_valid_csrf_token(
    client: OauthdClient, app: dict[str, Any], csrf: str | None
) -> None:
    browser = client.browser()
    page = await login_page(client, app, browser)
    data = {**page.form().fields, "username": USER, "password": PASSWORD}
    if csrf is None:
        del data["csrf_token"]
    else:
        data["csrf_token"] = csrf
    assert_refused(await browser.request("POST", "/login", data=data))


@pytest.mark.parametrize("csrf", [None, "", "forged"])
async def test_consent_without_a_valid_csrf_token(
    client: OauthdClient, app: dict[str, Any], csrf: str | None
) -> None:
    browser = client.browser()
    consent = await browser.sign_in(await login_page(client, app, browser))
    data = {**consent.form().fields, "decision": "allow"}
    if csrf is None:
        del data["csrf_token"]
    else:
        data["csrf_token"] = csrf
    assert_refused(await browser.request("POST", "/consent", data=data))
    # The flow is intact: the real form still works.
    assert (await browser.decide(consent)).status == 303


async def test_csrf_token_of_one_flow_does_not_fit_another(
    client: OauthdClient, app: dict[str, Any]
) -> None:
    browser = client.browser()
    first = await login_page(client, app, browser)
    second = await login_page(client, app, browser)
    data = {
        **second.form().fields,
        "csrf_token": first.form().fields["csrf_token"],
        "username": USER,
        "password": PASSWORD,
    }
    assert_refused(await browser.request("POST", "/login", data=data))


@pytest.mark.parametrize("csrf", [None, "forged"])
async def test_device_page_without_a_valid_csrf_token(oauthd: Running, csrf: str | None) -> None:
    browser = oauthd.client.browser()
    page = await browser.go("GET", "/device")
    data = {**page.form().fields, "user_code": "BCDF-GHJK"}
    if csrf is None:
        del data["csrf_token"]
    else:
        data["csrf_token"] = csrf
    assert_refused(await browser.request("POST", "/device", data=data))


async def test_device_post_without_any_cookie(oauthd: Running) -> None:
    page = await oauthd.client.browser().go("GET", "/device")
    stranger = oauthd.client.browser()
    data = {**page.form().fields, "user_code": "BCDF-GHJK"}
    assert_refused(await stranger.request("POST", "/device", data=data))


# -- flows are bound to the browser that started them ---------------------------------------------


async def test_login_post_from_another_browser_is_refused(
    client: OauthdClient, app: dict[str, Any]
) -> None:
    victim = client.browser()
    page = await login_page(client, app, victim)
    attacker = client.browser()
    await attacker.go("GET", "/device")  # the attacker has a cookie of their own
    data = {**page.form().fields, "username": USER, "password": PASSWORD}
    assert_refused(await attacker.request("POST", "/login", data=data))
    assert_refused(await attacker.request("GET", f"/login?request={data['request']}"))
    assert_refused(await client.browser().request("POST", "/login", data=data))


async def test_consent_post_from_another_browser_is_refused(
    client: OauthdClient, app: dict[str, Any]
) -> None:
    victim = client.browser()
    consent = await victim.sign_in(await login_page(client, app, victim))
    attacker = client.browser()
    await login_page(client, app, attacker)  # a cookie of their own
    data = {**consent.form().fields, "decision": "allow"}
    assert_refused(await attacker.request("POST", "/consent", data=data))
    assert_refused(await attacker.request("GET", f"/consent?request={data['request']}"))
    assert (await victim.decide(consent)).status == 303


async def test_consent_before_login_is_refused(client: OauthdClient, app: dict[str, Any]) -> None:
    browser = client.browser()
    page = await login_page(client, app, browser)
    request = page.form().fields["request"]
    assert_refused(await browser.request("GET", f"/consent?request={request}"))
    data = {**page.form().fields, "decision": "allow"}
    assert_refused(await browser.request("POST", "/consent", data=data))


async def test_a_finished_request_cannot_be_replayed(
    client: OauthdClient, app: dict[str, Any]
) -> None:
    browser = client.browser()
    consent = await browser.sign_in(await login_page(client, app, browser))
    assert (await browser.decide(consent)).status == 303
    data = {**consent.form().fields, "decision": "allow"}
    assert_refused(await browser.request("POST", "/consent", data=data), 400)


async def test_decision_must_be_allow_or_deny(client: OauthdClient, app: dict[str, Any]) -> None:
    browser = client.browser()
    consent = await browser.sign_in(await login_page(client, app, browser))
    answer = await browser.request(
        "POST", "/consent", data={**consent.form().fields, "decision": "yes"}
    )
    assert_refused(answer, 400)


async def test_hostile_client_name_is_escaped(client: OauthdClient) -> None:
    app = await client.register_public(client_name='<script>alert("x")</script>')
    browser = client.browser()
    page = await login_page(client, app, browser)
    assert "<script>" not in page.text and "&lt;script&gt;" in page.text
    consent = await browser.sign_in(page)
    assert "<script>" not in consent.text and "&lt;script&gt;" in consent.text


# -- headers and cookies -------------------------------------------------------------------------


async def test_every_page_forbids_framing(oauthd: Running, app: dict[str, Any]) -> None:
    client = oauthd.client
    browser = client.browser()
    page = await login_page(client, app, browser)
    wrong = await browser.sign_in(page, password="wrong")
    consent = await browser.sign_in(page)
    await browser.decide(consent)
    await browser.authorize({"client_id": "unknown"})
    await browser.go("GET", "/device")
    await browser.request("GET", "/login?request=unknown")
    assert wrong.status == 401 and "username" in wrong.form().fields
    pages = [a for a in browser.history if a.is_page]
    assert len(pages) >= 6
    for answer in pages:
        check_page_headers(answer.headers)
    assert "form-action" in consent.headers["Content-Security-Policy"]
    assert "script-src" not in consent.headers["Content-Security-Policy"]
    assert "default-src 'none'" in consent.headers["Content-Security-Policy"]


def cookie_attributes(answer: Answer) -> dict[str, Any]:
    headers = answer.cookies_set()
    assert len(headers) == 1, headers
    cookie = SimpleCookie()
    cookie.load(headers[0])
    (name, morsel), *_ = cookie.items()
    raw = headers[0].lower()
    return {
        "name": name,
        "httponly": "httponly" in raw,
        "secure": "secure" in raw,
        "samesite": morsel["samesite"],
        "path": morsel["path"],
        "domain": morsel["domain"],
    }


async def _cookies_of_flow_starts(oauthd: Running) -> list[dict[str, Any]]:
    client = oauthd.client
    app = await client.register_public()
    params = client.authorize_params(app["client_id"], REDIRECT, Pkce.new())
    first = await client.browser().request("GET", "/authorize", params=params)
    assert first.status == 302
    device = await client.browser().request("GET", "/device")
    assert device.status == 200
    return [cookie_attributes(first), cookie_attributes(device)]


async def test_cookie_attributes_on_http(oauthd: Running) -> None:
    for cookie in await _cookies_of_flow_starts(oauthd):
        assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/"
        assert not cookie["domain"]
        assert not cookie["name"].startswith("__Host-")


async def test_cookie_attributes_with_an_https_issuer(start_oauthd: Start) -> None:
    oauthd = await start_oauthd(issuer="https://auth.example")
    for cookie in await _cookies_of_flow_starts(oauthd):
        assert cookie["name"].startswith("__Host-")
        assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Lax"
        assert cookie["path"] == "/" and not cookie["domain"]


async def test_existing_cookie_is_not_replaced(client: OauthdClient, app: dict[str, Any]) -> None:
    browser = client.browser()
    await login_page(client, app, browser)
    (value,) = browser.cookie_values()
    params = client.authorize_params(app["client_id"], REDIRECT, Pkce.new())
    again = await browser.request("GET", "/authorize", params=params)
    assert again.cookies_set() == []
    assert browser.cookie_values() == [value]


# -- login rate limits -----------------------------------------------------------------------


async def test_failed_logins_are_rate_limited_per_user(
    oauthd: Running, app: dict[str, Any]
) -> None:
    client = oauthd.client
    browser = client.browser()
    page = await login_page(client, app, browser)
    for _ in range(oauthd.config.login.max_failures):
        answer = await browser.sign_in(page, password="wrong")
        assert answer.status == 401
        assert "Wrong username or password" in answer.text
    blocked = await browser.sign_in(page)  # even the right password
    assert blocked.status == 429
    assert blocked.headers["Retry-After"] == str(int(oauthd.config.login.failure_window))
    assert "username" in blocked.form().fields
    oauthd.clock.advance(oauthd.config.login.failure_window + 1)
    page = await login_page(client, app, browser)  # the first request has expired meanwhile
    assert (await browser.sign_in(page)).status == 200


async def test_failed_logins_are_rate_limited_per_address(
    oauthd: Running, app: dict[str, Any]
) -> None:
    client = oauthd.client
    browser = client.browser()
    page = await login_page(client, app, browser)
    for i in range(oauthd.config.login.max_failures_per_address):
        answer = await browser.sign_in(page, username=f"user{i}", password="wrong")
        assert answer.status == 401
    assert (await browser.sign_in(page)).status == 429


async def test_unknown_user_and_wrong_password_look_the_same(
    client: OauthdClient, app: dict[str, Any]
) -> None:
    browser = client.browser()
    page = await login_page(client, app, browser)
    unknown = await browser.sign_in(page, username="mallory", password=PASSWORD)
    wrong = await browser.sign_in(page, password="wrong")
    assert unknown.status == wrong.status == 401
    assert unknown.text.replace("mallory", USER) == wrong.text


async def test_the_pages_carry_the_operators_service_name(start_oauthd: Start) -> None:
    oauthd = await start_oauthd(pages={"service_name": "Acme <MCP>"})
    browser = oauthd.client.browser()
    for path in ("/nothing/here", "/device"):
        answer = await browser.request("GET", path)
        assert answer.is_page
        assert "Acme &lt;MCP&gt; · oauthd</footer>" in answer.text
        assert "· Acme &lt;MCP&gt;</title>" in answer.text
