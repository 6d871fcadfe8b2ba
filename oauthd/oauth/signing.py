"""oauthd's signing key ring: the keys that sign the identity assertions sent upstream and
the JWT access tokens, published at `/.well-known/jwks.json` (`KeyRing.jwks`).

The ring is state like any other record (`store.signing_keys`): every instance of a
shared deployment signs and verifies with the same keys, and a restart never changes them.
A private key is kept sealed (AES-256-GCM with the session key, the kid as associated
data), never in clear, never logged.

Life of a key: `next` (published, not signing) -> `active` (signs; exactly one) ->
`retired` (published until what it signed has expired, then purged like any expired
record). Kids are a serial, `k<n>`: adding the key `k<n+1>` is how an instance claims the
ring's next step, so two instances starting at once (or rotating at once) cannot both add
one (`Table.add` raises `Conflict` for the second). A promotion is a compare-and-swap of
the next key's state: whichever instance notices first makes it, once. While a promotion
is half done (the new key active, the old one not retired yet), the newest active key
signs; the next `refresh` retires the older one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from oauthd.audit import AuditEvent
from oauthd.clock import Clock
from oauthd.config import Config
from oauthd.crypto import Sealer
from oauthd.model import KEY_ACTIVE, KEY_NEXT, KEY_RETIRED, SigningKey
from oauthd.store import Conflict, Store, Unavailable

log = logging.getLogger("oauthd.keys")

IDENTITY_TTL = 60  # seconds an identity assertion (oauthd.oauth.identity_jwt) is valid
REFRESH_EVERY = 30.0  # at most this long between two reads of the ring (see `RingPolicy`)
RSA_BITS = 2048
SigningJwk = ECKey | RSAKey


class KeyRingError(Exception):
    """An operator's change the ring refuses; `missing`: the kid names no key."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


@dataclass(slots=True, frozen=True)
class RingPolicy:
    algorithm: str  # of new keys: "ES256" | "RS256"
    max_age: float  # the JWKS document's cache lifetime (`keys.jwks_max_age`)
    longest_signed: float  # the longest lifetime of anything a key signs
    rotate_every: float = 0.0  # 0: only `oauthd keys rotate`

    @property
    def refresh_every(self) -> float:
        """How stale an instance's view of the ring may be: it re-reads the ring this
        often (at most REFRESH_EVERY, at most `max_age`)."""
        return min(REFRESH_EVERY, self.max_age)

    @property
    def publish_for(self) -> float:
        """How long a key is published before it may sign, and after the last thing it
        signed expired: every instance's JWKS document shows the change (`refresh_every`),
        then every verifier's cache of the old document expires (`max_age`)."""
        return self.max_age + self.refresh_every


def key_ring(config: Config, store: Store, sealer: Sealer, clock: Clock) -> KeyRing:
    """The ring of `config` on `store`, its private keys sealed by `sealer` (the session
    key); a retired key stays published until the longest-lived thing it signs expired
    (an identity assertion; a JWT access token if some resource has them)."""
    jwt_tokens = any(r.upstream.access_token_format == "jwt" for r in config.resources)
    longest = max(IDENTITY_TTL, config.tokens.access_ttl if jwt_tokens else 0.0)
    keys = config.keys
    policy = RingPolicy(keys.algorithm, keys.jwks_max_age, longest, keys.rotate_every)
    return KeyRing(store, sealer, clock, policy)


def serial(kid: str) -> int:
    """The place of a key in the ring's history (`k12` -> 12); 0 for a foreign kid."""
    digits = kid[1:]
    return int(digits) if kid.startswith("k") and digits.isdigit() else 0


def new_jwk(algorithm: str) -> SigningJwk:
    if algorithm == "RS256":
        return RSAKey.generate_key(RSA_BITS, private=True)
    return ECKey.generate_key("P-256", private=True)


