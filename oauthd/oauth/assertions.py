"""JWTs that others sign and oauthd checks: client assertions (private_key_jwt, RFC 7523
s2.2), workload identity tokens and Identity Assertion JWT Authorization Grants (the JWT
bearer grant, RFC 7523 s2.1, SEP-1933, SEP-990).

One checker for all of them, so that every refusal has its own reason (`Refusal`): the
log line, the metric label and, later, the audit record name it; the client gets the
OAuth error its caller chooses (`invalid_client` for a client assertion, `invalid_grant`
for a grant) with a description that says what was wrong, never the keys it was checked
with. joserfc does the JOSE; this module decides what a claim must say.

A `jti` is single use (`JtiLedger`): it is written to the store as a `UsedAssertion`
until the JWT expires, so that a replay is refused after a restart and on every other
instance of a shared backend (`Table.add` is atomic).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    DecodeError,
    InvalidKeyIdError,
    JoseError,
    UnsupportedAlgorithmError,
)
from joserfc.jwk import KeySet

from oauthd.clock import Clock
from oauthd.model import UsedAssertion
from oauthd.store import Conflict, Store

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ID_JAG_TYPE = "oauth-id-jag+jwt"

# Asymmetric algorithms only: an HMAC "signature" would need a secret shared with oauthd.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
MAX_ASSERTION = 16 * 1024  # characters; a JWT bigger than this is not one we accept
LEEWAY = 30.0  # seconds of clock difference tolerated on exp, nbf and iat


class Refusal(enum.StrEnum):
    """Why an assertion was refused: its own reason each, for logs and metrics."""

    MALFORMED = "malformed"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_ISSUER = "unknown_issuer"
    UNKNOWN_KEY = "unknown_key"
    KEYS_UNAVAILABLE = "keys_unavailable"
    BAD_SIGNATURE = "bad_signature"
    WRONG_AUDIENCE = "wrong_audience"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    LIFETIME_TOO_LONG = "lifetime_too_long"
    MISSING_CLAIM = "missing_claim"
    REPLAYED_JTI = "replayed_jti"
    CLIENT_MISMATCH = "client_mismatch"
    UNKNOWN_RESOURCE = "unknown_resource"
    SUBJECT_NOT_ALLOWED = "subject_not_allowed"
    SCOPE_NOT_ALLOWED = "scope_not_allowed"
    NO_ACCOUNT = "no_account"


class AssertionRefused(Exception):
    """An assertion that is not accepted: `reason` for logs and metrics, `description`
    for the client (what was wrong, never the keys or a secret)."""

    def __init__(self, reason: Refusal, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description


class KeysUnavailable(Exception):
    """The keys of an issuer or client could not be had (fetch failed, not JSON, no
    keys); str() is a reason safe to show and log."""


class KeySetSource(Protocol):
    """Where public keys come from: JWKS documents at URLs and OpenID discovery, fetched
    and cached by `oauthd.outbound.jwks` (the SSRF guard, the allowed hosts, the cache
    headers live there)."""

    async def key_set(self, url: str, *, kid: str | None = None) -> KeySet:
        """The JWKS at `url`, from the cache while it is fresh. When `kid` is given and not
        in the cached set, the document is fetched again, at most once per refresh
        interval (a rotation at the issuer is picked up; a flood of unknown kids is not a
        flood of fetches). KeysUnavailable when there is no usable set."""
        ...

    async def discovered_jwks_uri(self, issuer: str) -> str:
        """The `jwks_uri` of `issuer`'s OpenID Provider metadata
        (`<issuer>/.well-known/openid-configuration`), whose `issuer` must be `issuer`;
        cached like a JWKS. KeysUnavailable otherwise."""
        ...


@dataclass(slots=True, frozen=True)
class Unverified:
    """A JWT's header and claims as sent, before any check: to find who signed it."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]

    @property
    def issuer(self) -> str | None:
        issuer = self.claims.get("iss")
        return issuer if isinstance(issuer, str) else None

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None


