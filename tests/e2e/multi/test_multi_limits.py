"""The abuse limits hold across instances (issue #11, item 3): two `oauthd serve` processes
on one Redis (and PostgreSQL) count in the shared backend, so a client switching
instances gets no more than the limit in all, and a browser known to one instance is known
to the other (the known-browser key derives from the shared `login.encryption_key`)."""

from __future__ import annotations

import itertools

import aiohttp
import pytest

from tests.e2e.multi.multi_stack import Cluster
from tests.support.browser import Answer, Browser
from tests.support.configs import INTEROP_PASSWORD, INTEROP_USER
from tests.support.daemon import OauthdProcess

pytestmark = pytest.mark.asyncio(loop_scope="module")

REGISTRATION = {
    "client_name": "Limits",
    "redirect_uris": ["http://127.0.0.1:43123/callback"],
    "token_endpoint_auth_method": "none",
}


def browser_from(instance: OauthdProcess, cluster: Cluster, source: str) -> Browser:
    """A browser at one instance, from the loopback address `source`, posting forms with
    the issuer's Origin (as it would behind the balancer)."""
    browser = Browser(instance.url, origin=cluster.issuer)
    browser.session = aiohttp.ClientSession(
        cookie_jar=browser.jar, connector=aiohttp.TCPConnector(local_addr=(source, 0))
    )
    return browser


async def account_sign_in(browser: Browser, password: str) -> Answer:
    login = await browser.go("GET", "/account")
    assert login.status == 200, login.text[:300]
    return await browser.submit(login, username=INTEROP_USER, password=password)


async def test_the_21st_registration_is_refused_on_whichever_instance(
    cluster: Cluster, limited_pair: list[OauthdProcess]
) -> None:
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as http:

        async def register(instance: OauthdProcess) -> tuple[int, str | None]:
            async with http.post(f"{instance.url}/register", json=REGISTRATION) as answer:
                return answer.status, answer.headers.get("Retry-After")

        turns = itertools.cycle(limited_pair)
        first = [await register(next(turns)) for _ in range(20)]
        assert [status for status, _ in first] == [201] * 20
        for instance in limited_pair:  # the 21st, and the 22nd, whichever instance
            status, retry_after = await register(instance)
            assert status == 429 and retry_after is not None and 1 <= int(retry_after) <= 60


async def test_sign_in_limits_and_known_browsers_across_instances(
    cluster: Cluster, limited_pair: list[OauthdProcess]
) -> None:
    first, second = limited_pair
    user_browser = browser_from(first, cluster, "127.0.0.4")
    strangers = [browser_from(i, cluster, "127.0.0.3") for i in (first, second)]
    on_second = browser_from(second, cluster, "127.0.0.4")
    try:
        assert (await account_sign_in(user_browser, INTEROP_PASSWORD)).status == 200
        on_second.jar.update_cookies(
            {m.key: m.value for m in user_browser.jar}, aiohttp.client.URL(second.url)
        )
        statuses = [
            (await account_sign_in(strangers[n % 2], f"guess-{n}")).status for n in range(8)
        ]
        assert statuses == [401] * 5 + [429] * 3  # login.max_failures over both instances
        for stranger in strangers:  # even the right password, from an unknown browser
            assert (await account_sign_in(stranger, INTEROP_PASSWORD)).status == 429
        # the user's browser, known to the first instance, is known to the second too
        assert (await account_sign_in(on_second, INTEROP_PASSWORD)).status == 200
    finally:
        for browser in (user_browser, on_second, *strangers):
            await browser.close()
