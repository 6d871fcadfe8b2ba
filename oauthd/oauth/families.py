"""What a grant remembers of its superseded refresh tokens: the first SUPERSEDED_BYTES of
the digests of the last SUPERSEDED_KEPT, so that presenting one of them is recognised as
reuse (RFC 9700 s4.14.2) while any other value under the grant id is only refused."""

from __future__ import annotations

import hmac

from oauthd import crypto
from oauthd.model import Grant

# How many superseded refresh tokens a grant remembers (the first SUPERSEDED_BYTES of their
# digests), so that presenting one of them ends the family (reuse, RFC 9700 s4.14.2) while
# any other value is only refused. 128 bits of SHA-256 of a 256-bit secret: no collision.
SUPERSEDED_KEPT = 8
SUPERSEDED_BYTES = 16


def superseded_with(grant: Grant, replaced: bytes) -> bytes:
    """The grant's superseded refresh digests with `replaced` added, the oldest dropped."""
    kept = grant.superseded_hashes + replaced[:SUPERSEDED_BYTES]
    return kept[-SUPERSEDED_KEPT * SUPERSEDED_BYTES :]


def was_superseded(secret: str, grant: Grant) -> bool:
    """True if `secret` is one of the grant's superseded refresh tokens (constant-time per
    digest; every digest is compared, so the time says nothing of which one matched)."""
    digest = crypto.hash_secret(secret)
    matched = crypto.secret_matches(secret, grant.previous_refresh_hash)
    kept = grant.superseded_hashes
    for start in range(0, len(kept), SUPERSEDED_BYTES):
        stored = kept[start : start + SUPERSEDED_BYTES]
        matched |= hmac.compare_digest(digest[:SUPERSEDED_BYTES], stored)
    return matched