@dataclass(slots=True, frozen=True)
class Expectations:
    """What a verified assertion must say. `audiences`: one of them must be in `aud`;
    `typ`: the JOSE header's `typ` must be it (compared without case, an
    "application/" prefix ignored; None: any); `max_lifetime`: `exp` at most this far
    ahead (and, with `iat`, exp - iat at most this)."""

    audiences: frozenset[str]
    max_lifetime: float
    typ: str | None = None
    require_jti: bool = True
    required_claims: tuple[str, ...] = ("iss", "sub", "exp")


@dataclass(slots=True, frozen=True)
class VerifiedAssertion:
    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    issuer: str
    subject: str
    jti: str | None
    expires_at: float

    def text(self, name: str) -> str | None:
        value = self.claims.get(name)
        return value if isinstance(value, str) and value else None


def peek(token: str) -> Unverified:
    """The header and claims of `token`, not verified (signature, time: nothing);
    MALFORMED unless it is a compact JWS whose payload is a JSON object."""
    if not isinstance(token, str) or not token or len(token) > MAX_ASSERTION:
        raise AssertionRefused(Refusal.MALFORMED, "the assertion is not a JWT")
    try:
        extracted = jws.extract_compact(token.encode())
        header = extracted.headers()
        claims = orjson.loads(extracted.payload)
    except (JoseError, ValueError, TypeError, UnicodeError):
        raise AssertionRefused(Refusal.MALFORMED, "the assertion is not a signed JWT") from None
    if not isinstance(claims, dict) or not isinstance(header, dict):
        raise AssertionRefused(Refusal.MALFORMED, "the assertion's claims are not a JSON object")
    return Unverified(header, claims)


def _typ_matches(header: Mapping[str, Any], typ: str) -> bool:
    given = header.get("typ")
    if not isinstance(given, str):
        return False
    given = given.lower()
    return given.removeprefix("application/") == typ.lower()


def verify(
    token: str,
    keys: KeySet,
    expect: Expectations,
    now: float,
    algorithms: Collection[str] = ALGORITHMS,
) -> VerifiedAssertion:
    """`token` checked against `keys` and `expect` at `now`; AssertionRefused naming the
    first thing wrong. The signature is checked before any claim is believed."""
    unverified = peek(token)
    if expect.typ is not None and not _typ_matches(unverified.header, expect.typ):
        raise AssertionRefused(Refusal.WRONG_TYPE, f'the JWT header "typ" must be {expect.typ}')
    try:
        decoded = _decode(token, unverified.kid, keys, list(algorithms))
    except InvalidKeyIdError:
        raise AssertionRefused(
            Refusal.UNKNOWN_KEY, "the assertion is signed with a key that is not known (kid)"
        ) from None
    except UnsupportedAlgorithmError:
        raise AssertionRefused(
            Refusal.BAD_SIGNATURE,
            f"the assertion's algorithm is not accepted (accepted: {', '.join(algorithms)})",
        ) from None
    except BadSignatureError:
        raise AssertionRefused(
            Refusal.BAD_SIGNATURE, "the assertion's signature is not valid"
        ) from None
    except (DecodeError, JoseError, ValueError, TypeError) as exc:
        raise AssertionRefused(
            Refusal.BAD_SIGNATURE, f"the assertion cannot be verified ({type(exc).__name__})"
        ) from None
    claims = decoded.claims
    return _checked(decoded.header, claims, expect, now)


MAX_KEYS_TRIED = 10  # a JWT without a kid is tried against at most this many keys


def _decode(token: str, kid: str | None, keys: KeySet, algorithms: list[str]) -> jwt.Token:
    """joserfc picks the key by `kid`; a JWT without one (PyJWT, which the MCP SDK signs
    with, sets none by default) is tried against each key of the set in turn."""
    if kid is not None or len(keys.keys) <= 1:
        return jwt.decode(token, keys, algorithms=algorithms)
    for key in keys.keys[:MAX_KEYS_TRIED]:
        try:
            return jwt.decode(token, key, algorithms=algorithms)
        except UnsupportedAlgorithmError:
            raise
        except (JoseError, ValueError, TypeError):  # not this key (or not its type)
            continue
    raise BadSignatureError()


