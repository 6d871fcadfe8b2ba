"""Fetching the public keys of others: JWKS documents of trusted issuers (workload
identity, enterprise IdPs) and of private_key_jwt clients registered with a `jwks_uri`,
and OpenID Provider metadata to discover an issuer's `jwks_uri`. Implements the
protocol's `KeySetSource` (`oauthd.oauth.assertions`).

The guard against server-side request forgery is the host allowlist: only hosts that the
operator configured (a trusted issuer's, or a client's `jwks_uri` set with `oauthd clients
add`) are ever fetched from, over https (plain http only to a loopback host, for a
platform's local endpoint and for tests). Such a host may sit on a private network (a
cluster's API server), so no address policy applies beyond the allowlist: the operator
named it. No redirects, a time limit, a body cap, JSON only.

A document is cached as long as its cache headers say (within bounds: `freshness.py`).
A `kid` that the cached set does not have triggers one fetch again, at most once per
`refresh_interval` per URL: a key rotation at the issuer is picked up at once, a stream
of made-up kids is not a stream of fetches. One fetch in flight per URL; while a fetch
fails, the last good set is used until it is `max_ttl` older than its expiry."""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import aiohttp
import orjson
from joserfc.jwk import KeySet
from yarl import URL

from oauthd.oauth import KeysUnavailable, has_kid, import_key_set
from oauthd.outbound.freshness import expiry_from_headers
from oauthd.outbound.session import fetch_session

log = logging.getLogger("oauthd.jwks")

MAX_BODY = 64 * 1024
TIMEOUT = 5.0
MIN_TTL = 60.0
MAX_TTL = 24 * 3600.0
REFRESH_INTERVAL = 60.0  # at most one fetch per URL this often for an unknown kid
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "[::1]", "localhost"})
_HEADERS = {
    "Accept": "application/json, application/jwk-set+json",
    "Accept-Encoding": "identity",
    "User-Agent": "oauthd (key fetcher)",
}


@dataclass(slots=True)
class _Cached:
    document: dict[str, object]
    keys: KeySet | None  # None for a metadata document
    fetched_at: float
    expires_at: float


def host_of(url: str) -> str:
    """The lower-case host of `url` ("" if it has none), as the allowlist holds it."""
    try:
        return (URL(url).raw_host or "").lower()
    except ValueError:
        return ""


class JwksFetcher:
    """`allowed_hosts`: the hosts that may be fetched from (more can be `permit`ted while
    serving, for a client registered with a `jwks_uri`). `close()` is final."""

    def __init__(
        self,
        allowed_hosts: Iterable[str] = (),
        *,
        clock: Callable[[], float] = time.time,
        timeout: float = TIMEOUT,
        refresh_interval: float = REFRESH_INTERVAL,
        min_ttl: float = MIN_TTL,
        max_ttl: float = MAX_TTL,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        self._allowed = {h.lower() for h in allowed_hosts}
        self._clock = clock
        self._timeout = timeout
        self._refresh_interval = refresh_interval
        self._ttl = (min_ttl, max_ttl)
        self._ssl: ssl_module.SSLContext | bool = True if ssl is None else ssl
        self._cache: dict[str, _Cached] = {}
        self._in_flight: dict[str, asyncio.Task[_Cached]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def permit(self, url: str) -> None:
        """Allow fetching from `url`'s host from now on (an operator registered it)."""
        host = host_of(url)
        if host:
            self._allowed.add(host)

    async def key_set(self, url: str, *, kid: str | None = None) -> KeySet:
        now = self._clock()
        cached = self._cache.get(url)
        if cached is not None and cached.keys is not None:
            fresh = now < cached.expires_at
            if fresh and has_kid(cached.keys, kid):
                return cached.keys
            if fresh and now - cached.fetched_at < self._refresh_interval:
                return cached.keys  # an unknown kid, fetched again only so often
        entry = await self._fetch_or_stale(url, jwks=True)
        assert entry.keys is not None
        return entry.keys

    async def discovered_jwks_uri(self, issuer: str) -> str:
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        cached = self._cache.get(url)
        if cached is None or self._clock() >= cached.expires_at:
            cached = await self._fetch_or_stale(url, jwks=False)
        document = cached.document
        if document.get("issuer") != issuer:
            raise KeysUnavailable(f"the OpenID configuration at {url} names another issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise KeysUnavailable(f"the OpenID configuration at {url} has no jwks_uri")
        return jwks_uri

    async def _fetch_or_stale(self, url: str, *, jwks: bool) -> _Cached:
        """A fresh fetch; when it fails, the cached entry while it is not too old."""
        try:
            return await self._fetch_shared(url, jwks=jwks)
        except KeysUnavailable:
            cached = self._cache.get(url)
            if cached is not None and self._clock() < cached.expires_at + self._ttl[1]:
                return cached
            raise

    async def _fetch_shared(self, url: str, *, jwks: bool) -> _Cached:
        task = self._in_flight.get(url)
        if task is None:
            task = asyncio.create_task(self._fetch(url, jwks=jwks), name="jwks-fetch")
            self._in_flight[url] = task
            task.add_done_callback(lambda done: self._settled(url, done))
        return await asyncio.shield(task)

    def _settled(self, url: str, task: asyncio.Task[_Cached]) -> None:
        if self._in_flight.get(url) is task:
            del self._in_flight[url]
        if not task.cancelled() and task.exception() is None:
            self._cache[url] = task.result()

    def _check_url(self, url: str) -> URL:
        try:
            parsed = URL(url)
            host = (parsed.raw_host or "").lower()
        except ValueError:
            raise KeysUnavailable(f"{url!r} is not a valid URL") from None
        if parsed.scheme != "https" and not (parsed.scheme == "http" and host in _LOOPBACK_HOSTS):
            raise KeysUnavailable(f"{url} must be an https URL")
        if parsed.raw_user is not None or parsed.raw_password is not None:
            raise KeysUnavailable(f"{url} must not contain a user name or password")
        if host not in self._allowed:
            raise KeysUnavailable(f"keys are not fetched from {host or url}: not a configured host")
        return parsed

    async def _fetch(self, url: str, *, jwks: bool) -> _Cached:
        target = self._check_url(url)
        session = self._open_session()
        try:
            async with asyncio.timeout(self._timeout):
                async with session.get(target, allow_redirects=False) as response:
                    if response.status != 200:
                        raise KeysUnavailable(f"HTTP {response.status} from {url}")
                    body = await response.content.read(MAX_BODY + 1)
                    if len(body) > MAX_BODY:
                        raise KeysUnavailable(f"{url} sent more than {MAX_BODY} bytes")
                    fetched_at = self._clock()
                    expires_at = expiry_from_headers(
                        response.headers, fetched_at, min_ttl=self._ttl[0], max_ttl=self._ttl[1]
                    )
        except KeysUnavailable:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            log.info(
                "key fetch failed",
                extra={"event": "jwks.failed", "url": url, "error": repr(exc)},
            )
            raise KeysUnavailable(f"cannot fetch {url} ({type(exc).__name__})") from None
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise KeysUnavailable(f"{url} did not send JSON") from None
        if not isinstance(document, dict):
            raise KeysUnavailable(f"{url} did not send a JSON object")
        keys = import_key_set(document) if jwks else None
        return _Cached(document, keys, fetched_at, max(expires_at, fetched_at))

    def _open_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise KeysUnavailable("the key fetcher is closed")
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=10, ssl=self._ssl)
            self._session = fetch_session(connector, _HEADERS, self._timeout)
        return self._session

    async def close(self) -> None:
        self._closed = True
        in_flight = list(self._in_flight.values())
        for task in in_flight:
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
