"""/forward-auth: the gate for other proxies (`oauthd.proxy.forward_auth`), answered only
to the peers in `forward_auth.allow`: the front proxies themselves, whose connection is
the one asking (the peer address, never a forwarded one). Envoy's `ext_authz` appends the
original path to its prefix, hence the sub-paths."""

from __future__ import annotations

from aiohttp import web

from oauthd.http.errors import Routes, address_refused
from oauthd.http.keys import CONFIG, PROXY
from oauthd.peers import in_networks

PATH = "/forward-auth"


async def forward_auth(request: web.Request) -> web.StreamResponse:
    if not in_networks(request.remote or "", request.app[CONFIG].forward_auth.allow):
        return address_refused(request, "forward-auth is")
    return await request.app[PROXY].forward_auth(request)


def add_routes(app: web.Application) -> None:
    routes = Routes(app)  # the gate answers for itself; anything unexpected is rendered
    routes.add("*", PATH, forward_auth)
    routes.add("*", PATH + "/{tail:.*}", forward_auth)