def _checked(
    header: Mapping[str, Any], claims: Mapping[str, Any], expect: Expectations, now: float
) -> VerifiedAssertion:
    for name in expect.required_claims + (("jti",) if expect.require_jti else ()):
        if claims.get(name) in (None, ""):
            raise AssertionRefused(Refusal.MISSING_CLAIM, f"the assertion has no {name} claim")
    for name in ("iss", "sub", "jti"):
        if name in claims and not isinstance(claims[name], str):
            raise AssertionRefused(Refusal.MALFORMED, f"the {name} claim must be a string")
    exp = _number(claims, "exp")
    if exp is None:
        raise AssertionRefused(Refusal.MISSING_CLAIM, "the assertion has no exp claim")
    if exp <= now - LEEWAY:
        raise AssertionRefused(Refusal.EXPIRED, "the assertion has expired")
    nbf = _number(claims, "nbf")
    if nbf is not None and nbf > now + LEEWAY:
        raise AssertionRefused(Refusal.NOT_YET_VALID, "the assertion is not valid yet (nbf)")
    iat = _number(claims, "iat")
    if iat is not None and iat > now + LEEWAY:
        raise AssertionRefused(
            Refusal.NOT_YET_VALID, "the assertion was issued in the future (iat)"
        )
    longest = expect.max_lifetime + LEEWAY
    if exp - now > longest or (iat is not None and exp - iat > longest):
        raise AssertionRefused(
            Refusal.LIFETIME_TOO_LONG,
            f"the assertion lives too long (at most {expect.max_lifetime:g} s from now)",
        )
    if not _audience_matches(claims.get("aud"), expect.audiences):
        raise AssertionRefused(
            Refusal.WRONG_AUDIENCE,
            f"the assertion's aud must be {' or '.join(sorted(expect.audiences))}",
        )
    return VerifiedAssertion(
        header=header,
        claims=claims,
        issuer=str(claims.get("iss", "")),
        subject=str(claims.get("sub", "")),
        jti=claims.get("jti") or None,
        expires_at=exp,
    )


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AssertionRefused(Refusal.MALFORMED, f"the {name} claim must be a number")
    return float(value)


def _audience_matches(aud: object, wanted: frozenset[str]) -> bool:
    if isinstance(aud, str):
        return aud in wanted
    if isinstance(aud, list):
        return any(isinstance(a, str) and a in wanted for a in aud)
    return False


def import_key_set(document: object) -> KeySet:
    """A JWKS document (a dict with `keys`) as a KeySet of its public signing keys;
    KeysUnavailable saying why not. Private parts, if a careless owner left them in, are
    never used: only the public key is imported."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeysUnavailable('a JWKS must be a JSON object with a "keys" array')
    keys = [k for k in document["keys"] if isinstance(k, dict) and k.get("use", "sig") == "sig"]
    public = [_public_only(k) for k in keys]
    if not public:  # joserfc's own words for this ("missing_key") say less
        raise KeysUnavailable("the JWKS holds no signing key")
    try:
        key_set = KeySet.import_key_set({"keys": public})
    except (JoseError, ValueError, TypeError) as exc:
        raise KeysUnavailable(f"the JWKS holds a key that cannot be read ({exc})") from None
    if not key_set.keys:
        raise KeysUnavailable("the JWKS holds no signing key")
    return key_set


_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def _public_only(key: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in key.items() if name not in _PRIVATE_MEMBERS}


def has_kid(keys: KeySet, kid: str | None) -> bool:
    """True when `kid` is None (any key may verify) or a key of `keys` has it."""
    return kid is None or any(key.kid == kid for key in keys.keys)


class JtiLedger:
    """Single use of a JWT id, per issuer, across restarts and instances."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def claim(self, issuer: str, jti: str, expires_at: float) -> None:
        """Note `jti` of `issuer` as used until `expires_at` (plus the leeway a late
        clock is allowed); REPLAYED_JTI if it was used before."""
        key = hashlib.sha256(f"{issuer}\x1f{jti}".encode()).hexdigest()
        record = UsedAssertion(key, issuer, self._clock.now(), expires_at + LEEWAY)
        try:
            await self._store.used_assertions.add(record)
        except Conflict:
            raise AssertionRefused(
                Refusal.REPLAYED_JTI, "the assertion was used before (jti)"
            ) from None
