"""oauthd behind a real nginx (Debian's), configured as docs/operations.md says: with
`server.trusted_proxies` naming the proxy, each client behind it is limited on its own,
the audit lines name the client, a forged `X-Forwarded-For` buys nothing, /metrics is
not public through the proxy, and a flood of guesses for one user from many addresses
neither gets more guesses checked than documented nor locks out that user's own browser
(known-browser cookies) or anyone else."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.app import Running
from tests.support.browser import Browser
from tests.support.configs import OTHER_PASSWORD, OTHER_USER, PASSWORD, USER
from tests.support.http_client import Pkce
from tests.support.nginx import nginx_binary, running_nginx
from tests.support.ports import free_port


@pytest.fixture
async def behind_nginx(tmp_path: Path) -> AsyncIterator[tuple[Running, str]]:
    """oauthd trusting 127.0.0.1 (the address nginx connects from), and nginx's base URL,
    which is oauthd's issuer: the public URL browsers use (and send as `Origin`)."""
    nginx_binary()
    port = free_port()
    oauthd = await Running.start_in(
        tmp_path,
        issuer=f"http://127.0.0.1:{port}",
        server={"trusted_proxies": ("127.0.0.1/32",)},
    )
    try:
        async with running_nginx(tmp_path / "nginx", port, oauthd.config.server.listen.port):
            yield oauthd, f"http://127.0.0.1:{port}"
    finally:
        await oauthd.close()


async def client_from(base: str, source: str, **headers: str) -> Browser:
    """A browser that connects to `base` from the loopback address `source`."""
    browser = Browser(base)
    await browser.session.close()
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    browser.session = aiohttp.ClientSession(
        cookie_jar=browser.jar, connector=connector, headers=headers
    )
    return browser


async def fail_sign_ins(browser: Browser, count: int) -> list[int]:
    login = await browser.go("GET", "/account")
    statuses = []
    for i in range(count):
        page = await browser.submit(login, username=f"guess-{i}", password="wrong")
        statuses.append(page.status)
    return statuses


async def sign_in(browser: Browser) -> int:
    login = await browser.go("GET", "/account")
    page = await browser.submit(login, username=OTHER_USER, password=OTHER_PASSWORD)
    return page.status


async def test_clients_behind_nginx_are_limited_apart(
    behind_nginx: tuple[Running, str], caplog: pytest.LogCaptureFixture
) -> None:
    oauthd, base = behind_nginx
    per_address = oauthd.config.login.max_failures_per_address
    # mallory also writes X-Forwarded-For herself: nginx appends her real address after it
    mallory = await client_from(base, "127.0.0.2", **{"X-Forwarded-For": "127.0.0.9"})
    alice = await client_from(base, "127.0.0.3")
    try:
        with caplog.at_level(logging.INFO, logger="oauthd"):
            assert await fail_sign_ins(mallory, per_address) == [401] * per_address
            assert await fail_sign_ins(mallory, 1) == [429]
            assert await sign_in(alice) == 200  # behind the same nginx, not blocked
        addresses = {
            getattr(r, "address", None)
            for r in caplog.records
            if getattr(r, "event", "") == "audit.login"
        }
        assert addresses == {"127.0.0.2", "127.0.0.3"}, addresses
    finally:
        await mallory.close()
        await alice.close()


async def test_metrics_are_not_public_through_nginx(behind_nginx: tuple[Running, str]) -> None:
    _, base = behind_nginx
    outsider = await client_from(base, "127.0.0.2", **{"X-Forwarded-For": "127.0.0.1"})
    local = await client_from(base, "127.0.0.1")
    try:
        assert (await outsider.request("GET", "/metrics")).status == 403
        answer = await local.request("GET", "/metrics")
        assert answer.status == 200 and b"oauthd_" in answer.body
    finally:
        await outsider.close()
        await local.close()


REDIRECT = "http://127.0.0.1:43123/callback"
ATTACKERS = 50
GUESSES_EACH = 20  # 1,000 in all


async def sign_in_at_authorize(
    browser: Browser, params: dict[str, str], user: str, password: str
) -> int:
    page = await browser.go("GET", "/authorize", params=params)
    assert page.status == 200 and "username" in page.form().fields, page.text[:300]
    return (await browser.submit(page, username=user, password=password)).status


async def guess(attacker: Browser, guesses: int) -> list[tuple[int, str | None]]:
    """`guesses` wrong passwords for USER at /account's sign-in: (status, Retry-After)."""
    login = await attacker.go("GET", "/account")
    answers = []
    for i in range(guesses):
        page = await attacker.submit(login, username=USER, password=f"guess-{i}")
        answers.append((page.status, page.headers.get("Retry-After")))
    return answers


async def test_a_thousand_guesses_from_fifty_addresses_lock_out_no_known_browser(
    behind_nginx: tuple[Running, str],
) -> None:
    oauthd, base = behind_nginx
    app = await oauthd.client.register_public(client_name="App", redirect_uris=[REDIRECT])

    def params() -> dict[str, str]:
        return oauthd.client.authorize_params(app["client_id"], REDIRECT, Pkce.new())

    alice = await client_from(base, "127.0.0.3")  # her own browser, signed in before
    newcomer = await client_from(base, "127.0.0.4")  # alice on a browser she never used
    bob = await client_from(base, "127.0.0.5")
    attackers = [await client_from(base, f"127.0.1.{i + 1}") for i in range(ATTACKERS)]
    bob_on_an_attacker_address = await client_from(base, "127.0.1.1")
    try:
        assert await sign_in_at_authorize(alice, params(), USER, PASSWORD) == 200
        alice.forget_sign_in()  # her password again below (the known browser), no session
        started = time.monotonic()
        answers = [
            a
            for each in await asyncio.gather(*(guess(b, GUESSES_EACH) for b in attackers))
            for a in each
        ]
        elapsed = time.monotonic() - started
        assert len(answers) == ATTACKERS * GUESSES_EACH == 1000
        statuses = [status for status, _ in answers]
        # the documented bound: login.max_failures guesses checked per window, from any
        # number of addresses; every other one refused unchecked, with Retry-After
        assert statuses.count(401) == oauthd.config.login.max_failures == 5
        assert statuses.count(429) == 1000 - 5
        window = int(oauthd.config.login.failure_window)
        assert all(0 < int(r or 0) <= window for s, r in answers if s == 429)
        # the browser that signed in as alice before signs in at once, on both pages
        assert await sign_in_at_authorize(alice, params(), USER, PASSWORD) == 200
        alice.forget_sign_in()
        login = await alice.go("GET", "/account")
        assert (await alice.submit(login, username=USER, password=PASSWORD)).status == 200
        # an unknown browser is refused for alice, even with her password
        assert await sign_in_at_authorize(newcomer, params(), USER, PASSWORD) == 429
        # another user is never affected, from anywhere
        assert await sign_in_at_authorize(bob, params(), OTHER_USER, OTHER_PASSWORD) == 200
        on_attacker = await sign_in_at_authorize(
            bob_on_an_attacker_address, params(), OTHER_USER, OTHER_PASSWORD
        )
        assert on_attacker == 200
        print(f"1,000 guesses through nginx from {ATTACKERS} addresses: {elapsed:.1f}s")
    finally:
        for browser in (alice, newcomer, bob, bob_on_an_attacker_address, *attackers):
            await browser.close()
