"""The device grant over HTTP (RFC 8628): /device_authorization, the /device page, login,
the approval page, polling; and user-code guessing."""

from __future__ import annotations

import re
from typing import Any

import pytest

from oauthd.oauth.device import USER_CODE_ALPHABET
from tests.support.app import Running
from tests.support.browser import Answer, Browser
from tests.support.http_client import OauthdClient, client_auth, user_code_as_typed

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@pytest.fixture
async def tv(client: OauthdClient) -> dict[str, Any]:
    return await client.register_public(
        client_name="Living-room TV",
        grant_types=["authorization_code", "refresh_token", DEVICE_GRANT],
    )


async def approval_page(browser: Browser, typed: str) -> Answer:
    """Type the code, sign in: the page that asks to allow the device."""
    login = await browser.enter_user_code(typed)
    assert login.status == 200 and "username" in login.form().fields, login.text
    page = await browser.sign_in(login)
    assert page.status == 200, page.text
    return page


def error_of(answer: Answer) -> str:
    assert answer.status == 400, (answer.status, answer.text)
    assert answer.headers["Cache-Control"] == "no-store"
    error: str = answer.json()["error"]
    return error


async def test_device_flow_end_to_end(oauthd: Running, tv: dict[str, Any]) -> None:
    client = oauthd.client
    answer = await client.call("POST", "/device_authorization", data=client_auth(tv))
    assert answer.status == 200
    assert answer.headers["Cache-Control"] == "no-store"
    started = answer.json()
    client.remember(started["device_code"])
    issuer = oauthd.config.server.issuer
    user_code = started["user_code"]
    assert re.fullmatch(f"[{USER_CODE_ALPHABET}]{{4}}-[{USER_CODE_ALPHABET}]{{4}}", user_code)
    assert started["verification_uri"] == f"{issuer}/device"
    assert started["verification_uri_complete"] == f"{issuer}/device?user_code={user_code}"
    assert started["expires_in"] == int(oauthd.config.tokens.device_ttl)
    assert started["interval"] >= 5

    assert error_of(await client.poll(tv, started["device_code"])) == "authorization_pending"

    browser = client.browser()
    page = await approval_page(browser, user_code_as_typed(user_code))
    assert user_code in page.text and "Living-room TV" in page.text
    done = await browser.decide(page)
    assert done.status == 200 and "Device connected" in done.text

    oauthd.clock.advance(started["interval"])
    tokens = await client.poll(tv, started["device_code"])
    assert tokens.status == 200, tokens.text
    assert tokens.headers["Cache-Control"] == "no-store"
    body = tokens.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0
    info = await client.introspect(body["access_token"], oauthd.introspection_secret)
    assert info["active"] and info["sub"] == "alice" and info["client_id"] == tv["client_id"]
    refreshed = await client.refresh(tv, body["refresh_token"])
    assert refreshed.status == 200
    # The device code is single use.
    assert error_of(await client.poll(tv, started["device_code"])) == "invalid_grant"


@pytest.mark.parametrize(
    "typing", [str.lower, str.upper, lambda c: c.replace("-", ""), lambda c: f" {c.lower()} "]
)
async def test_user_code_in_any_case_with_or_without_dash(
    oauthd: Running, tv: dict[str, Any], typing: Any
) -> None:
    started = await oauthd.client.start_device(tv)
    page = await approval_page(oauthd.client.browser(), typing(started["user_code"]))
    assert started["user_code"] in page.text


async def test_verification_uri_complete_prefills_the_code(
    oauthd: Running, tv: dict[str, Any]
) -> None:
    started = await oauthd.client.start_device(tv)
    browser = oauthd.client.browser()
    path = started["verification_uri_complete"].removeprefix(oauthd.config.server.issuer)
    page = await browser.go("GET", path)
    assert page.form().fields["user_code"] == started["user_code"]
    login = await browser.submit(page)
    assert "username" in login.form().fields


async def test_device_approval_is_asked_even_with_remembered_consent(
    oauthd: Running, tv: dict[str, Any]
) -> None:
    """A user code may have been sent by someone else (RFC 8628 s5.4): every device
    approval shows the code and asks, whatever was consented to before."""
    await oauthd.client.tokens(tv)  # alice consented to this client in a code flow
    started = await oauthd.client.start_device(tv)
    page = await approval_page(oauthd.client.browser(), started["user_code"])
    assert started["user_code"] in page.text
    assert {("decision", "allow"), ("decision", "deny")} == set(page.form().buttons)


