"""Fetching Client ID Metadata Documents: a client_id that is an https URL names its own
metadata document (draft-ietf-oauth-client-id-metadata-document; MCP "Client ID Metadata
Documents").

The fetch is an SSRF surface: anyone can make oauthd request a URL of their choosing. So:
- only `https` URLs with a host and a path, no userinfo, no fragment, no dot segments;
- every address the host resolves to must pass the address policy (public only), or the
  fetch fails before any connection. The check sits in the resolver the connector uses, so
  the addresses checked are the ones connected to (no rebinding window); IP-literal hosts,
  which aiohttp never resolves, are checked with the URL;
- no redirects, a total time limit, a body cap, JSON content types only, no compression.

These are the transport's rules; what the document must contain is the protocol's
(`oauthd.oauth.clients.document_problem`). Every failure is a `ClientDocumentError` whose
reason is safe to show to the client (it becomes an `invalid_client` description):
resolved addresses are logged, never put in the reason.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import logging
import socket
import ssl as ssl_module
import time
from collections.abc import Callable
from datetime import UTC

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from multidict import MultiMapping
from yarl import URL

from oauthd.oauth import ClientDocumentError, FetchedDocument

log = logging.getLogger("oauthd.cimd")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressPolicy = Callable[[IPAddress], bool]

MAX_BODY = 16 * 1024
MAX_URL = 2000
TIMEOUT = 5.0
MIN_TTL = 60.0
MAX_TTL = 24 * 3600.0
DEFAULT_TTL = 3600.0
CONNECTIONS = 10

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_HEADERS = {
    "Accept": "application/json",
    "Accept-Encoding": "identity",  # a compressed body would defeat the size cap
    "User-Agent": "oauthd (client metadata fetcher)",
}


def is_public_address(addr: IPAddress) -> bool:
    """True for a globally routable unicast address. Addresses that embed an IPv4 address
    (IPv4-mapped, NAT64, 6to4) are judged by the address they lead to."""
    embedded = _embedded_ipv4(addr)
    if embedded is not None:
        return is_public_address(embedded)
    special = (
        addr.is_private
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_multicast  # 224/4 counts as is_global
        or addr.is_reserved
        or addr.is_unspecified
        or addr in _CGNAT
        or (isinstance(addr, ipaddress.IPv6Address) and addr.is_site_local)  # fec0::/10 too
    )
    return addr.is_global and not special


def _embedded_ipv4(addr: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(addr, ipaddress.IPv4Address):
        return None
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr.sixtofour


def check_client_id_url(client_id: str, policy: AddressPolicy = is_public_address) -> URL:
    """The URL to fetch for `client_id`, exactly as given; ClientDocumentError if it may
    not be fetched."""
    if len(client_id) > MAX_URL:
        raise ClientDocumentError(f"client_id is longer than {MAX_URL} characters")
    if not client_id.isascii() or any(c <= " " or c == "\x7f" for c in client_id):
        raise ClientDocumentError("client_id contains characters that are not allowed in a URL")
    try:
        url = URL(client_id, encoded=True)  # encoded: the request line carries it verbatim
        user, password, host, _ = url.raw_user, url.raw_password, url.raw_host, url.port
    except ValueError:  # yarl splits the authority lazily, on first access
        raise ClientDocumentError("client_id is not a valid URL") from None
    if url.scheme != "https":
        raise ClientDocumentError("client_id must be an https URL")
    if user is not None or password is not None:
        raise ClientDocumentError("client_id must not contain a user name or password")
    if "#" in client_id:
        raise ClientDocumentError("client_id must not contain a fragment")
    if not host:
        raise ClientDocumentError("client_id must have a host")
    if url.raw_path in ("", "/"):
        raise ClientDocumentError("client_id must have a path")
    if any(segment in (".", "..") for segment in url.path.split("/")):
        raise ClientDocumentError("client_id must not contain . or .. path segments")
    _check_literal_host(host, policy)
    return url


def _check_literal_host(host: str, policy: AddressPolicy) -> None:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        if _is_legacy_ipv4(host):
            raise ClientDocumentError(
                f"client_id host {host} is not a canonical IP address"
            ) from None
        return  # a name: the resolver checks what it resolves to
    if not policy(addr):
        raise ClientDocumentError(f"client_id host {host} is not a public address")


def _is_legacy_ipv4(host: str) -> bool:
    """`127.1`, `2130706433`, `0x7f.0.0.1`: forms `ipaddress` refuses but C resolvers
    turn into an address without asking DNS."""
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return True


class GuardedResolver(AbstractResolver):
    """Resolves with `inner` (the default resolver when None, then owned and closed here)
    and fails unless EVERY address passes `policy`: one bad address rejects the host."""

    def __init__(self, inner: AbstractResolver | None, policy: AddressPolicy) -> None:
        self._owned = inner is None
        self._inner = DefaultResolver() if inner is None else inner
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not results:
            raise ClientDocumentError(f"host {host} has no address")
        for result in results:
            if not self._allowed(result["host"]):
                log.warning(
                    "client metadata host resolves to a non-public address",
                    extra={"event": "cimd.blocked", "host": host, "address": result["host"]},
                )
                raise ClientDocumentError(f"host {host} resolves to a non-public address")
        return results

    def _allowed(self, address: str) -> bool:
        try:
            return self._policy(ipaddress.ip_address(address))
        except ValueError:
            return False

    async def close(self) -> None:
        if self._owned:
            await self._inner.close()


def expiry_from_headers(
    headers: MultiMapping[str],
    fetched_at: float,
    *,
    min_ttl: float = MIN_TTL,
    max_ttl: float = MAX_TTL,
    default_ttl: float = DEFAULT_TTL,
) -> float:
    """When a response fetched at `fetched_at` stops being fresh (RFC 9111 s4.2, private
    cache). `no-store`/`no-cache` give `fetched_at` (not cached); otherwise `max-age` (less
    `Age`) or else `Expires` (against `Date`), clamped to [min_ttl, max_ttl]; neither gives
    `default_ttl`. An unparsable value counts as already stale, so it gets `min_ttl`."""
    directives = _cache_directives(headers)
    if "no-store" in directives or "no-cache" in directives:
        return fetched_at
    lifetime = _lifetime(headers, directives, fetched_at)
    if lifetime is None:
        lifetime = default_ttl
    return fetched_at + min(max(lifetime, min_ttl), max_ttl)


def _cache_directives(headers: MultiMapping[str]) -> dict[str, str]:
    directives: dict[str, str] = {}
    for value in headers.getall("Cache-Control", []):
        for item in value.split(","):
            name, _, argument = item.strip().partition("=")
            directives.setdefault(name.strip().lower(), argument.strip().strip('"'))
    return directives


def _lifetime(
    headers: MultiMapping[str], directives: dict[str, str], fetched_at: float
) -> float | None:
    if "max-age" in directives:
        age = _seconds(headers.get("Age", "0")) or 0
        return (_seconds(directives["max-age"]) or 0) - age
    if "Expires" in headers:
        expires = _http_date(headers["Expires"])
        date = _http_date(headers.get("Date", "")) or fetched_at
        return 0 if expires is None else expires - date
    return None


def _seconds(value: str) -> int | None:
    return int(value) if value.isdigit() else None


def _http_date(value: str) -> float | None:
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _json_object(body: bytes) -> dict[str, object]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ClientDocumentError("document is not valid JSON") from None
    if not isinstance(document, dict):
        raise ClientDocumentError("document is not a JSON object")
    return document


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    length = response.content_length
    if length is not None and length > MAX_BODY:
        raise ClientDocumentError(
            f"document is larger than {MAX_BODY} bytes (Content-Length {length})"
        )
    body = bytearray()
    async for chunk in response.content.iter_chunked(4096):
        body += chunk
        if len(body) > MAX_BODY:
            raise ClientDocumentError(f"document is larger than {MAX_BODY} bytes")
    return bytes(body)


def _check_response(response: aiohttp.ClientResponse) -> None:
    if 300 <= response.status < 400:
        raise ClientDocumentError(f"redirects are not followed (HTTP {response.status})")
    if response.status != 200:
        raise ClientDocumentError(f"HTTP {response.status} from the client_id URL")
    if not _is_json(response.content_type):
        raise ClientDocumentError(f"Content-Type {response.content_type} is not JSON")
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise ClientDocumentError(f"Content-Encoding {encoding} is not accepted")


def _failure_reason(exc: BaseException, url: URL, timeout: float) -> str:
    where = f"{url.raw_host}:{url.port}"
    if isinstance(exc, TimeoutError):
        return f"no complete answer from {where} within {timeout:g} s"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve {url.raw_host}"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate of {where} is not trusted"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS handshake with {where} failed"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {where}"
    return f"fetch from {where} failed ({type(exc).__name__})"


class CimdFetcher:
    """Fetches and checks Client ID Metadata Documents over one shared `ClientSession`
    (created on first use, at most `CONNECTIONS` connections). `close()` is final.

    `resolver` replaces the DNS lookup (tests map names to chosen addresses); the address
    policy still judges whatever it returns. `ssl` replaces the system trust store (there is
    no way to turn verification off). `address_policy` defaults to `is_public_address`:
    only a test passes anything else."""

    def __init__(
        self,
        *,
        resolver: AbstractResolver | None = None,
        ssl: ssl_module.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
        timeout: float = TIMEOUT,
        min_ttl: float = MIN_TTL,
        max_ttl: float = MAX_TTL,
        address_policy: AddressPolicy = is_public_address,
    ) -> None:
        if not 0 <= min_ttl <= max_ttl or timeout <= 0:
            raise ValueError("need 0 <= min_ttl <= max_ttl and timeout > 0")
        self._inner_resolver = resolver
        self._ssl: ssl_module.SSLContext | bool = True if ssl is None else ssl
        self._clock = clock
        self._timeout = timeout
        self._ttl = (min_ttl, max_ttl)
        self._policy = address_policy
        self._session: aiohttp.ClientSession | None = None
        self._resolver: GuardedResolver | None = None
        self._closed = False

    async def fetch(self, client_id: str) -> FetchedDocument:
        """The JSON object at `client_id`; ClientDocumentError for every kind of failure."""
        url = check_client_id_url(client_id, self._policy)
        session = self._open_session()
        try:
            async with asyncio.timeout(self._timeout):
                return await self._get(session, url)
        except ClientDocumentError:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.info(
                "client metadata fetch failed",
                extra={"event": "cimd.failed", "client_id": client_id, "error": repr(exc)},
            )
            raise ClientDocumentError(_failure_reason(exc, url, self._timeout)) from None

    async def _get(self, session: aiohttp.ClientSession, url: URL) -> FetchedDocument:
        async with session.get(url, allow_redirects=False) as response:
            _check_response(response)
            body = await _read_capped(response)
            fetched_at = self._clock()
            expires_at = expiry_from_headers(
                response.headers, fetched_at, min_ttl=self._ttl[0], max_ttl=self._ttl[1]
            )
        return FetchedDocument(_json_object(body), expires_at, fetched_at)

    def _open_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("CimdFetcher is closed")
        if self._session is None:
            self._resolver = GuardedResolver(self._inner_resolver, self._policy)
            connector = aiohttp.TCPConnector(
                limit=CONNECTIONS, resolver=self._resolver, ssl=self._ssl
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=_HEADERS,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),  # no state between clients' fetches
                trust_env=False,  # never an environment proxy: it would resolve for us
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            )
        return self._session

    async def close(self) -> None:
        """Close the session and connections; later `fetch` calls raise RuntimeError."""
        self._closed = True
        session, resolver = self._session, self._resolver
        self._session = self._resolver = None
        if session is not None:
            await session.close()
        if resolver is not None:
            await resolver.close()
