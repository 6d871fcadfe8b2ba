"""oauthd behind a real nginx (Debian's), configured as docs/operations.md says: with
`server.trusted_proxies` naming the proxy, each client behind it is limited on its own,
the audit lines name the client, a forged `X-Forwarded-For` buys nothing, and /metrics is
not public through the proxy."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.app import Running
from tests.support.browser import Browser
from tests.support.configs import OTHER_PASSWORD, OTHER_USER
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
    per_address = oauthd.config.login.max_failures * 4
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
