"""Login through an upstream identity provider (OIDC or GitHub), the protocol side.

The confused-deputy rules (MCP security best practices): the user consents to the MCP client
first; only then is a random, single-use upstream `state` minted and the browser sent to the
provider. The state is `<pending id>.<secret>` (only its digest is kept, sealed with the
nonce and PKCE verifier in the pending record), so the callback finds its flow in O(1).
The provider's tokens are kept sealed (AES-256-GCM) and bound to each record they move
through: pending authorization -> code -> grant.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from oauthd import crypto
from oauthd.audit import AuditEvent, reasons
from oauthd.metrics import Metrics
from oauthd.model import Grant, PendingAuthorization
from oauthd.oauth.authorize import Authorizer, Flow
from oauthd.oauth.errors import page_error
from oauthd.oauth.login import record_login
from oauthd.store import Store

CLAIMED = b"claimed:"  # the leg is being redeemed: a second callback must fail


class UpstreamError(Exception):
    """The provider refused or answered something unusable; the message says what."""


@dataclass(slots=True, frozen=True)
class UpstreamIdentity:
    username: str
    tokens: dict[str, Any]  # the provider's token response (access, refresh, expiry)
    groups: tuple[str, ...] = ()  # OIDC: the ID token's `login.oidc.groups_claim`


class IdentityProvider(Protocol):
    """The I/O part (discovery, token exchange, id_token validation) lives in
    `oauthd.outbound.idp`."""

    async def authorization_endpoint(self) -> str:
        """Where `authorization_url` points (pages must allow forms to redirect there)."""
        ...

    async def authorization_url(
        self, *, state: str, nonce: str, code_challenge: str, redirect_uri: str
    ) -> str: ...

    async def identify(
        self, *, code: str, code_verifier: str, nonce: str, redirect_uri: str
    ) -> UpstreamIdentity: ...

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        """New provider tokens from a refresh token; `UpstreamError` if refused."""
        ...

    async def close(self) -> None: ...


class UpstreamLogin:
    def __init__(
        self,
        store: Store,
        authorizer: Authorizer,
        provider: IdentityProvider,
        sealer: crypto.Sealer,
        issuer: str,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics or Metrics()
        self._store = store
        self._authorizer = authorizer
        self._provider = provider
        self._sealer = sealer
        self.callback_uri = f"{issuer}/login/callback"

    async def begin(self, flow: Flow) -> str:
        """After consent: mint the upstream leg and return the provider's authorization URL."""
        state = crypto.mint_token(flow.pending.id)
        leg = {
            "state": state.secret_hash.hex(),
            "nonce": crypto.new_secret(),
            "verifier": crypto.new_secret(),
        }
        sealed = self._sealer.seal(orjson.dumps(leg), flow.pending.id)

        def with_leg(pending: PendingAuthorization) -> PendingAuthorization:
            return dataclasses.replace(pending, upstream=sealed)

        if await self._store.pending.update(flow.pending.id, with_leg) is None:
            raise page_error("invalid_request", "This sign-in request has expired.")
        return await self._provider.authorization_url(
            state=state.token,
            nonce=leg["nonce"],
            code_challenge=crypto.pkce_challenge(leg["verifier"]),
            redirect_uri=self.callback_uri,
        )

    async def form_target(self) -> str:
        return await self._provider.authorization_endpoint()

    async def flow_of(self, state: str, browser_secret: str | None) -> Flow:
        """The flow an upstream callback belongs to (for an error answer)."""
        parts = crypto.split_token(state)
        if parts is None:
            raise page_error("invalid_request", "The sign-in response is not valid (state).")
        return await self._authorizer.flow(parts[0], browser_secret, pages=True)

    async def complete(self, state: str, code: str, browser_secret: str | None) -> Flow:
        """The provider's callback: check the state (single use), identify the user."""
        parts = crypto.split_token(state)
        if parts is None:
            raise page_error("invalid_request", "The sign-in response is not valid (state).")
        flow = await self._authorizer.flow(parts[0], browser_secret, pages=True)
        leg = self._claim_leg(flow.pending, parts[1])
        leg_seen, claim = flow.pending.upstream, CLAIMED + crypto.new_secret().encode()

        def claimed(pending: PendingAuthorization) -> PendingAuthorization:
            if pending.upstream != leg_seen:
                return pending
            return dataclasses.replace(pending, upstream=claim)

        consumed = await self._store.pending.update(flow.pending.id, claimed)
        if consumed is None or consumed.upstream != claim:  # another callback was first
            raise page_error("invalid_request", "This sign-in response was already used.")
        try:
            identity = await self._provider.identify(
                code=code,
                code_verifier=leg["verifier"],
                nonce=leg["nonce"],
                redirect_uri=self.callback_uri,
            )
        except UpstreamError as exc:
            await self._login_audit("failure", None, flow)
            raise page_error(
                "access_denied",
                f"The identity provider refused: {exc}",
                reason=reasons.PROVIDER_REFUSED,
            ) from None
        signed_in = await self._signed_in(flow, identity)
        await self._login_audit("success", identity.username, flow)
        return signed_in

    async def _login_audit(self, result: str, user: str | None, flow: Flow) -> None:
        client_id = flow.client.client_id if flow.returns_to is None else None
        await record_login(
            self._store, self._metrics, result, method="upstream", user=user, client_id=client_id
        )

    def _claim_leg(self, pending: PendingAuthorization, secret: str) -> dict[str, str]:
        if pending.upstream is None or pending.upstream.startswith(CLAIMED) or pending.user:
            raise page_error("invalid_request", "This sign-in response was already used.")
        try:
            leg: dict[str, str] = orjson.loads(self._sealer.open(pending.upstream, pending.id))
        except ValueError:
            raise page_error("invalid_request", "The sign-in response is not valid.") from None
        if not crypto.secret_matches(secret, bytes.fromhex(leg["state"])):
            raise page_error("invalid_request", "The sign-in response is not valid (state).")
        return leg

    async def _signed_in(self, flow: Flow, identity: UpstreamIdentity) -> Flow:
        sealed = self._sealer.seal(orjson.dumps(identity.tokens), flow.pending.id)

        def signed_in(pending: PendingAuthorization) -> PendingAuthorization:
            return dataclasses.replace(
                pending, user=identity.username, upstream=sealed, groups=identity.groups
            )

        pending = await self._store.pending.update(flow.pending.id, signed_in)
        if pending is None:
            raise page_error("invalid_request", "This sign-in request has expired.")
        return Flow(pending, flow.client)


