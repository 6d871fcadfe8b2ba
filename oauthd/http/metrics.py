"""/metrics: the Prometheus text exposition, only for the addresses in `metrics.allow`."""

from __future__ import annotations

import functools
import ipaddress

from aiohttp import web

from oauthd.http.errors import Routes, json_error
from oauthd.http.keys import CONFIG, METRICS
from oauthd.metrics import CONTENT_TYPE

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=8)
def _networks(allow: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in allow)


def allowed(remote: str | None, allow: tuple[str, ...]) -> bool:
    """True if `remote` (the peer's address as aiohttp gives it) is in one of the networks.
    An IPv4 client of a dual-stack socket (`::ffff:10.1.2.3`) counts as its IPv4 address;
    a peer without an IP address (a Unix socket) is never allowed."""
    try:
        address = ipaddress.ip_address((remote or "").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _networks(allow))


async def metrics(request: web.Request) -> web.Response:
    if not allowed(request.remote, request.app[CONFIG].metrics.allow):
        return json_error(403, "access_denied", "metrics are not served to this address")
    body = await request.app[METRICS].render()
    return web.Response(
        body=body, headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"}
    )


def add_routes(app: web.Application) -> None:
    Routes(app).get("/metrics", metrics)