class KeyRing:
    """The ring as this instance last read it, and the changes it makes to it."""

    def __init__(self, store: Store, sealer: Sealer, clock: Clock, policy: RingPolicy) -> None:
        self._table = store.signing_keys
        self._sealer = sealer
        self._clock = clock
        self.policy = policy
        self._keys: list[SigningKey] = []
        self._private: dict[str, SigningJwk] = {}  # opened keys, by kid
        self._signer: tuple[SigningKey, SigningJwk] | None = None
        self.refreshed = 0  # how many times the ring was read (for tests)
        self._changed = asyncio.Event()  # an operator's change: plan the next read again

    # -- reading ------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._signer is not None

    def members(self) -> list[SigningKey]:
        """The live keys as last read, oldest first."""
        return list(self._keys)

    @property
    def active(self) -> SigningKey:
        """The key that signs now."""
        if self._signer is None:
            raise RuntimeError("the key ring is not loaded")
        return self._signer[0]

    def jwks(self) -> dict[str, Any]:
        """The JWKS document: the public keys of every live key (next, active, retired
        but not expired), newest first."""
        now = self._clock.now()
        keys = [k for k in reversed(self._keys) if k.expires_at is None or k.expires_at > now]
        return {"keys": [orjson.loads(k.public_jwk) for k in keys]}

    def sign(self, header: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
        """A JWS compact token of `claims` by the active key (its `alg` and `kid` set in
        the header). No I/O: the key is in memory."""
        key, private = self._signer or self._not_loaded()
        full = {**header, "alg": key.alg, "kid": key.kid}
        return jwt.encode(full, dict(claims), private, algorithms=[key.alg])

    def _not_loaded(self) -> tuple[SigningKey, SigningJwk]:
        raise RuntimeError("the key ring is not loaded")

    # -- refresh ------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read the ring again and take the steps that are due: the first key of an empty
        ring, a promotion whose time has come (and the retirement it implies), an
        automatic rotation. Safe on every instance at once."""
        keys = await self._read()
        if not any(k.state == KEY_ACTIVE for k in keys):
            await self._add_first(keys)
            keys = await self._read()
        if await self._step(keys):
            keys = await self._read()
        self._take(keys)

    async def _read(self) -> list[SigningKey]:
        keys = [k async for k in self._table.scan()]
        return sorted(keys, key=lambda k: serial(k.kid))

    def _take(self, keys: list[SigningKey]) -> None:
        actives = [k for k in keys if k.state == KEY_ACTIVE]
        if not actives:
            raise Unavailable("the signing key ring has no active key yet")
        newest = actives[-1]
        self._keys = keys
        self._signer = (newest, self._open(newest))
        self.refreshed += 1

    def _open(self, key: SigningKey) -> SigningJwk:
        private = self._private.get(key.kid)
        if private is None:
            pem = self._sealer.open(key.sealed_private, key.kid)
            kind = RSAKey if key.alg == "RS256" else ECKey
            private = self._private[key.kid] = kind.import_key(pem)
        return private

    async def _add_first(self, keys: list[SigningKey]) -> None:
        """An empty ring (first start): an active key at once (nobody trusts any key yet,
        so there is nothing to pre-publish). Of several instances, one adds it."""
        kid = f"k{serial(keys[-1].kid) + 1 if keys else 1}"
        now = self._clock.now()
        record = self._new_key(kid, KEY_ACTIVE, now, activate_after=now)
        with contextlib.suppress(Conflict):  # another instance was first
            await self._table.add(record, audit=key_event("key_created", record))

    async def _step(self, keys: list[SigningKey]) -> bool:
        """What is due now; whether the ring changed."""
        now = self._clock.now()
        changed = False
        for key in keys:
            if key.state == KEY_NEXT and key.activate_after <= now:
                changed |= await self._promote(key.kid)
        actives = [k for k in keys if k.state == KEY_ACTIVE]
        if changed:
            actives = [k for k in await self._read() if k.state == KEY_ACTIVE]
        for older in actives[:-1]:  # a promotion half done: finish it
            changed |= await self._retire(older.kid, now) is not None
        if self._rotation_due(keys, now):
            changed |= await self._add_next(keys) is not None
        return changed

    def _rotation_due(self, keys: list[SigningKey], now: float) -> bool:
        every = self.policy.rotate_every
        if not every or any(k.state == KEY_NEXT for k in keys):
            return False
        actives = [k for k in keys if k.state == KEY_ACTIVE]
        return bool(actives) and (actives[-1].activated_at or 0.0) + every <= now

    async def _promote(self, kid: str) -> bool:
        now = self._clock.now()

        def promoted(key: SigningKey) -> SigningKey:
            if key.state != KEY_NEXT:
                return key  # another instance promoted (or dropped) it meanwhile
            return dataclasses.replace(key, state=KEY_ACTIVE, activated_at=now)

        def event(key: SigningKey) -> AuditEvent | None:
            return key_event("key_rotated", key) if key.activated_at == now else None

        after = await self._table.update(kid, promoted, audit=event)
        return after is not None and after.state == KEY_ACTIVE and after.activated_at == now

    async def _retire(self, kid: str, now: float) -> SigningKey | None:
        """Retire an active key (kept published until what it signed expired), or drop a
        next key (it signed nothing: published only until caches forget it). None if it
        was retired already."""
        expires = now + self.policy.publish_for

        def retired(key: SigningKey) -> SigningKey:
            if key.state == KEY_RETIRED:
                return key
            last = expires + (self.policy.longest_signed if key.state == KEY_ACTIVE else 0.0)
            return dataclasses.replace(key, state=KEY_RETIRED, retired_at=now, expires_at=last)

        def event(key: SigningKey) -> AuditEvent | None:
            return key_event("key_retired", key) if key.retired_at == now else None

        after = await self._table.update(kid, retired, audit=event)
        if after is None or after.retired_at != now:
            return None
        return after

    def _new_key(self, kid: str, state: str, now: float, *, activate_after: float) -> SigningKey:
        algorithm = self.policy.algorithm
        private = new_jwk(algorithm)
        public = {**private.as_dict(private=False), "kid": kid, "alg": algorithm, "use": "sig"}
        return SigningKey(
            kid=kid,
            alg=algorithm,
            state=state,
            public_jwk=orjson.dumps(public).decode(),
            sealed_private=self._sealer.seal(private.as_pem(private=True), kid),
            created_at=now,
            activate_after=activate_after,
            activated_at=now if state == KEY_ACTIVE else None,
            retired_at=None,
            expires_at=None,
        )

    async def _add_next(self, keys: list[SigningKey]) -> SigningKey | None:
        """A next key, signing from one JWKS cache lifetime on; None if another instance
        added a key at that place first."""
        now = self._clock.now()
        kid = f"k{serial(keys[-1].kid) + 1 if keys else 1}"
        record = self._new_key(kid, KEY_NEXT, now, activate_after=now + self.policy.publish_for)
        try:
            await self._table.add(record, audit=key_event("key_created", record))
        except Conflict:
            return None
        return record

    # -- the operator's changes (`oauthd keys ...`) ---------------------------------------

    async def rotate(self) -> SigningKey:
        """Add a next key (published now, signing from `activate_after`). Refused while a
        next key waits already."""
        keys = await self._read()
        waiting = [k for k in keys if k.state == KEY_NEXT]
        if waiting:
            raise KeyRingError(
                f"key {waiting[0].kid} is already waiting to sign; retire it first to replace it"
            )
        added = await self._add_next(keys)
        if added is None:
            raise KeyRingError("another instance changed the key ring meanwhile; try again")
        await self.refresh()
        self._changed.set()  # promote it on time
        return added

    async def retire(self, kid: str) -> tuple[SigningKey, SigningKey | None]:
        """Retire `kid`: a next key is dropped; the active key only when a next key is
        there, which is promoted at once (an emergency rotation: caches may not know the
        new key yet). The retired key, and the key promoted, if any."""
        keys = await self._read()
        key = next((k for k in keys if k.kid == kid), None)
        if key is None:
            raise KeyRingError(f"no signing key {kid!r}", missing=True)
        if key.state == KEY_RETIRED:
            raise KeyRingError(f"key {kid} is retired already")
        promoted = None
        if key.state == KEY_ACTIVE:
            waiting = [k for k in keys if k.state == KEY_NEXT]
            if not waiting:
                raise KeyRingError(
                    f"key {kid} is the active key and no next key is there to take over; "
                    "run `oauthd keys rotate` first"
                )
            if await self._promote(waiting[-1].kid):
                promoted = await self._table.get(waiting[-1].kid)
        retired = await self._retire(kid, self._clock.now())
        if retired is None:
            raise KeyRingError("another instance changed the key ring meanwhile; try again")
        await self.refresh()
        return retired, promoted

    # -- the background task --------------------------------------------------------------

    def _pause(self) -> float:
        """Seconds until the next read: `refresh_every`, sooner when a next key is due to
        sign."""
        now = self._clock.now()
        due = [k.activate_after - now for k in self._keys if k.state == KEY_NEXT]
        return max(0.05, min([self.policy.refresh_every, *due]))

    async def _keep_fresh(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._pause()):
                    await self._changed.wait()
            self._changed.clear()
            try:
                await self.refresh()
            except Unavailable as exc:
                log.warning(
                    "signing keys not re-read: store unavailable",
                    extra={"event": "keys.refresh_failed", "reason": exc.reason},
                )
            except Exception:
                log.error("signing keys not re-read", exc_info=True, extra={"event": "keys.error"})

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[KeyRing]:
        """The ring loaded (its first key made on an empty ring), re-read in the
        background while the block runs."""
        await self.refresh()
        task = asyncio.create_task(self._keep_fresh(), name="signing-keys")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def key_event(event: str, key: SigningKey) -> AuditEvent:
    """A signing key created (next, or the first active), rotated (it signs from now on)
    or retired."""
    return AuditEvent(
        event,
        detail={
            "kid": key.kid,
            "alg": key.alg,
            "state": key.state,
            "activate_after": int(key.activate_after),
            "expires_at": None if key.expires_at is None else int(key.expires_at),
        },
    )
