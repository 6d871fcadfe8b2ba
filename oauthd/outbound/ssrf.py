"""The SSRF guard of outbound fetches whose URL a client chooses (Client ID Metadata
Documents): the URL's shape, and an address policy applied to every address a host
resolves to, in the resolver the connector uses, so that the addresses checked are the
ones connected to (no rebinding window). IP-literal hosts, which aiohttp never resolves,
are checked with the URL. Resolved addresses are logged, never put in an error's reason.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from collections.abc import Callable

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from oauthd.oauth import ClientDocumentError

log = logging.getLogger("oauthd.cimd")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressPolicy = Callable[[IPAddress], bool]

MAX_URL = 2000
# A DNS name as a URL's host may spell it: labels of 1 to 63 letters, digits, "-" or "_", no
# label starting or ending with "-", 253 characters at most (RFC 1035 s2.3.4; "_" as seen in
# the wild). Anything else cannot be looked up, and failing later is a crash, not an answer.
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


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
    if not _is_host(host):
        raise ClientDocumentError("client_id host is not a valid DNS name or IP address")
    if url.raw_path in ("", "/"):
        raise ClientDocumentError("client_id must have a path")
    if any(segment in (".", "..") for segment in url.path.split("/")):
        raise ClientDocumentError("client_id must not contain . or .. path segments")
    _check_literal_host(host, policy)
    return url


def _is_host(host: str) -> bool:
    """True for an IP literal or a DNS name that can be looked up (see `_DNS_LABEL`)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        name = host[:-1] if host.endswith(".") else host
        return len(name) <= 253 and all(_DNS_LABEL.fullmatch(x) for x in name.split("."))
    return True


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
