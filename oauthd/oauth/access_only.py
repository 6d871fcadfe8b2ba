"""Grants that carry an access token and no refresh token: client credentials and the JWT
bearer grant (workload identity, enterprise ID-JAG). The client asks again with its
credential or a fresh assertion; the party that vouched for it (the client's key, the
platform, the enterprise IdP) decides again every time.

Such a grant is a `Grant` like any other, so that `/mcp`, revocation, introspection,
`sessions list` and the metrics treat it the same way; it expires with its access token
and is purged then."""

from __future__ import annotations

from oauthd import crypto
from oauthd.clock import Clock
from oauthd.config import Config
from oauthd.model import PRINCIPAL_SERVICE, Grant
from oauthd.oauth.access_tokens import AccessClaims, opaque
from oauthd.oauth.tokens import TokenResponse, Tokens
from oauthd.store import Store


class AccessOnlyGrants:
    def __init__(self, config: Config, store: Store, clock: Clock, tokens: Tokens) -> None:
        self._access_ttl = config.tokens.access_ttl
        self._store = store
        self._clock = clock
        self._tokens = tokens

    async def issue(
        self,
        user: str,
        client_id: str,
        scopes: tuple[str, ...],
        resource: str,
        *,
        grant_type: str,
        principal: str = PRINCIPAL_SERVICE,
        groups: tuple[str, ...] = (),
    ) -> TokenResponse:
        """A new grant with an access token alone. `user`: the principal's name;
        `principal`: PRINCIPAL_SERVICE for a machine, PRINCIPAL_USER for a person (an
        enterprise user linked through an ID-JAG)."""
        now = self._clock.now()
        grant_id = crypto.new_key()
        expires = now + self._access_ttl
        claims = AccessClaims(grant_id, user, client_id, scopes, resource, now, expires)
        access = self._tokens.minters.get(resource, opaque)(claims)  # a JWT where configured
        grant = Grant.first(
            grant_id,
            user,
            client_id,
            scopes,
            resource,
            access_hash=access.secret_hash,
            refresh_hash=crypto.hash_secret(crypto.new_secret()),  # never handed out
            now=now,
            access_expires_at=expires,
            expires_at=expires,
            groups=groups,
            principal=principal,
        )
        events = self._tokens.events
        await self._store.grants.add(grant, audit=events.issued(grant, grant_type))
        events.count_issued(grant, grant_type)
        return TokenResponse(
            access_token=access.token,
            refresh_token=None,
            expires_in=int(self._access_ttl),
            scope=" ".join(scopes),
        )
