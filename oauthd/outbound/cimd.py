"""Fetching Client ID Metadata Documents: a client_id that is an https URL names its own
metadata document (draft-ietf-oauth-client-id-metadata-document; MCP "Client ID Metadata
Documents").

The fetch is an SSRF surface: anyone can make oauthd request a URL of their choosing. So:
- only `https` URLs with a host and a path, no userinfo, no fragment, no dot segments;
- every address the host resolves to must pass the address policy (public only), or the
  fetch fails before any connection (`ssrf.py`);
- no redirects, a total time limit, a body cap, JSON content types only, no compression;
- cached as long as the response's cache headers say, within bounds (`freshness.py`).

And so that slow or hostile servers cannot starve the shared pool or be made to hammer a
host: one fetch in flight per client_id (concurrent callers share its outcome), a failure
remembered for NEGATIVE_TTL seconds (the same reason, no new fetch), and at most PER_HOST
fetches at once per host name (a request waiting for one counts against its time limit).

These are the transport's rules; what the document must contain is the protocol's
(`oauthd.oauth.clients.document_problem`). Every failure is a `ClientDocumentError` whose
reason is safe to show to the client (it becomes an `invalid_client` description):
resolved addresses are logged, never put in the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssl_module
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver
from yarl import URL

from oauthd.oauth import ClientDocumentError, FetchedDocument
from oauthd.outbound.freshness import MAX_TTL, MIN_TTL, expiry_from_headers
from oauthd.outbound.session import fetch_session
from oauthd.outbound.ssrf import (
    AddressPolicy,
    GuardedResolver,
    check_client_id_url,
    is_public_address,
)

log = logging.getLogger("oauthd.cimd")

MAX_BODY = 16 * 1024
TIMEOUT = 5.0
CONNECTIONS = 10
PER_HOST = 2  # fetches at once to one host name
NEGATIVE_TTL = 10.0  # seconds a failed fetch is answered from memory
NEGATIVE_ENTRIES = 10_000  # failures remembered at most (the oldest are forgotten first)

_HEADERS = {
    "Accept": "application/json",
    "Accept-Encoding": "identity",  # a compressed body would defeat the size cap
    "User-Agent": "oauthd (client metadata fetcher)",
}


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


@dataclass(slots=True)
class _HostSlot:
    semaphore: asyncio.Semaphore
    users: int = 0  # holding or waiting; the entry goes when none is left


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
        self._in_flight: dict[str, asyncio.Task[FetchedDocument]] = {}
        self._failures: dict[str, tuple[float, str]] = {}  # client_id -> (until, reason)
        self._hosts: dict[str, _HostSlot] = {}

    async def fetch(self, client_id: str) -> FetchedDocument:
        """The JSON object at `client_id`; ClientDocumentError for every kind of failure."""
        failed = self._failures.get(client_id)
        if failed is not None:
            until, reason = failed
            if self._clock() < until:
                raise ClientDocumentError(reason)
            del self._failures[client_id]
        task = self._in_flight.get(client_id)
        if task is None:
            task = asyncio.create_task(self._fetch_once(client_id), name="cimd-fetch")
            self._in_flight[client_id] = task
            task.add_done_callback(lambda done: self._settled(client_id, done))
        # shield: a caller that goes away does not cancel the fetch the others wait for
        return await asyncio.shield(task)

    def _settled(self, client_id: str, task: asyncio.Task[FetchedDocument]) -> None:
        if self._in_flight.get(client_id) is task:
            del self._in_flight[client_id]
        if task.cancelled():
            return
        exc = task.exception()  # retrieved, also when every caller went away
        if isinstance(exc, ClientDocumentError):
            self._failures[client_id] = (self._clock() + NEGATIVE_TTL, str(exc))
            while len(self._failures) > NEGATIVE_ENTRIES:
                del self._failures[next(iter(self._failures))]

    async def _fetch_once(self, client_id: str) -> FetchedDocument:
        url = check_client_id_url(client_id, self._policy)
        session = self._open_session()
        host = (url.raw_host or "").lower()
        try:
            async with asyncio.timeout(self._timeout):
                async with self._host_slot(host):
                    return await self._get(session, url)
        except ClientDocumentError:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            # ValueError: a URL that passed the checks yet fails in yarl or the idna codec
            log.info(
                "client metadata fetch failed",
                extra={"event": "cimd.failed", "client_id": client_id, "error": repr(exc)},
            )
            raise ClientDocumentError(_failure_reason(exc, url, self._timeout)) from None

    @contextlib.asynccontextmanager
    async def _host_slot(self, host: str) -> AsyncIterator[None]:
        """One of the PER_HOST fetch slots of `host` (waiting for it as long as needed)."""
        slot = self._hosts.get(host)
        if slot is None:
            slot = self._hosts[host] = _HostSlot(asyncio.Semaphore(PER_HOST))
        slot.users += 1
        try:
            async with slot.semaphore:
                yield
        finally:
            slot.users -= 1
            if slot.users == 0:
                del self._hosts[host]

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
            self._session = fetch_session(connector, _HEADERS, self._timeout)
        return self._session

    async def close(self) -> None:
        """Close the session and connections; later `fetch` calls raise RuntimeError."""
        self._closed = True
        in_flight = list(self._in_flight.values())
        for task in in_flight:
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)
        session, resolver = self._session, self._resolver
        self._session = self._resolver = None
        if session is not None:
            await session.close()
        if resolver is not None:
            await resolver.close()
