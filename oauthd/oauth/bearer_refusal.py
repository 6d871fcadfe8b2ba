"""Why an access token was refused at a resource (the proxy's 401 `invalid_token`): asked
only after `Tokens.verify_bearer` said no, so the hot path pays nothing for it."""

from __future__ import annotations

from oauthd import crypto
from oauthd.audit import reasons
from oauthd.model import Grant
from oauthd.oauth.access_tokens import token_parts
from oauthd.store import Table


async def bearer_refusal(
    grants: Table[Grant], now: float, token: str, resource: str
) -> tuple[str, Grant | None]:
    """The reason code, and the grant when the token names a live one (its refusal then
    concerns a known user: it is recorded). A revoked grant is gone: `unknown_token`."""
    parts = token_parts(token)
    if parts is None:
        return reasons.MALFORMED_TOKEN, None
    grant = await grants.get(parts[0])
    if grant is None:
        return reasons.UNKNOWN_TOKEN, None
    if not crypto.secret_matches(parts[1], grant.access_hash):
        return reasons.TOKEN_NOT_CURRENT, grant
    if grant.access_expires_at <= now:
        return reasons.EXPIRED, grant
    if grant.resource != resource:
        return reasons.RESOURCE_MISMATCH, grant
    return reasons.OTHER, grant