async def test_denied_device(oauthd: Running, tv: dict[str, Any]) -> None:
    started = await oauthd.client.start_device(tv)
    browser = oauthd.client.browser()
    done = await browser.decide(await approval_page(browser, started["user_code"]), "deny")
    assert done.status == 200 and "Access denied" in done.text
    assert error_of(await oauthd.client.poll(tv, started["device_code"])) == "access_denied"


async def test_polling_too_fast_gets_slow_down(oauthd: Running, tv: dict[str, Any]) -> None:
    started = await oauthd.client.start_device(tv)
    assert error_of(await oauthd.client.poll(tv, started["device_code"])) == "authorization_pending"
    assert error_of(await oauthd.client.poll(tv, started["device_code"])) == "slow_down"
    oauthd.clock.advance(started["interval"] + 5)  # the interval grew by 5 s
    assert error_of(await oauthd.client.poll(tv, started["device_code"])) == "authorization_pending"


async def test_expired_device_code(oauthd: Running, tv: dict[str, Any]) -> None:
    started = await oauthd.client.start_device(tv)
    oauthd.clock.advance(started["expires_in"] + 1)
    assert error_of(await oauthd.client.poll(tv, started["device_code"])) == "expired_token"
    browser = oauthd.client.browser()
    page = await browser.enter_user_code(started["user_code"])
    assert page.status == 400 and "not valid or has expired" in page.text


async def test_device_code_of_another_client(oauthd: Running, tv: dict[str, Any]) -> None:
    other = await oauthd.client.register_public(grant_types=[DEVICE_GRANT])
    started = await oauthd.client.start_device(tv)
    assert error_of(await oauthd.client.poll(other, started["device_code"])) == "invalid_grant"


async def test_client_without_the_device_grant(oauthd: Running) -> None:
    app = await oauthd.client.register_public()
    answer = await oauthd.client.call("POST", "/device_authorization", data=client_auth(app))
    assert error_of(answer) == "unauthorized_client"


async def test_device_authorization_needs_a_known_client(oauthd: Running) -> None:
    answer = await oauthd.client.call("POST", "/device_authorization", data={"client_id": "nope"})
    assert (answer.status, answer.json()["error"]) == (401, "invalid_client")


async def test_user_code_guessing_is_rate_limited(oauthd: Running, tv: dict[str, Any]) -> None:
    started = await oauthd.client.start_device(tv)
    browser = oauthd.client.browser()
    limit = oauthd.config.oauth.device_guesses_per_minute
    guesses = ["BBBB-BBBB", "bcdf", "not a code", "ZZZZZZZZ", "AEIO-UAEI"]
    for i in range(limit):
        answer = await browser.enter_user_code(guesses[i % len(guesses)])
        assert answer.status == 400 and "not valid or has expired" in answer.text
    blocked = await browser.enter_user_code(started["user_code"])  # even the right one
    assert blocked.status == 429 and blocked.headers["Retry-After"] == "60"
    assert "Too many wrong codes" in blocked.text
    assert "user_code" in blocked.form().fields
    # Another browser from the same address is limited too.
    assert (await oauthd.client.browser().enter_user_code(started["user_code"])).status == 429
    oauthd.clock.advance(61)
    page = await approval_page(browser, started["user_code"])
    assert started["user_code"] in page.text


async def test_approval_page_says_a_registered_name_is_unverified(
    oauthd: Running, tv: dict[str, Any]
) -> None:
    """As on the consent page: a client registered by itself (DCR) chose its own name."""
    started = await oauthd.client.start_device(tv)
    page = await approval_page(oauthd.client.browser(), started["user_code"])
    assert "Its name was supplied by the app itself" in page.text


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/device", "user_code=AAAA-AAAA&user_code=BBBB-BBBB", 400),  # a repeated field
        ("/device", "user_code=" + "A" * 70_000, 413),  # over the form limit
        ("/login", "request=x&request=y", 400),
        ("/consent", "request=x&request=y", 400),
    ],
)
async def test_form_and_size_errors_are_pages(
    oauthd: Running, path: str, body: str, status: int
) -> None:
    browser = oauthd.client.browser()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    answer = await browser.request("POST", path, data=body, headers=headers)
    assert answer.status == status, answer.text[:300]
    assert answer.is_page, answer.content_type
    assert "Traceback" not in answer.text
