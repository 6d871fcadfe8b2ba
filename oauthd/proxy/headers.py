"""Which headers cross the proxy, in each direction."""

from __future__ import annotations

from collections.abc import Iterable

from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Never forwarded upstream: the client's credentials and oauthd's own cookies.
REQUEST_DROPPED = frozenset(
    {
        "host",
        "authorization",
        "cookie",
        "content-length",
        "origin",
        # set by oauthd itself from what it knows, never taken from the client
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
    }
)
RESPONSE_DROPPED = frozenset({"set-cookie", "content-length"})


def _connection_listed(headers: CIMultiDictProxy[str]) -> set[str]:
    listed: set[str] = set()
    for value in headers.getall("Connection", []):
        listed.update(token.strip().lower() for token in value.split(","))
    return listed


def upstream_request_headers(
    incoming: CIMultiDictProxy[str], identity_names: Iterable[str]
) -> CIMultiDict[str]:
    """The client's headers minus hop-by-hop ones, credentials, cookies, and any header
    oauthd sets itself (a client must not be able to claim an identity)."""
    dropped = HOP_BY_HOP | REQUEST_DROPPED | _connection_listed(incoming)
    dropped |= {name.lower() for name in identity_names}
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        if name.lower() not in dropped:
            out.add(name, value)
    return out


def client_response_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    dropped = HOP_BY_HOP | RESPONSE_DROPPED | _connection_listed(upstream)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.items():
        if name.lower() not in dropped:
            out.add(name, value)
    return out
