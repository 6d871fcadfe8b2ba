"""The signing key ring (`oauthd/oauth/signing.py`) on every backend: the first key, a
rotation published before it signs, the promotion after the JWKS cache lifetime, a
retired key published until what it signed expired, two instances racing, a restart."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from oauthd.crypto import Sealer
from oauthd.model import KEY_ACTIVE, KEY_NEXT, KEY_RETIRED
from oauthd.oauth.signing import KeyRing, KeyRingError, RingPolicy
from oauthd.store import Store
from tests.support.backends import CONTRACT_BACKENDS, StoreHarness, open_harness
from tests.support.postgres import postgres_dump
from tests.support.redis_backend import redis_dump
from tests.support.secrets_scan import assert_no_secret, private_key_forms, state_files

MAX_AGE = 300.0
LONGEST = 3600.0
POLICY = RingPolicy("ES256", MAX_AGE, LONGEST)
# published before it signs, and after what it signed expired: every instance re-read the
# ring (at most 30 s), then every verifier's cached JWKS expired (MAX_AGE)
PUBLISH = MAX_AGE + 30
SEALER = Sealer(os.urandom(32))


@pytest.fixture(params=CONTRACT_BACKENDS)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreHarness]:
    async for h in open_harness(request.param, tmp_path):
        yield h


def ring_on(store: Store, harness: StoreHarness, policy: RingPolicy = POLICY) -> KeyRing:
    return KeyRing(store, SEALER, harness.clock, policy)


def kids(jwks: dict[str, object]) -> list[str]:
    keys = jwks["keys"]
    assert isinstance(keys, list)
    return [k["kid"] for k in keys]


def verifies(token: str, ring: KeyRing) -> bool:
    try:
        jwt.decode(token, KeySet.import_key_set(ring.jwks()))  # type: ignore[arg-type]
    except Exception:
        return False
    return True


async def test_first_start_makes_one_active_key(harness: StoreHarness) -> None:
    ring = ring_on(harness.store, harness)
    await ring.refresh()
    [key] = ring.members()
    assert (key.kid, key.state, key.alg) == ("k1", KEY_ACTIVE, "ES256")
    assert kids(ring.jwks()) == ["k1"]
    assert "d" not in ring.jwks()["keys"][0]  # public only
    token = ring.sign({"typ": "test+jwt"}, {"sub": "alice"})
    assert jwt.decode(token, KeySet.import_key_set(ring.jwks())).claims == {"sub": "alice"}


async def test_a_rotation_is_published_before_it_signs_and_promoted_after_max_age(
    harness: StoreHarness,
) -> None:
    ring = ring_on(harness.store, harness)
    await ring.refresh()
    added = await ring.rotate()
    assert (added.kid, added.state) == ("k2", KEY_NEXT)
    assert added.activate_after == harness.clock.now() + PUBLISH
    assert kids(ring.jwks()) == ["k2", "k1"]
    assert ring.active.kid == "k1"  # published, not signing
    before = ring.sign({}, {"n": 1})

    harness.clock.advance(PUBLISH - 1)
    await ring.refresh()
    assert ring.active.kid == "k1"
    harness.clock.advance(1)
    await ring.refresh()
    assert ring.active.kid == "k2"
    old = next(k for k in ring.members() if k.kid == "k1")
    assert old.state == KEY_RETIRED
    assert old.expires_at == harness.clock.now() + PUBLISH + LONGEST
    assert verifies(before, ring)  # what k1 signed still verifies

    harness.clock.advance(PUBLISH + LONGEST - 1)
    await ring.refresh()
    assert kids(ring.jwks()) == ["k2", "k1"]
    harness.clock.advance(1)
    await ring.refresh()
    assert kids(ring.jwks()) == ["k2"]  # expired: gone, and purged like any record
    assert not verifies(before, ring)
    await harness.store.purge_expired()
    assert [k.kid async for k in harness.store.signing_keys.scan()] == ["k2"]


async def test_two_instances_starting_at_once_end_with_one_active_key(
    harness: StoreHarness,
) -> None:
    other = await second_store(harness)
    try:
        rings = [ring_on(harness.store, harness), ring_on(other, harness)]
        await asyncio.gather(*(r.refresh() for r in rings))
        assert [k.kid async for k in harness.store.signing_keys.scan()] == ["k1"]
        assert rings[0].active.kid == rings[1].active.kid == "k1"
        token = rings[1].sign({}, {"sub": "x"})
        assert verifies(token, rings[0])
        # ... and rotating at once adds one next key
        results = await asyncio.gather(*(r.rotate() for r in rings), return_exceptions=True)
        assert sum(isinstance(r, KeyRingError) for r in results) == 1
        states = sorted([(k.kid, k.state) async for k in harness.store.signing_keys.scan()])
        assert states == [("k1", KEY_ACTIVE), ("k2", KEY_NEXT)]
    finally:
        if other is not harness.store:
            await other.close()


async def second_store(harness: StoreHarness) -> Store:
    """Another instance's store: a second connection to a shared server; the same store
    for the in-process backends (the file backend's lock allows one)."""
    if harness.backend.storage is None:
        return harness.store
    return await harness.backend.open(harness.state, harness.clock)


async def test_a_promotion_made_by_one_instance_reaches_the_other(harness: StoreHarness) -> None:
    other = await second_store(harness)
    try:
        first, second = ring_on(harness.store, harness), ring_on(other, harness)
        await first.refresh()
        await second.refresh()
        await first.rotate()
        await second.refresh()
        assert kids(second.jwks()) == ["k2", "k1"]
        harness.clock.advance(PUBLISH)
        await second.refresh()  # the other instance notices first, and promotes
        assert second.active.kid == "k2"
        await first.refresh()
        assert first.active.kid == "k2"
        assert verifies(first.sign({}, {}), second)
    finally:
        if other is not harness.store:
            await other.close()


async def test_a_restart_keeps_the_keys(harness: StoreHarness) -> None:
    ring = ring_on(harness.store, harness)
    await ring.refresh()
    await ring.rotate()
    token = ring.sign({}, {"sub": "alice"})
    jwks = ring.jwks()
    store = await harness.reopen()
    again = ring_on(store, harness)
    await again.refresh()
    assert again.jwks() == jwks
    assert again.active.kid == "k1"
    assert verifies(token, again)
    assert again.sign({}, {"sub": "alice"}).split(".")[0] == token.split(".")[0]


async def test_retire_drops_a_next_key_and_refuses_the_only_active_key(
    harness: StoreHarness,
) -> None:
    ring = ring_on(harness.store, harness)
    await ring.refresh()
    with pytest.raises(KeyRingError, match="no next key"):
        await ring.retire("k1")
    with pytest.raises(KeyRingError) as missing:
        await ring.retire("k9")
    assert missing.value.missing
    await ring.rotate()
    dropped, promoted = await ring.retire("k2")
    assert (dropped.state, promoted) == (KEY_RETIRED, None)
    assert dropped.expires_at == harness.clock.now() + PUBLISH  # it signed nothing
    assert ring.active.kid == "k1"
    with pytest.raises(KeyRingError, match="retired already"):
        await ring.retire("k2")


async def test_retiring_the_active_key_promotes_the_next_at_once(harness: StoreHarness) -> None:
    ring = ring_on(harness.store, harness)
    await ring.refresh()
    await ring.rotate()
    retired, promoted = await ring.retire("k1")
    assert retired.state == KEY_RETIRED
    assert promoted is not None and promoted.kid == "k2"
    assert ring.active.kid == "k2"
    assert retired.expires_at == harness.clock.now() + PUBLISH + LONGEST


async def test_automatic_rotation(harness: StoreHarness) -> None:
    policy = RingPolicy("ES256", MAX_AGE, LONGEST, rotate_every=10 * MAX_AGE)
    ring = ring_on(harness.store, harness, policy)
    await ring.refresh()
    harness.clock.advance(10 * MAX_AGE - 1)
    await ring.refresh()
    assert [k.kid for k in ring.members()] == ["k1"]
    harness.clock.advance(1)
    await ring.refresh()
    assert [(k.kid, k.state) for k in ring.members()] == [("k1", KEY_ACTIVE), ("k2", KEY_NEXT)]
    harness.clock.advance(PUBLISH)
    await ring.refresh()
    assert ring.active.kid == "k2"


async def test_rs256(harness: StoreHarness) -> None:
    ring = ring_on(harness.store, harness, RingPolicy("RS256", MAX_AGE, LONGEST))
    await ring.refresh()
    assert ring.jwks()["keys"][0]["kty"] == "RSA"
    assert verifies(ring.sign({}, {"sub": "a"}), ring)


async def test_the_private_key_is_sealed_with_the_kid(harness: StoreHarness) -> None:
    ring = ring_on(harness.store, harness)
    await ring.refresh()
    [key] = [k async for k in harness.store.signing_keys.scan()]
    assert b"PRIVATE KEY" not in key.sealed_private
    assert b"PRIVATE KEY" in SEALER.open(key.sealed_private, "k1")
    with pytest.raises(ValueError):
        SEALER.open(key.sealed_private, "k2")


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
async def test_no_private_key_in_clear_at_rest(harness: StoreHarness, algorithm: str) -> None:
    ring = ring_on(harness.store, harness, RingPolicy(algorithm, MAX_AGE, LONGEST))
    await ring.refresh()
    await ring.rotate()
    records = [k async for k in harness.store.signing_keys.scan()]
    forms = [private_key_forms(SEALER.open(k.sealed_private, k.kid)) for k in records]
    if harness.backend.durable:
        await harness.close()  # the file backend's final snapshot
    places = await at_rest(harness)
    if harness.backend.durable:
        assert any(b"k2" in content for content in places.values())  # the scan sees them
        await harness.open()
    assert_no_secret({f for found in forms for f in found}, places)


async def at_rest(harness: StoreHarness) -> dict[str, bytes]:
    """What the backend keeps: the state dir's files, the Redis keys, the PostgreSQL rows."""
    if harness.name == "redis":
        return await redis_dump(harness.state)
    if harness.name == "postgres":
        return await postgres_dump(harness.state)
    return state_files(harness.state.path)
