"""The gate for other proxies: nginx `auth_request`, Traefik `ForwardAuth`, Caddy
`forward_auth` and Envoy's HTTP `ext_authz` ask oauthd about each request to the MCP
server they front, and relay it themselves.

The answer is `/mcp`'s gate, without the relay: 200 with the identity headers the
upstream should get (the same `Identity.stamp` as the proxy's: user, client, scopes, and
the static `upstream.authorization` credential or the user's identity-provider token when
configured), or the 401/403 with the same RFC 9728 challenge `/mcp` would give. The front
proxy must set those headers on the upstream request in place of what the client sent,
`Authorization` included, so that the client's token never reaches the upstream
(docs/operations.md has the nginx configuration).

What this mode cannot do, because it never sees the body or the answers: bind MCP sessions
to grants, check `Mcp-Method`/`Mcp-Name` against the body (the 2026-07-28 upstream must,
itself), filter listings, or end a revoked grant's open streams (the next request is
refused).
"""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDict

from oauthd.proxy.answers import NO_STORE
from oauthd.proxy.gate import Gate
from oauthd.proxy.identity import Identity

# Where the front proxies put the method of the request they ask about (Envoy sends that
# method itself).
ORIGINAL_METHOD_HEADERS = ("X-Forwarded-Method", "X-Original-Method")


def original_method(request: web.Request) -> str:
    for name in ORIGINAL_METHOD_HEADERS:
        if method := request.headers.get(name):
            return method.upper()
    return request.method


class ForwardAuth:
    def __init__(self, gate: Gate, identity: Identity) -> None:
        self._gate = gate
        self._identity = identity

    async def check(self, request: web.Request) -> web.Response:
        """200 with the identity headers, or raise the `ProxyRefusal` `/mcp` would give."""
        if original_method(request) == "OPTIONS":
            return web.Response(status=200, headers=NO_STORE)  # a preflight carries no token
        self._gate.check_origin(request)
        grant = await self._gate.authenticate(request)
        headers: CIMultiDict[str] = CIMultiDict(NO_STORE)
        self._identity.stamp(headers, grant)
        if self._identity.forwards_idp_token:
            await self._identity.add_idp_token(headers, grant)
        return web.Response(status=200, headers=headers)
