"""A path no route has: a styled page for a person; the bare 404 for API clients; a known
path with a method it lacks is still a 405."""

from __future__ import annotations

import pytest

from tests.support.app import Running


async def test_unknown_path_is_a_page(oauthd: Running) -> None:
    browser = oauthd.client.browser()  # checks the framing headers of every page
    answer = await browser.request("GET", "/nothing/here", headers={"Accept": "text/html"})
    assert answer.status == 404
    assert answer.is_page
    assert "Page not found" in answer.text
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
    assert "X-Request-Id" in answer.headers


@pytest.mark.parametrize(
    ("path", "accept"),
    [
        ("/nothing/here", "application/json"),
        ("/.well-known/nothing", "text/html"),
        ("/token/x", "*/*"),
        ("/register/x", "text/html"),
    ],
)
async def test_api_clients_keep_the_bare_404(oauthd: Running, path: str, accept: str) -> None:
    answer = await oauthd.client.browser().request("GET", path, headers={"Accept": accept})
    assert answer.status == 404
    assert not answer.is_page
    assert answer.text == "404: Not Found"


async def test_known_path_with_another_method_is_still_405(oauthd: Running) -> None:
    answer = await oauthd.client.browser().request("PUT", "/token")
    assert answer.status == 405
    assert answer.headers["Allow"] == "OPTIONS,POST"
