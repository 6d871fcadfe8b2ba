"""Signing keys and JWTs for the tests of what oauthd checks (client assertions, ...),
made with joserfc: a client's key pair and a JWT with claims that are right unless a test
says otherwise."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass(slots=True)
class Signer:
    """A key pair with its kid; `jwks()` its public half as a JWKS document."""

    key: RSAKey | ECKey
    alg: str
    kid: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @classmethod
    def rsa(cls) -> Signer:
        return cls(RSAKey.generate_key(2048), "RS256")

    @classmethod
    def ec(cls) -> Signer:
        return cls(ECKey.generate_key("P-256"), "ES256")

    def jwks(self) -> dict[str, Any]:
        public = self.key.as_dict(private=False)
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": self.alg}]}

    def jwks_text(self) -> str:
        return orjson.dumps(self.jwks()).decode()

    def private_jwks(self) -> dict[str, Any]:
        return {"keys": [{**self.key.as_dict(private=True), "kid": self.kid}]}

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        head = {"alg": self.alg, "kid": self.kid, **header}
        return jwt.encode(head, claims, self.key, algorithms=[self.alg])


def assertion_claims(client_id: str, audience: str, now: float, **changes: Any) -> dict[str, Any]:
    """A client assertion's claims (RFC 7523 s3), valid for a minute from `now`; a change
    of None removes the claim."""
    claims: dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": int(now),
        "exp": int(now) + 60,
        "jti": uuid.uuid4().hex,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}
