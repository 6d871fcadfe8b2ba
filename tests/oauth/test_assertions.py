"""oauth/assertions.py: one JWT checker with one reason per refusal, and the jti ledger
(single use across restarts and across instances of a shared backend)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from oauthd.clock import FakeClock
from oauthd.oauth.assertions import (
    AssertionRefused,
    Expectations,
    JtiLedger,
    KeysUnavailable,
    Refusal,
    has_kid,
    import_key_set,
    peek,
    verify,
)
from tests.support.backends import BY_NAME, DURABILITY_BACKENDS, StoreHarness, open_harness
from tests.support.jwts import Signer

AUD = "https://as.example"
NOW = 1_800_000_000.0
SIGNER = Signer.rsa()
OTHER = Signer.rsa()
KEYS = import_key_set(SIGNER.jwks())
EXPECT = Expectations(frozenset({AUD}), max_lifetime=300)


def claims(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": "c1",
        "sub": "c1",
        "aud": AUD,
        "iat": NOW,
        "exp": NOW + 60,
        "jti": "j1",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def good() -> str:
    return SIGNER.sign(claims())


def forged_signature() -> str:
    head, body, _ = good().split(".")
    _, _, other = OTHER.sign(claims()).split(".")
    return f"{head}.{body}.{other}"


CASES: list[tuple[str, Callable[[], str], Expectations, Refusal]] = [
    ("not a JWT", lambda: "not-a-jwt", EXPECT, Refusal.MALFORMED),
    ("empty", lambda: "", EXPECT, Refusal.MALFORMED),
    ("too big", lambda: "a" * 20_000, EXPECT, Refusal.MALFORMED),
    ("sub not a string", lambda: SIGNER.sign(claims(sub=7)), EXPECT, Refusal.MALFORMED),
    ("exp not a number", lambda: SIGNER.sign(claims(exp="soon")), EXPECT, Refusal.MALFORMED),
    (
        "wrong typ",
        lambda: SIGNER.sign(claims(), typ="JWT"),
        Expectations(frozenset({AUD}), 300, typ="oauth-id-jag+jwt"),
        Refusal.WRONG_TYPE,
    ),
    ("unknown kid", lambda: OTHER.sign(claims()), EXPECT, Refusal.UNKNOWN_KEY),
    ("forged signature", forged_signature, EXPECT, Refusal.BAD_SIGNATURE),
    (
        "HMAC not accepted",
        lambda: _hmac(claims()),
        EXPECT,
        Refusal.BAD_SIGNATURE,
    ),
    (
        "wrong audience",
        lambda: SIGNER.sign(claims(aud="https://else")),
        EXPECT,
        Refusal.WRONG_AUDIENCE,
    ),
    ("no audience", lambda: SIGNER.sign(claims(aud=None)), EXPECT, Refusal.WRONG_AUDIENCE),
    ("expired", lambda: SIGNER.sign(claims(exp=NOW - 31, iat=NOW - 90)), EXPECT, Refusal.EXPIRED),
    ("nbf ahead", lambda: SIGNER.sign(claims(nbf=NOW + 120)), EXPECT, Refusal.NOT_YET_VALID),
    (
        "iat ahead",
        lambda: SIGNER.sign(claims(iat=NOW + 120, exp=NOW + 180)),
        EXPECT,
        Refusal.NOT_YET_VALID,
    ),
    (
        "lives too long",
        lambda: SIGNER.sign(claims(exp=NOW + 3600)),
        EXPECT,
        Refusal.LIFETIME_TOO_LONG,
    ),
    (
        "issued long before",
        lambda: SIGNER.sign(claims(iat=NOW - 3000, exp=NOW + 60)),
        EXPECT,
        Refusal.LIFETIME_TOO_LONG,
    ),
    ("no jti", lambda: SIGNER.sign(claims(jti=None)), EXPECT, Refusal.MISSING_CLAIM),
    ("no sub", lambda: SIGNER.sign(claims(sub=None)), EXPECT, Refusal.MISSING_CLAIM),
    ("no exp", lambda: SIGNER.sign(claims(exp=None)), EXPECT, Refusal.MISSING_CLAIM),
]


def _hmac(payload: dict[str, Any]) -> str:
    from joserfc import jwt
    from joserfc.jwk import OctKey

    return jwt.encode({"alg": "HS256", "kid": SIGNER.kid}, payload, OctKey.generate_key(256))


@pytest.mark.parametrize(
    ("token", "expect", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_refusal_has_its_reason(
    token: Callable[[], str], expect: Expectations, reason: Refusal
) -> None:
    with pytest.raises(AssertionRefused) as refused:
        verify(token(), KEYS, expect, NOW)
    assert refused.value.reason == reason
    assert refused.value.description  # what the client is told


def test_a_good_assertion_and_what_it_says() -> None:
    checked = verify(good(), KEYS, EXPECT, NOW)
    assert (checked.issuer, checked.subject, checked.jti) == ("c1", "c1", "j1")
    assert checked.expires_at == NOW + 60
    assert checked.text("aud") == AUD and checked.text("missing") is None
    # an audience list naming us; typ compared without case and "application/"
    typed = SIGNER.sign(claims(aud=["x", AUD]), typ="application/OAuth-ID-JAG+JWT")
    expect = Expectations(frozenset({AUD}), 300, typ="oauth-id-jag+jwt")
    assert verify(typed, KEYS, expect, NOW).subject == "c1"


def test_peek_reads_without_verifying() -> None:
    seen = peek(OTHER.sign(claims(iss="someone")))
    assert seen.issuer == "someone" and seen.kid == OTHER.kid


def test_key_sets_hold_public_signing_keys_only() -> None:
    keys = import_key_set(SIGNER.private_jwks())  # a careless owner's file
    assert all(not key.is_private for key in keys.keys)
    assert has_kid(keys, SIGNER.kid) and has_kid(keys, None) and not has_kid(keys, "nope")
    for bad in ({}, {"keys": "x"}, {"keys": []}, {"keys": [{"kty": "RSA", "use": "enc"}]}):
        with pytest.raises(KeysUnavailable):
            import_key_set(bad)


# -- the ledger ----------------------------------------------------------------------------------


@pytest.fixture(params=DURABILITY_BACKENDS)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreHarness]:
    async for opened in open_harness(request.param, tmp_path):
        yield opened


async def test_a_jti_is_used_once_per_issuer(harness: StoreHarness) -> None:
    ledger = JtiLedger(harness.store, harness.clock)
    expires = harness.clock.now() + 60
    await ledger.claim("c1", "j1", expires)
    with pytest.raises(AssertionRefused) as refused:
        await ledger.claim("c1", "j1", expires)
    assert refused.value.reason == Refusal.REPLAYED_JTI
    await ledger.claim("c2", "j1", expires)  # another issuer's j1 is another jti


async def test_a_replay_is_refused_after_a_reopen(harness: StoreHarness) -> None:
    await JtiLedger(harness.store, harness.clock).claim("c1", "j1", harness.clock.now() + 60)
    await harness.reopen()  # skips, with its reason, for the memory backend
    with pytest.raises(AssertionRefused) as refused:
        await JtiLedger(harness.store, harness.clock).claim("c1", "j1", harness.clock.now() + 60)
    assert refused.value.reason == Refusal.REPLAYED_JTI


@pytest.mark.parametrize("name", ["redis", "postgres"])
async def test_a_replay_is_refused_by_a_second_instance(name: str, tmp_path: Path) -> None:
    async for harness in open_harness(name, tmp_path):
        other = await BY_NAME[name].open(harness.state, FakeClock())
        try:
            expires = harness.clock.now() + 60
            await JtiLedger(harness.store, harness.clock).claim("c1", "j1", expires)
            with pytest.raises(AssertionRefused) as refused:
                await JtiLedger(other, harness.clock).claim("c1", "j1", expires)
            assert refused.value.reason == Refusal.REPLAYED_JTI
        finally:
            await other.close()
