"""The gate for other proxies: nginx `auth_request`, Traefik `ForwardAuth`, Caddy
`forward_auth` and Envoy's HTTP `ext_authz` ask oauthd about each request to the MCP
server they front, and relay it themselves.

The answer is a resource's gate, without the relay: 200 with the identity headers the
upstream should get (the same `Identity.stamp` as the proxy's: user, client, scopes, and
the static `authorization` credential or the user's identity-provider token when
configured), or the 401/403 the resource's path would give. The front proxy must set those
headers on the upstream request in place of what the client sent, `Authorization`
included, so that the client's token never reaches the upstream (docs/operations.md has
the nginx configuration).

The resource is named by the path after `/forward-auth` (`/forward-auth/files/mcp`; what
Envoy appends is the request's own path, so a path below a resource's selects it too);
bare `/forward-auth` is the default resource, and so is any path while there is only one
resource (the first round's behaviour). With several, a path that is no resource's is a
404: a misconfigured front proxy must not be answered for the wrong resource.

Policy (issue #12) is decided from the `Mcp-Method`/`Mcp-Name` headers of requests of
protocol version 2026-07-28 or later (the upstream must check that they agree with the
body: those clients' servers do); older requests carry no such headers, and only the
resource's required scopes are checked for them. What this mode cannot do, because it
never sees the body or the answers: bind MCP sessions to grants, decide policy for older
clients, filter listings, check `Mcp-Method`/`Mcp-Name` against the body, or end a
revoked grant's open streams (the next request is refused).
"""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDict

from oauthd.policy import NAME_PARAMS
from oauthd.proxy.answers import NO_STORE, header_mismatch, jsonrpc_error
from oauthd.proxy.messages import (
    METHOD_HEADER,
    NAME_HEADER,
    PROTOCOL_VERSION_HEADER,
    Mismatch,
    mirrored,
    validates_headers,
)
from oauthd.proxy.mounts import Mount, Mounts

# Where the front proxies put the method of the request they ask about (Envoy sends that
# method itself).
ORIGINAL_METHOD_HEADERS = ("X-Forwarded-Method", "X-Original-Method")


def original_method(request: web.Request) -> str:
    for name in ORIGINAL_METHOD_HEADERS:
        if method := request.headers.get(name):
            return method.upper()
    return request.method


class ForwardAuth:
    def __init__(self, mounts: Mounts) -> None:
        self._mounts = mounts

    def mount_for(self, tail: str, raw_path: str = "") -> Mount:
        """The resource a forward-auth path names (see the module's doc); 404 if none, and
        for a path that a front proxy may have read differently (`.`/`..` or empty
        segments, an encoded slash): `/forward-auth/mcp/../files/mcp` must not pick `/mcp`
        for a request routed to `/files/mcp`."""
        if not tail or len(self._mounts) == 1:
            return self._mounts.default
        segments = tail.strip("/").split("/")
        lowered = raw_path.lower()
        if (
            any(s in ("", ".", "..") or "\\" in s for s in segments)
            or "%2f" in lowered
            or "%5c" in lowered
        ):
            raise jsonrpc_error(404, -32000, "not a resource path (dot segments, //, %2F)")
        mount = self._mounts.under("/" + "/".join(segments))
        if mount is None:
            raise jsonrpc_error(404, -32000, "no resource at this forward-auth path")
        return mount

    async def check(self, request: web.Request) -> web.Response:
        """200 with the identity headers, or raise the `ProxyRefusal` the resource's path
        would give."""
        if original_method(request) == "OPTIONS":
            return web.Response(status=200, headers=NO_STORE)  # a preflight carries no token
        mount = self.mount_for(request.match_info.get("tail", ""), request.raw_path)
        mount.gate.check_origin(request)
        grant = await mount.gate.authenticate(request)
        if mount.policing is not None:
            message = self._mirrored_call(request)
            if message is not None:
                mount.policing.check(grant, message, private=False)
        headers: CIMultiDict[str] = CIMultiDict(NO_STORE)
        mount.identity.stamp(headers, grant)
        if mount.identity.forwards_idp_token:
            await mount.identity.add_idp_token(headers, grant)
        return web.Response(status=200, headers=headers)

    @staticmethod
    def _mirrored_call(request: web.Request) -> dict[str, object] | None:
        """The call a 2026-07-28 request's headers name, as a JSON-RPC message for the
        policy step; None for older requests and for those that name no method."""
        if not validates_headers(request.headers.get(PROTOCOL_VERSION_HEADER)):
            return None
        try:
            method = mirrored(request.headers, METHOD_HEADER)
            name = mirrored(request.headers, NAME_HEADER)
        except Mismatch as exc:
            raise header_mismatch(str(exc), None) from None
        if method is None:
            if original_method(request) == "POST":  # every 2026-07-28 call names its method
                raise header_mismatch(f"{METHOD_HEADER} header is required", None)
            return None
        key = NAME_PARAMS.get(method)
        if key is not None and name is None:
            raise header_mismatch(f"{NAME_HEADER} header is required for {method}", None)
        return {"jsonrpc": "2.0", "method": method, "params": {key: name} if key else {}}
