"""The HTTP session of a fetcher of others' documents (metadata documents, JWKS): the same
rules for every one of them."""

from __future__ import annotations

import aiohttp


def fetch_session(
    connector: aiohttp.TCPConnector, headers: dict[str, str], timeout: float
) -> aiohttp.ClientSession:
    """No decompression (a compressed body would defeat the size cap), no cookies (no state
    between fetches), never an environment proxy (it would resolve names for us), a total
    time limit."""
    return aiohttp.ClientSession(
        connector=connector,
        headers=headers,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        timeout=aiohttp.ClientTimeout(total=timeout),
    )
