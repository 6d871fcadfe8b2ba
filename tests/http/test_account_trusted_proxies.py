"""Behind a trusted reverse proxy (`server.trusted_proxies`), the sign-in limits count per
client, as the proxy reports it, not per proxy: one client's failures do not block another.
Without the setting the proxy's headers are ignored (anyone could write them)."""

from __future__ import annotations

import aiohttp

from tests.support.app import Running, Start
from tests.support.browser import Browser
from tests.support.configs import OTHER_PASSWORD, OTHER_USER

LOOPBACK = ("127.0.0.0/8", "::1/128")


async def behind_proxy(oauthd: Running, client: str) -> Browser:
    """A browser whose requests reach oauthd through a proxy that names `client`."""
    browser = oauthd.client.browser()
    await browser.session.close()
    browser.session = aiohttp.ClientSession(
        cookie_jar=browser.jar, headers={"X-Forwarded-For": f"198.51.100.200, {client}"}
    )
    return browser


async def fail_sign_ins(browser: Browser, count: int) -> int:
    """`count` wrong passwords, each under another username; the last status."""
    login = await browser.go("GET", "/account")
    status = 0
    for i in range(count):
        page = await browser.submit(login, username=f"nobody-{i}", password="wrong")
        status = page.status
    return status


async def sign_in(browser: Browser) -> int:
    login = await browser.go("GET", "/account")
    page = await browser.submit(login, username=OTHER_USER, password=OTHER_PASSWORD)
    return page.status


async def test_two_clients_behind_a_trusted_proxy_are_limited_apart(
    start_oauthd: Start,
) -> None:
    oauthd = await start_oauthd(server={"trusted_proxies": LOOPBACK})
    per_address = oauthd.config.login.max_failures_per_address
    mallory = await behind_proxy(oauthd, "203.0.113.1")
    alice = await behind_proxy(oauthd, "203.0.113.2")
    try:
        assert await fail_sign_ins(mallory, per_address) == 401
        assert await fail_sign_ins(mallory, 1) == 429  # mallory's address is now blocked
        assert await sign_in(alice) == 200  # alice, behind the same proxy, is not
    finally:
        await mallory.close()
        await alice.close()


async def test_without_trusted_proxies_the_forwarded_address_is_ignored(
    start_oauthd: Start,
) -> None:
    oauthd = await start_oauthd()
    per_address = oauthd.config.login.max_failures_per_address
    mallory = await behind_proxy(oauthd, "203.0.113.1")
    alice = await behind_proxy(oauthd, "203.0.113.2")
    try:
        assert await fail_sign_ins(mallory, per_address) == 401
        assert await sign_in(alice) == 429  # one peer, one address: a forged header is no escape
    finally:
        await mallory.close()
        await alice.close()
