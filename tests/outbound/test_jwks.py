"""oauthd/outbound/jwks.py: JwksFetcher against a key server on 127.0.0.1
(tests.support.key_server), with a clock the test moves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from oauthd.oauth.assertions import KeysUnavailable
from oauthd.outbound.jwks import JwksFetcher
from tests.support.assertions import Signer
from tests.support.key_server import KeyServer, running_key_server


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def server() -> AsyncIterator[KeyServer]:
    async with running_key_server() as server:
        yield server


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def fetcher(clock: Clock) -> AsyncIterator[JwksFetcher]:
    fetcher = JwksFetcher(["127.0.0.1"], clock=clock)
    yield fetcher
    await fetcher.close()


def kids(keys: object) -> list[str | None]:
    return [k.kid for k in keys.keys]  # type: ignore[attr-defined]


async def test_a_jwks_is_cached_as_its_cache_control_says(
    server: KeyServer, fetcher: JwksFetcher, clock: Clock
) -> None:
    assert kids(await fetcher.key_set(server.jwks_uri)) == ["idp-1"]
    await fetcher.key_set(server.jwks_uri, kid="idp-1")
    assert server.hits["/jwks"] == 1
    clock.now += 301
    await fetcher.key_set(server.jwks_uri)
    assert server.hits["/jwks"] == 2


async def test_no_store_is_fetched_every_time(
    server: KeyServer, fetcher: JwksFetcher, clock: Clock
) -> None:
    server.headers = {"Cache-Control": "no-store"}
    await fetcher.key_set(server.jwks_uri)
    clock.now += 1
    await fetcher.key_set(server.jwks_uri)
    assert server.hits["/jwks"] == 2


async def test_an_unknown_kid_is_fetched_again_at_most_once_per_interval(
    server: KeyServer, fetcher: JwksFetcher, clock: Clock
) -> None:
    await fetcher.key_set(server.jwks_uri)
    for _ in range(5):  # a flood of made-up kids right after the fetch: no fetch
        assert kids(await fetcher.key_set(server.jwks_uri, kid="made-up")) == ["idp-1"]
    assert server.hits["/jwks"] == 1
    server.signers.append(Signer("idp-2"))  # the issuer rotates
    clock.now += 61
    assert kids(await fetcher.key_set(server.jwks_uri, kid="idp-2")) == ["idp-1", "idp-2"]
    await fetcher.key_set(server.jwks_uri, kid="still-made-up")
    assert server.hits["/jwks"] == 2


async def test_one_fetch_serves_concurrent_callers(server: KeyServer, fetcher: JwksFetcher) -> None:
    sets = await asyncio.gather(*(fetcher.key_set(server.jwks_uri) for _ in range(10)))
    assert server.hits["/jwks"] == 1 and all(kids(s) == ["idp-1"] for s in sets)


async def test_a_host_not_configured_is_never_fetched(server: KeyServer, clock: Clock) -> None:
    fetcher = JwksFetcher(["keys.example.com"], clock=clock)
    try:
        with pytest.raises(KeysUnavailable, match="not a configured host"):
            await fetcher.key_set(server.jwks_uri)
        assert server.hits["/jwks"] == 0
        fetcher.permit(server.jwks_uri)  # an operator registered it
        assert kids(await fetcher.key_set(server.jwks_uri)) == ["idp-1"]
    finally:
        await fetcher.close()


async def test_plain_http_only_to_a_loopback_host(clock: Clock) -> None:
    fetcher = JwksFetcher(["keys.example.com"], clock=clock)
    try:
        with pytest.raises(KeysUnavailable, match="must be an https URL"):
            await fetcher.key_set("http://keys.example.com/jwks")
        with pytest.raises(KeysUnavailable, match="user name or password"):
            await fetcher.key_set("https://u:p@keys.example.com/jwks")
    finally:
        await fetcher.close()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>nope</html>", "did not send JSON"),
        (b"[1, 2]", "did not send a JSON object"),
        (b'{"keys": []}', "holds no signing key"),
        (b'{"issuer": "x"}', 'with a "keys" array'),
    ],
)
async def test_a_document_without_keys_is_refused(
    server: KeyServer, fetcher: JwksFetcher, body: bytes, message: str
) -> None:
    server.body = body
    with pytest.raises(KeysUnavailable, match=message):
        await fetcher.key_set(server.jwks_uri)


async def test_an_http_error_is_refused(server: KeyServer, fetcher: JwksFetcher) -> None:
    server.status = 404
    with pytest.raises(KeysUnavailable, match="HTTP 404"):
        await fetcher.key_set(server.jwks_uri)


async def test_the_last_good_set_serves_while_fetches_fail(
    server: KeyServer, fetcher: JwksFetcher, clock: Clock
) -> None:
    await fetcher.key_set(server.jwks_uri)
    server.status = 503
    clock.now += 301  # stale
    assert kids(await fetcher.key_set(server.jwks_uri)) == ["idp-1"]
    assert server.hits["/jwks"] == 2
    clock.now += 24 * 3600  # more than max_ttl past its expiry: no longer
    with pytest.raises(KeysUnavailable, match="HTTP 503"):
        await fetcher.key_set(server.jwks_uri)


async def test_discovery_finds_the_jwks_uri(server: KeyServer, fetcher: JwksFetcher) -> None:
    assert await fetcher.discovered_jwks_uri(server.issuer) == server.jwks_uri
    await fetcher.discovered_jwks_uri(server.issuer)
    assert server.hits["/.well-known/openid-configuration"] == 1


async def test_discovery_naming_another_issuer_is_refused(
    server: KeyServer, fetcher: JwksFetcher
) -> None:
    server.discovery_issuer = "https://impostor.example"
    with pytest.raises(KeysUnavailable, match="names another issuer"):
        await fetcher.discovered_jwks_uri(server.issuer)


async def test_a_closed_fetcher_fetches_nothing(server: KeyServer, clock: Clock) -> None:
    fetcher = JwksFetcher(["127.0.0.1"], clock=clock)
    await fetcher.close()
    with pytest.raises(KeysUnavailable, match="closed"):
        await fetcher.key_set(server.jwks_uri)
