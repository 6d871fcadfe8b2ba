"""How an access token is minted, per resource (`access_token_format`): opaque
(`<grant id>.<secret>`) or an RFC 9068 JWT signed by oauthd's active key.

Either way the grant stays the source of truth: only a SHA-256 digest is stored
(`Grant.access_hash`: of the secret half of an opaque token, of the whole JWT), and
`Tokens.verify_bearer` finds the grant by its id (the JWT's `jti` is `<grant id>.<random>`)
and compares the digest, so a revoked grant's JWT is refused at once, without any
signature check of our own. An upstream that validates the JWT offline cannot see a
revocation before its `exp`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from oauthd import crypto
from oauthd.config import Config
from oauthd.model import Grant
from oauthd.oauth.signing import KeyRing

ACCESS_TOKEN_TYPE = "at+jwt"
MAX_JWT = 8192  # longer bearer values are not ours


@dataclass(slots=True, frozen=True)
class AccessClaims:
    """What an access token says: the grant it belongs to and its current state."""

    grant_id: str
    user: str
    client_id: str
    scopes: tuple[str, ...]
    resource: str  # the identifier (issuer + path): the JWT's `aud`
    issued_at: float
    expires_at: float

    @classmethod
    def of(
        cls, grant: Grant, now: float, ttl: float, scopes: tuple[str, ...] | None = None
    ) -> AccessClaims:
        """A new access token of `grant` (of `scopes`, if narrowed) from `now`."""
        scopes = grant.token_scopes if scopes is None else scopes
        return cls(grant.id, grant.user, grant.client_id, scopes, grant.resource, now, now + ttl)


@dataclass(slots=True, frozen=True)
class TokenResponse:
    access_token: str
    refresh_token: str | None
    expires_in: int
    scope: str

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": self.scope,
        }
        if self.refresh_token is not None:
            body["refresh_token"] = self.refresh_token
        return body


Mint = Callable[[AccessClaims], crypto.MintedToken]


def opaque(claims: AccessClaims) -> crypto.MintedToken:
    return crypto.mint_token(claims.grant_id)


def jwt_minter(ring: KeyRing, issuer: str) -> Mint:
    def mint(claims: AccessClaims) -> crypto.MintedToken:
        token = ring.sign(
            {"typ": ACCESS_TOKEN_TYPE},
            {
                "iss": issuer,
                "exp": int(claims.expires_at),
                "aud": claims.resource,
                "sub": claims.user,
                "client_id": claims.client_id,
                "iat": int(claims.issued_at),
                "jti": f"{claims.grant_id}.{crypto.new_key()}",
                "scope": " ".join(claims.scopes),
            },
        )
        return crypto.MintedToken(claims.grant_id, crypto.hash_secret(token), token)

    return mint


def minters(config: Config, ring: KeyRing) -> Mapping[str, Mint]:
    """The mint of each resource, by identifier; a resource not listed mints opaque ones."""
    issuer = config.server.issuer
    jwt = jwt_minter(ring, issuer)
    return {
        resource.uri(issuer): jwt
        for resource in config.resources
        if resource.upstream.access_token_format == "jwt"
    }


def token_parts(token: str) -> tuple[str, str] | None:
    """(grant id, the value whose digest the grant keeps) of an access or refresh token of
    ours: for an opaque one its key and secret, for a JWT the grant id in its `jti` and
    the whole token. None for anything else. The JWT's signature is not checked: the
    digest comparison is the check."""
    parts = crypto.split_token(token)
    if parts is not None or token.count(".") != 2 or len(token) > MAX_JWT:
        return parts
    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return None
    jti = claims.get("jti") if isinstance(claims, dict) else None
    grant_id, dot, _ = jti.partition(".") if isinstance(jti, str) else ("", "", "")
    return (grant_id, token) if dot and grant_id else None
