"""Who a request comes from: the one place a request's client address is computed.

Every use of a client address (the rate limits, the audit and log lines, the `/metrics`
allow-list, the `X-Forwarded-For` oauthd sends upstream) takes it from
`client_address`. The address is the peer's, unless the peer is one of
`server.trusted_proxies`: then it is the right-most hop of `X-Forwarded-For` (or, when that
header is absent, of `Forwarded`, RFC 7239) that is not itself a trusted proxy. A header
from any other peer is ignored, since anyone can write one.

`X-Forwarded-For` is read first because it is what nginx, HAProxy, Caddy, Traefik, Apache
and Envoy set by default; a proxy that sets only `Forwarded` must drop any
`X-Forwarded-For` its clients send (docs/operations.md). A hop that is not an address
(`unknown`, garbage) stands for the proxy that reported it; an obfuscated RFC 7239 node
(`_hidden`) is that proxy's own name for its client and is kept as it is.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Iterator
from typing import Protocol

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

UNKNOWN = "unknown"  # a peer without an IP address (a Unix socket, a closed transport)

# One RFC 7239 forwarded-pair: token "=" ( token / quoted-string ).
_PAIR = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,"\s]*)\s*')
_OBFUSCATED = re.compile(r"_[A-Za-z0-9._-]{1,64}")
_WITH_PORT_V4 = re.compile(r"(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}")
_BRACKETED_V6 = re.compile(r"\[([0-9A-Fa-f:.]+)\](?::\d{1,5})?")


class Headers(Protocol):
    """What is read of a request's headers (aiohttp's `CIMultiDictProxy` is one)."""

    def getall(self, key: str, default: list[str]) -> list[str]: ...


def parse_address(text: str) -> Address | None:
    """An IP address as a peer or a hop may spell it: `10.0.0.1`, `10.0.0.1:443`, `::1`,
    `[::1]`, `[::1]:443`, `fe80::1%eth0`; an IPv4 client of a dual-stack socket
    (`::ffff:10.1.2.3`) is its IPv4 address. None if it is not one."""
    text = text.strip()
    match = _BRACKETED_V6.fullmatch(text) or _WITH_PORT_V4.fullmatch(text)
    if match is not None:
        text = match[1]
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=16)
def networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in cidrs)


def in_networks(address: str, cidrs: tuple[str, ...]) -> bool:
    """True if `address` (a client address as computed here) is in one of the networks;
    a name that is not an IP address never is."""
    parsed = parse_address(address)
    return parsed is not None and any(parsed in n for n in networks(cidrs))


def forwarded_for(values: Iterable[str]) -> list[str]:
    """The `for=` node of each element of `Forwarded` header values, in order, unquoted;
    "" for an element that has none or that cannot be parsed."""
    return [_for_node(e) for value in values for e in _split_outside_quotes(value, ",")]


def _split_outside_quotes(text: str, separator: str) -> Iterator[str]:
    """`text` split at each `separator` that is not inside a quoted string."""
    start, quoted, escaped = 0, False, False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            yield text[start:i]
            start = i + 1
    yield text[start:]


def _for_node(element: str) -> str:
    node = ""
    for pair in _split_outside_quotes(element, ";"):
        match = _PAIR.fullmatch(pair)
        if match is None:
            return ""
        if match[1].lower() == "for":
            node = match[2]
    if node.startswith('"'):
        node = re.sub(r"\\(.)", r"\1", node[1:-1])
    return node


def client_address(peer: str | None, headers: Headers, trusted: tuple[str, ...]) -> str:
    """The client's address: the peer's (normalised), or, when the peer is in `trusted`
    (`server.trusted_proxies`), the right-most hop it reports that is not itself a trusted
    proxy (see the module docstring)."""
    if not trusted:  # the common case, on the proxy's hot path: one cache lookup
        return _normalised(peer or "") or peer or UNKNOWN
    address = parse_address(peer or "")
    if address is None:
        return peer or UNKNOWN
    if not trusted or not _trusts(trusted, address):
        return str(address)
    hops = [h for v in headers.getall("X-Forwarded-For", []) for h in v.split(",")]
    if not hops:
        hops = forwarded_for(headers.getall("Forwarded", []))
    reporter = str(address)  # who wrote the hop being read: the nearest trusted proxy
    for hop in reversed(hops):
        hop = hop.strip()
        parsed = parse_address(hop)
        if parsed is None:
            return hop if _OBFUSCATED.fullmatch(hop) else reporter
        if not _trusts(trusted, parsed):
            return str(parsed)
        reporter = str(parsed)
    return reporter  # every hop is a trusted proxy: the left-most one is the client


@functools.lru_cache(maxsize=4096)
def _normalised(peer: str) -> str | None:
    """A peer address as `parse_address` normalises it (None: not an IP address); cached,
    since the same few peers send almost every request."""
    address = parse_address(peer)
    return None if address is None else str(address)


def _trusts(trusted: tuple[str, ...], address: Address) -> bool:
    return any(address in n for n in networks(trusted))
