"""The client credentials grant (RFC 6749 s4.4; MCP extension
`io.modelcontextprotocol/oauth-client-credentials`, SEP-1046): a confidential client gets
an access token for itself, no person involved, no refresh token.

The principal is the client: its grants are `PRINCIPAL_SERVICE` and their `user` is
`principal_name(client_id)`, "client:<client_id>" (stable: a client id never changes,
unlike its name; and no local user may be called so: `config.convert.username`).

Scopes: no person consents for a machine, so the client's registered `scope` IS the
limit here (unlike for person-facing clients, where it is only a default): what is asked
must be offered by the resource and registered by the client (the scope hierarchy
honoured); nothing asked: what the client registered that the resource offers (none of
it: `invalid_scope`; a client registered with no scope: the resource's required scopes,
else all it offers). The resource (RFC 8707) is the one asked for, else the
client's registered `resource`, else the server's default.
"""

from __future__ import annotations

from collections.abc import Mapping

from oauthd.config import ResourceConfig
from oauthd.model import PRINCIPAL_SERVICE, Client
from oauthd.oauth.access_only import AccessOnlyGrants
from oauthd.oauth.errors import OAuthError
from oauthd.oauth.resources import Targets, UnknownTarget
from oauthd.oauth.tokens import TokenResponse
from oauthd.scopes import ScopeHierarchy

CLIENT_CREDENTIALS = "client_credentials"
PRINCIPAL_PREFIX = "client:"


def principal_name(client_id: str) -> str:
    """The `user` of a client's own grants."""
    return PRINCIPAL_PREFIX + client_id


class ClientCredentialsGrant:
    def __init__(
        self, targets: Targets, hierarchy: ScopeHierarchy, access_only: AccessOnlyGrants
    ) -> None:
        self._targets = targets
        self._hierarchy = hierarchy
        self._access_only = access_only

    async def redeem(self, client: Client, form: Mapping[str, str]) -> TokenResponse:
        """Tokens for `client` itself, which the token endpoint has authenticated and
        found registered for this grant."""
        if client.token_endpoint_auth_method == "none":  # never registered so; kept sure
            raise OAuthError(
                "unauthorized_client", "client_credentials needs a confidential client"
            )
        resource = self._resource(client, form.get("resource"))
        scopes = self._scopes(client, resource, form.get("scope"))
        return await self._access_only.issue(
            principal_name(client.client_id),
            client.client_id,
            scopes,
            self._targets.identifier(resource),
            grant_type=CLIENT_CREDENTIALS,
            principal=PRINCIPAL_SERVICE,
        )

    def _resource(self, client: Client, requested: str | None) -> ResourceConfig:
        try:
            return self._targets.named(requested or client.resource)
        except UnknownTarget as exc:
            raise OAuthError("invalid_target", str(exc)) from None

    def _scopes(
        self, client: Client, resource: ResourceConfig, requested: str | None
    ) -> tuple[str, ...]:
        registered = frozenset(client.scope.split())
        if requested is None or not requested.strip():
            if not registered:
                needed = tuple(s for s in resource.required_scopes if s in resource.scopes)
                return needed or resource.scopes
            granted = tuple(s for s in client.scope.split() if s in resource.scopes)
            if not granted:
                raise OAuthError(
                    "invalid_scope", f"this client is registered for no scope of {resource.name}"
                )
            return granted
        wanted = tuple(dict.fromkeys(requested.split()))
        for name in wanted:
            if name not in resource.scopes:
                raise OAuthError(
                    "invalid_scope", f"scope {name!r} is not offered by {resource.name}"
                )
            if not self._hierarchy.covers(registered, (name,)):
                raise OAuthError(
                    "invalid_scope", f"scope {name!r} is beyond what this client is registered for"
                )
        return wanted
