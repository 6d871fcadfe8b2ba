"""What crosses the proxy, without a server: the query string passed upstream."""

from __future__ import annotations

import pytest
from yarl import URL

from oauthd.proxy.headers import upstream_url

BASE = URL("http://127.0.0.1:9000/mcp")


@pytest.mark.parametrize(
    ("raw_query", "expected"),
    [
        ("", "http://127.0.0.1:9000/mcp"),
        ("access_token=secret", "http://127.0.0.1:9000/mcp"),
        ("a=1&access_token=secret&&b", "http://127.0.0.1:9000/mcp?a=1&b"),
        ("q=two%20words&flag", "http://127.0.0.1:9000/mcp?q=two%20words&flag"),
        ("access_token_hint=x", "http://127.0.0.1:9000/mcp?access_token_hint=x"),
    ],
)
def test_the_query_goes_as_sent_less_any_access_token(raw_query: str, expected: str) -> None:
    assert str(upstream_url(BASE, raw_query)) == expected


def test_the_upstreams_own_query_comes_first() -> None:
    base = URL("http://127.0.0.1:9000/mcp?tenant=a")
    assert str(upstream_url(base, "x=1")) == "http://127.0.0.1:9000/mcp?tenant=a&x=1"
    assert upstream_url(base, "access_token=t") is base
