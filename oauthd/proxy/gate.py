"""The gate: what a `/mcp` request must pass before anything of it reaches the upstream.

In order: its Origin (a browser page on another site must not reach a local MCP server:
DNS rebinding), then its bearer token and the scopes that token carries (RFC 6750 s3
challenges). Each step either passes or raises a `ProxyRefusal`. A gate serves one
resource (`proxy/mounts.py`): a token issued for another is `invalid_token`. Per-tool
policy, for a resource with rules, is the next step after `authenticate`
(`proxy/policing.py`). The CORS headers go on every answer to an allowed origin, refusals
included, so that a browser client can read them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from oauthd.audit import reasons
from oauthd.config import Config, ResourceConfig
from oauthd.model import Grant
from oauthd.oauth import BearerCheck
from oauthd.proxy.answers import challenge, jsonrpc_error
from oauthd.scopes import ScopeHierarchy

WhyRefused = Callable[[str, str], Awaitable[tuple[str, Grant | None]]]

PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Accept, "
    "Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID, Mcp-Method, Mcp-Name",
    "Access-Control-Max-Age": "86400",
}
EXPOSED_HEADERS = "WWW-Authenticate, Mcp-Session-Id, MCP-Protocol-Version, Retry-After"


class Gate:
    def __init__(
        self,
        config: Config,
        resource: ResourceConfig,
        verify_bearer: BearerCheck,
        why_refused: WhyRefused,
    ) -> None:
        issuer = config.server.issuer
        self._own_origin = issuer.lower()
        self._allowed_origins = resource.upstream.allowed_origins
        self._required_scopes = resource.required_scopes
        self._hierarchy = ScopeHierarchy(dict(config.oauth.scope_implies))
        self._implies = bool(self._hierarchy)  # decided once: the hot path
        self._scope = " ".join(self._required_scopes)
        self._resource = resource.uri(issuer)
        self._metadata_url = f"{issuer}/.well-known/oauth-protected-resource{resource.path}"
        self._verify_bearer = verify_bearer  # bound once: the hot path
        self._why_refused = why_refused  # asked only once a token was refused

    def check_origin(self, request: web.Request) -> None:
        """A request without Origin is not from a browser and passes; any other origin
        than oauthd's own or a configured one is refused (403)."""
        origin = request.headers.get("Origin")
        if origin is None:
            return
        if not self._origin_allowed(origin):
            raise jsonrpc_error(
                403, -32000, "Origin not allowed", reason=reasons.ORIGIN_NOT_ALLOWED
            )

    def _origin_allowed(self, origin: str) -> bool:
        return origin.lower() == self._own_origin or origin.lower() in self._allowed_origins

    def preflight(self, request: web.Request) -> web.Response:
        """The answer to a CORS preflight (OPTIONS) from an origin that passed."""
        response = web.Response(status=204, headers=PREFLIGHT_HEADERS)
        self.add_cors(request, response)
        return response

    def add_cors(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin is not None and self._origin_allowed(origin):  # never to a refused origin
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
            vary = response.headers.get("Vary", "")  # the upstream's own Vary stays
            if "origin" not in vary.lower():
                response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"

    async def authenticate(self, request: web.Request) -> Grant:
        """The grant of the request's bearer token, which must carry every required scope;
        else a 401 (no, malformed or dead token) or 403 (a scope missing) challenge."""
        scope = self._scope
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise challenge(401, self._metadata_url, scope, reason=reasons.NO_TOKEN)
        if scheme.lower() != "bearer" or not token.strip():
            raise challenge(
                401,
                self._metadata_url,
                scope,
                "invalid_request",
                "use the Authorization: Bearer scheme",
                reasons.NOT_BEARER,
            )
        token = token.strip()
        grant = await self._verify_bearer(token, self._resource)
        if grant is None:
            reason, known = await self._why_refused(token, self._resource)
            refusal = challenge(
                401,
                self._metadata_url,
                scope,
                "invalid_token",
                "the access token is invalid or has expired",
                reason,
            )
            refusal.grant = known
            raise refusal
        if not self._required_scopes:
            return grant
        if self._implies:  # a scope may be held through one that implies it
            missing = list(
                self._hierarchy.missing(frozenset(grant.token_scopes), self._required_scopes)
            )
        else:
            held = grant.token_scopes
            missing = [s for s in self._required_scopes if s not in held]
        if missing:
            refusal = challenge(
                403,
                self._metadata_url,
                scope,
                "insufficient_scope",
                f"the token lacks the scope {missing[0]}",
                reasons.INSUFFICIENT_SCOPE,
            )
            refusal.grant = grant
            raise refusal
        return grant
