"""Grants and their tokens: issuing, refresh rotation with safe retries, bearer checks,
revocation and introspection.

A grant is one refresh-token family with one live branch. Both of its tokens are
`<grant id>.<secret>`: the grant id finds the record in O(1), the secret's digest says
which token it is; a resource's JWT access tokens (`oauthd.oauth.access_tokens`) carry
it in their `jti`. Every issuing path mints through `_pair`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from oauthd import crypto
from oauthd.audit import Audit, AuditEvent, grant_ref, reasons
from oauthd.clock import Clock
from oauthd.config import Config
from oauthd.metrics import Metrics
from oauthd.model import Client, Grant
from oauthd.oauth.access_tokens import AccessClaims, Mint, opaque, token_parts
from oauthd.oauth.access_tokens import TokenResponse as TokenResponse
from oauthd.oauth.errors import OAuthError, invalid_grant
from oauthd.oauth.families import superseded_with, was_superseded
from oauthd.oauth.grant_events import GrantEvents
from oauthd.oauth.resources import Targets, canonical_resource
from oauthd.scopes import ScopeHierarchy
from oauthd.store import Store

GrantEndedListener = Callable[[Grant], Coroutine[Any, Any, None]]
BearerCheck = Callable[[str, str], Awaitable[Grant | None]]  # (token, resource) -> grant

LAST_USED_RESOLUTION = 60.0  # write `last_used_at` at most this often per grant
NOT_VALID = "refresh token is not valid (expired, revoked or not yours)"


@dataclass(slots=True, frozen=True)
class _Pair:
    access: crypto.MintedToken
    refresh: crypto.MintedToken


def _digest_in(secret: str, *digests: bytes | None) -> bool:
    return any(crypto.secret_matches(secret, d) for d in digests if d is not None)


class Tokens:
    def __init__(
        self,
        config: Config,
        store: Store,
        clock: Clock,
        metrics: Metrics | None = None,
        minters: Mapping[str, Mint] | None = None,
    ) -> None:
        """`minters`: the access-token mint of each resource whose tokens are not opaque,
        by identifier (`oauthd.oauth.access_tokens.minters`)."""
        self.minters = dict(minters or {})
        self._metrics = metrics or Metrics()
        self._ttl = config.tokens
        self._store = store
        self._clock = clock
        self.targets = Targets(config)
        self.resource = self.targets.identifier(config.default_resource)
        self._metrics.know_resources(r.path for r in config.resources)
        self.scopes = ScopeHierarchy(dict(config.oauth.scope_implies))
        self.events = GrantEvents(self._metrics, self.targets)
        self.grant_ended: list[GrantEndedListener] = []
        self._background: set[asyncio.Task[None]] = set()

    async def end_grant(self, grant_id: str, audit: Audit | None = None) -> Grant | None:
        """Delete a grant (revocation, reuse, a replayed code), with `audit` the record of
        why, and tell the listeners, e.g. the proxy, which closes the grant's MCP sessions
        upstream. Listeners run in the background: the answer does not wait for them."""
        grant = await self._store.grants.take(grant_id, audit=audit)
        if grant is not None:
            for listener in self.grant_ended:
                task = asyncio.create_task(
                    listener(grant), name=f"grant-ended-{grant_ref(grant_id)}"
                )
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        return grant

    async def settle(self, within: float) -> None:
        """At shutdown: give the grant-ended listeners still running (closing MCP sessions
        upstream) up to `within` seconds, then cancel the rest, so that none outlives the
        proxy's client session or the store."""
        pending = set(self._background)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=within)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    def _pair(self, claims: AccessClaims) -> _Pair:
        """A fresh access token (as its resource mints them) and refresh token."""
        mint = self.minters.get(claims.resource, opaque)
        return _Pair(mint(claims), crypto.mint_token(claims.grant_id))

    def _response(self, grant: Grant, pair: _Pair) -> TokenResponse:
        return TokenResponse(
            access_token=pair.access.token,
            refresh_token=pair.refresh.token,
            expires_in=int(self._ttl.access_ttl),
            scope=" ".join(grant.token_scopes),
        )

    async def issue(
        self,
        grant_id: str,
        user: str,
        client_id: str,
        scopes: tuple[str, ...],
        resource: str,
        upstream_tokens: bytes | None = None,
        *,
        grant_type: str = "authorization_code",
        groups: tuple[str, ...] = (),
    ) -> TokenResponse:
        """A new grant with its first token pair (`grant_type`: how it was obtained)."""
        grant, issued = await self.create(
            grant_id,
            user,
            client_id,
            scopes,
            resource,
            upstream_tokens,
            groups=groups,
            grant_type=grant_type,
        )
        self.events.count_issued(grant, grant_type)
        return issued

    async def create(
        self,
        grant_id: str,
        user: str,
        client_id: str,
        scopes: tuple[str, ...],
        resource: str,
        upstream_tokens: bytes | None = None,
        *,
        groups: tuple[str, ...] = (),
        grant_type: str | None = None,
    ) -> tuple[Grant, TokenResponse]:
        """Write a new grant with its first token pair, not yet counted; audited as issued
        with it when `grant_type` is given (the code exchange records it once the code
        is claimed for it). `groups`: the user's at sign-in (`Grant.groups`)."""
        now = self._clock.now()
        pair = self._pair(
            AccessClaims(
                grant_id, user, client_id, scopes, resource, now, now + self._ttl.access_ttl
            )
        )
        grant = Grant.first(
            grant_id,
            user,
            client_id,
            scopes,
            resource,
            access_hash=pair.access.secret_hash,
            refresh_hash=pair.refresh.secret_hash,
            now=now,
            access_expires_at=now + self._ttl.access_ttl,
            expires_at=now + self._ttl.refresh_ttl,
            upstream_tokens=upstream_tokens,
            groups=groups,
        )
        event = None if grant_type is None else self.events.issued(grant, grant_type)
        await self._store.grants.add(grant, audit=event)
        return grant, self._response(grant, pair)

    async def reissue_unused(self, grant_id: str) -> TokenResponse | None:
        """A retried code exchange: a fresh first pair for a grant that was never used (no
        refresh, its access token never presented), which voids the pair issued before (its
        refresh token joins the superseded ones: whoever presents it later ends the family).
        None if the grant is gone or was used: then the retry is a replay."""
        now = self._clock.now()
        current = await self._store.grants.get(grant_id)
        if current is None:
            return None
        pair = self._pair(AccessClaims.of(current, now, self._ttl.access_ttl))

        def again(grant: Grant) -> Grant:
            if grant.rotated_at is not None or grant.successor_used:
                return grant
            return dataclasses.replace(
                grant,
                access_hash=pair.access.secret_hash,
                access_expires_at=now + self._ttl.access_ttl,
                refresh_hash=pair.refresh.secret_hash,
                superseded_hashes=superseded_with(grant, grant.refresh_hash),
                last_used_at=now,
                expires_at=now + self._ttl.refresh_ttl,
            )

        def event(grant: Grant) -> AuditEvent | None:
            return self.events.reissued(grant) if grant.refresh_hash == mine else None

        mine = pair.refresh.secret_hash
        updated = await self._store.grants.update(grant_id, again, audit=event)
        if updated is None or updated.refresh_hash != mine:
            return None
        return self._response(updated, pair)

    # -- refresh -------------------------------------------------------------------------

    async def refresh(
        self, client: Client, refresh_token: str, scope: str | None, resource: str | None
    ) -> TokenResponse:
        parts = crypto.split_token(refresh_token)
        if parts is None:
            raise invalid_grant("malformed refresh token", reasons.MALFORMED_TOKEN)
        grant_id, secret = parts
        current = await self._store.grants.get(grant_id)
        if current is None:
            raise invalid_grant(NOT_VALID, reasons.UNKNOWN_TOKEN)
        if current.client_id != client.client_id:
            raise await self._refusal(current, reasons.WRONG_CLIENT)
        access_scopes = self._narrowed(current, scope)
        if resource is not None and canonical_resource(resource) != canonical_resource(
            current.resource
        ):
            raise OAuthError(
                "invalid_target",
                "resource differs from the one granted",
                reason=reasons.RESOURCE_MISMATCH,
            )
        claims = AccessClaims.of(current, self._clock.now(), self._ttl.access_ttl, access_scopes)
        pair = self._pair(claims)
        rotate = self._rotation(secret, pair, access_scopes)
        mine = pair.refresh.secret_hash

        def event(grant: Grant) -> AuditEvent | None:
            return self.events.refreshed(grant) if grant.refresh_hash == mine else None

        updated = await self._store.grants.update(grant_id, rotate, audit=event)
        if updated is not None and updated.refresh_hash == mine:
            self._metrics.token_refreshed(self.events.path(updated.resource))
            return self._response(updated, pair)
        return await self._refused(grant_id, secret, updated)

    def _rotation(
        self, secret: str, pair: _Pair, access_scopes: tuple[str, ...]
    ) -> Callable[[Grant], Grant]:
        """The change a refresh with `secret` makes to its grant. Pure (it may run again on
        shared backends): it decides from the record it is given, which it returns
        unchanged when `secret` is neither the current token nor a retry."""
        now = self._clock.now()
        grace = self._ttl.refresh_grace

        def rotate(grant: Grant) -> Grant:
            previous: bytes | None
            rotated_at: float | None
            if crypto.secret_matches(secret, grant.refresh_hash):
                previous, rotated_at = grant.refresh_hash, now
            # The superseded token while its successor was never used: a retry of a refresh
            # whose answer was lost (a 503 for a write that timed out but landed, a dropped
            # connection), however late it comes. Not reuse: theft is still caught when
            # whoever holds the voided successor presents it. grace 0 turns retries off.
            elif (
                grace > 0
                and not grant.successor_used
                and crypto.secret_matches(secret, grant.previous_refresh_hash)
            ):
                # a retry: new pair, the unused successor is void (and superseded)
                previous, rotated_at = grant.previous_refresh_hash, grant.rotated_at
            else:
                return grant
            return dataclasses.replace(  # one copy of the record: it has many fields
                grant,
                access_scopes=None if access_scopes == grant.scopes else access_scopes,
                access_hash=pair.access.secret_hash,
                access_expires_at=now + self._ttl.access_ttl,
                refresh_hash=pair.refresh.secret_hash,
                previous_refresh_hash=previous,
                superseded_hashes=superseded_with(grant, grant.refresh_hash),
                successor_used=False,
                rotated_at=rotated_at,
                last_used_at=now,
                expires_at=now + self._ttl.refresh_ttl,
            )

        return rotate

    async def _refused(self, grant_id: str, secret: str, grant: Grant | None) -> TokenResponse:
        # Only a superseded refresh token of this family is reuse (RFC 9700 s4.14.2): the
        # grant keeps the digests of its last SUPERSEDED_KEPT ones. Any other value under the
        # grant id (a guess, a typo, the access token sent by mistake) is refused and the
        # grant kept, so that knowing a grant id is not enough to end someone's session.
        if grant is None:
            raise invalid_grant(NOT_VALID, reasons.UNKNOWN_TOKEN)
        if was_superseded(secret, grant):
            # the previous token once its successor was used (or retries are off) is a
            # replay after the grace; an older one is a superseded token replayed
            previous = crypto.secret_matches(secret, grant.previous_refresh_hash)
            reason = (
                reasons.REPLAY_AFTER_GRACE
                if previous
                else reasons.SUPERSEDED_REFRESH_TOKEN_REPLAYED
            )
            await self.end_replayed(grant_id, "refresh_token", reason)  # the whole family
            raise invalid_grant("refresh token was already used; the session is revoked", reason)
        raise await self._refusal(grant, reasons.TOKEN_NOT_CURRENT)

    async def _refusal(self, grant: Grant, reason: str) -> OAuthError:
        """The invalid_grant of a refresh that names a live grant, recorded (its user and
        client are known)."""
        await self._store.audit.append(self.events.refused(grant, "token", "invalid_grant", reason))
        return invalid_grant(NOT_VALID, reason)

    async def end_replayed(self, grant_id: str, token_type: str, reason: str) -> Grant | None:
        """End the grant of a replayed refresh token or code, recorded and counted."""
        ended = await self.end_grant(
            grant_id, audit=lambda g: self.events.reuse(g, token_type, reason)
        )
        if ended is not None:
            self.events.count_reuse(token_type)
        return ended

    def _narrowed(self, grant: Grant, scope: str | None) -> tuple[str, ...]:
        if scope is None:
            return grant.scopes
        wanted = tuple(dict.fromkeys(scope.split()))
        extra = self.scopes.missing(frozenset(grant.scopes), wanted)  # implied ones are held
        if extra:
            raise OAuthError("invalid_scope", f"scope {extra[0]!r} was not granted")
        return wanted

    # -- bearer ----------------------------------------------------------------------------

    async def verify_bearer(self, token: str, resource: str | None = None) -> Grant | None:
        """The grant of a valid, unexpired access token bound to `resource` (None: the
        default one), else None (RFC 8707). Using it ends the old refresh token's retries."""
        parts = token_parts(token)
        if parts is None:
            return None
        grant = await self._store.grants.get(parts[0])
        now = self._clock.now()
        if (
            grant is None
            or not crypto.secret_matches(parts[1], grant.access_hash)
            or grant.access_expires_at <= now
            or grant.resource != (resource or self.resource)
        ):
            return None
        if not grant.successor_used or now - grant.last_used_at >= LAST_USED_RESOLUTION:
            grant = await self._mark_used(grant, now) or grant
        return grant

    async def _mark_used(self, grant: Grant, now: float) -> Grant | None:
        access_hash = grant.access_hash

        def used(current: Grant) -> Grant:
            if current.access_hash != access_hash:
                return current  # rotated meanwhile: the token checked is no longer current
            if current.successor_used and now - current.last_used_at < LAST_USED_RESOLUTION:
                return current  # a concurrent request marked it already: no second write
            return dataclasses.replace(current, successor_used=True, last_used_at=now)

        return await self._store.grants.update(grant.id, used)

    # -- revocation and introspection --------------------------------------------------------

    async def revoke(self, client: Client, token: str) -> None:
        """RFC 7009: unknown or foreign tokens are ignored (the caller answers 200 anyway).
        A refresh token ends its grant; an access token is voided, its grant kept."""
        parts = token_parts(token)
        grant = await self._store.grants.get(parts[0]) if parts else None
        if parts is None or grant is None or grant.client_id != client.client_id:
            return
        grant_id, secret = parts
        if _digest_in(secret, grant.refresh_hash, grant.previous_refresh_hash):
            revoked = self.events.revoked(grant, "refresh_token", "client")
            if await self.end_grant(grant_id, audit=revoked) is not None:
                self.events.count_revoked(grant, "refresh_token")
        elif _digest_in(secret, grant.access_hash):
            void = crypto.hash_secret(crypto.new_secret())

            def voided(current: Grant) -> Grant:
                if current.access_hash != grant.access_hash:
                    return current
                return dataclasses.replace(current, access_hash=void, access_expires_at=0.0)

            def event(current: Grant) -> AuditEvent | None:
                if current.access_hash != void:
                    return None
                return self.events.revoked(current, "access_token", "client")

            updated = await self._store.grants.update(grant_id, voided, audit=event)
            if updated is not None and updated.access_hash == void:
                self.events.count_revoked(grant, "access_token")

    async def revoke_grant(self, grant_id: str, *, by: str) -> Grant | None:
        """End a whole grant on request (`by`: "account" for its user, "consent", "admin",
        "client_deleted", "upstream_refresh_failed": `reasons.grant_ended_by`), counted
        and audited as a revocation; None if it was not there."""
        grant = await self.end_grant(grant_id, audit=lambda g: self.events.revoked(g, "grant", by))
        if grant is not None:
            self.events.count_revoked(grant, "grant")
        return grant

    async def introspect(self, token: str, issuer: str) -> dict[str, Any]:
        """RFC 7662. Anything not active gets only `{"active": false}`."""
        parts = token_parts(token)
        grant = await self._store.grants.get(parts[0]) if parts else None
        if parts is None or grant is None:
            return {"active": False}
        now = self._clock.now()
        if crypto.secret_matches(parts[1], grant.access_hash) and grant.access_expires_at > now:
            kind, expires, scopes = "access_token", grant.access_expires_at, grant.token_scopes
        elif crypto.secret_matches(parts[1], grant.refresh_hash):
            kind, expires, scopes = "refresh_token", grant.expires_at or 0.0, grant.scopes
        else:
            return {"active": False}
        return {
            "active": True,
            "token_type": "Bearer" if kind == "access_token" else kind,
            "client_id": grant.client_id,
            "username": grant.user,
            "sub": grant.user,
            "scope": " ".join(scopes),
            "aud": grant.resource,
            "iss": issuer,
            "exp": int(expires),
            "iat": int(grant.created_at),
        }
