"""What of a request crosses the proxy: which headers, in each direction, and which part
of the query string."""

from __future__ import annotations

from functools import lru_cache

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

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
_RESPONSE_DROPPED = HOP_BY_HOP | RESPONSE_DROPPED


def _connection_listed(headers: CIMultiDictProxy[str]) -> set[str]:
    listed: set[str] = set()
    for value in headers.getall("Connection", []):
        listed.update(token.strip().lower() for token in value.split(","))
    return listed


@lru_cache(maxsize=8)
def _request_dropped(identity_names: tuple[str, ...]) -> frozenset[str]:
    return HOP_BY_HOP | REQUEST_DROPPED | {name.lower() for name in identity_names}


def _kept(headers: CIMultiDictProxy[str], dropped: frozenset[str]) -> CIMultiDict[str]:
    if "Connection" in headers:
        dropped = dropped | _connection_listed(headers)
    return CIMultiDict([(k, v) for k, v in headers.items() if k.lower() not in dropped])


def upstream_request_headers(
    incoming: CIMultiDictProxy[str], identity_names: tuple[str, ...]
) -> CIMultiDict[str]:
    """The client's headers minus hop-by-hop ones, credentials, cookies, and any header
    oauthd sets itself (a client must not be able to claim an identity)."""
    return _kept(incoming, _request_dropped(identity_names))


def client_response_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    return _kept(upstream, _RESPONSE_DROPPED)


def upstream_url(base: URL, raw_query: str) -> URL:
    """`base` (`upstream.url`) plus the client's query string as it was sent, less any
    `access_token` (a round trip through a dict would rewrite it: `flag` -> `flag=`,
    `%20` -> `+`)."""
    if not raw_query:
        return base
    raw = "&".join(  # a token in the query is never accepted, and never passed on
        part for part in raw_query.split("&") if part and part.split("=", 1)[0] != "access_token"
    )
    if not raw:
        return base
    query = f"{base.raw_query_string}&{raw}" if base.raw_query_string else raw
    return URL.build(
        scheme=base.scheme,
        authority=base.raw_authority,
        path=base.raw_path,
        query_string=query,
        encoded=True,
    )