class UpstreamTokens:
    """The user's provider tokens kept with a grant, for the proxy to forward; refreshed
    through the provider when the access token has expired."""

    EARLY = 30.0  # refresh this long before the provider's expiry

    def __init__(
        self, store: Store, provider: IdentityProvider, sealer: crypto.Sealer, now: Any
    ) -> None:
        self._store = store
        self._provider = provider
        self._sealer = sealer
        self._now = now

    async def access_token(self, grant: Grant) -> str | None:
        if grant.upstream_tokens is None:
            return None
        try:
            tokens: dict[str, Any] = orjson.loads(
                self._sealer.open(grant.upstream_tokens, grant.id)
            )
        except ValueError:
            return None
        expires_at = tokens.get("expires_at")
        if isinstance(expires_at, int | float) and expires_at - self.EARLY <= self._now():
            tokens = await self._refreshed(grant, tokens) or tokens
        access = tokens.get("access_token")
        return access if isinstance(access, str) else None

    async def _refreshed(self, grant: Grant, tokens: dict[str, Any]) -> dict[str, Any] | None:
        refresh = tokens.get("refresh_token")
        if not isinstance(refresh, str):
            return None
        try:
            fresh = await self._provider.refresh(refresh)
        except UpstreamError:
            self._store.audit.append_soon(
                AuditEvent.of_grant(
                    "upstream_refresh_failed", grant, reason=reasons.UPSTREAM_REFRESH_FAILED
                )
            )
            return None
        fresh.setdefault("refresh_token", refresh)
        sealed = self._sealer.seal(orjson.dumps(fresh), grant.id)
        await self._store.grants.update(
            grant.id, lambda g: dataclasses.replace(g, upstream_tokens=sealed)
        )
        return fresh
