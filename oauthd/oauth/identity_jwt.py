"""The signed identity an upstream receives with each proxied request (a resource's
`signed_identity`): a short JWT by oauthd's active key saying who calls, for which
resource, with which scopes (docs/signed-identity.md).

Signing is amortized: one assertion serves a grant's requests (same scopes, same key)
while more than half of its lifetime is left, so that most requests cost a dict lookup.
The cache holds one assertion per grant, at most `MAX_GRANTS` (the oldest entry goes
first), and forgets a grant when it ends (`forget`, a grant-ended listener).
"""

from __future__ import annotations

from dataclasses import dataclass

from oauthd import crypto
from oauthd.audit import grant_ref
from oauthd.clock import Clock
from oauthd.model import Grant
from oauthd.oauth.signing import IDENTITY_TTL, KeyRing
from oauthd.oauth.tokens import Tokens

IDENTITY_TYPE = "oauthd-identity+jwt"
REUSE_FOR = IDENTITY_TTL // 2  # ... and reused: always at least this much life left
MAX_GRANTS = 10_000


@dataclass(slots=True, frozen=True)
class _Signed:
    scopes: tuple[str, ...]
    kid: str
    token: str
    reuse_until: float


class IdentityAssertions:
    def __init__(self, ring: KeyRing, issuer: str, clock: Clock, tokens: Tokens) -> None:
        """Forgets a grant's assertion when `tokens` ends the grant."""
        tokens.grant_ended.append(self.forget)
        self._ring = ring
        self._issuer = issuer
        self._clock = clock
        self._cache: dict[str, _Signed] = {}
        self.signed = 0  # how many were signed (the rest were reused)

    def assertion(self, grant: Grant, *, ended: bool = False) -> str:
        """The identity JWT of `grant` for its resource (`Grant.resource` is the audience),
        reused while it has more than half its life left. No I/O. `ended`: the grant has
        ended (the DELETE closing its sessions): signed afresh and not kept."""
        if ended:
            return self._sign(grant, int(self._clock.now()))
        now = self._clock.now()
        kid = self._ring.active.kid
        cached = self._cache.get(grant.id)
        if (
            cached is not None
            and now < cached.reuse_until
            and cached.kid == kid
            and cached.scopes == grant.token_scopes
        ):
            return cached.token
        token = self._sign(grant, int(now))
        if cached is None and len(self._cache) >= MAX_GRANTS:
            del self._cache[next(iter(self._cache))]
        self._cache[grant.id] = _Signed(grant.token_scopes, kid, token, now + REUSE_FOR)
        return token

    def _sign(self, grant: Grant, now: int) -> str:
        self.signed += 1
        claims = {
            "iss": self._issuer,
            "aud": grant.resource,
            "sub": grant.user,
            "client_id": grant.client_id,
            "scope": " ".join(grant.token_scopes),
            "grant": grant_ref(grant.id),
            "principal": grant.principal,
            "iat": now,
            "exp": now + IDENTITY_TTL,
            "jti": crypto.new_key(),
        }
        return self._ring.sign({"typ": IDENTITY_TYPE}, claims)

    async def forget(self, grant: Grant) -> None:
        """A grant ended: its assertion is never handed out again."""
        self._cache.pop(grant.id, None)
