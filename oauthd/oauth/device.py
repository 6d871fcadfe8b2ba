"""RFC 8628, the device authorization grant, in one place.

The user code is 8 letters of `BCDFGHJKLMNPQRSTVWXZ` (shown XXXX-XXXX). The record's key is
a digest of the normalised user code, so the page finds the flow by what the user types,
and the device code is `<that key>.<secret>` so polling finds it too, in O(1) both ways.
Approval goes through the same login and consent steps as the code flow: the page creates
a `PendingAuthorization` that names the device flow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Any

from oauthd import crypto
from oauthd.audit import reasons
from oauthd.clock import Clock
from oauthd.config import Config, ResourceConfig
from oauthd.model import Client, DeviceFlow, PendingAuthorization
from oauthd.oauth.errors import OAuthError, invalid_grant, page_error
from oauthd.oauth.resources import Targets, UnknownTarget, requested_scopes
from oauthd.oauth.tokens import TokenResponse, Tokens
from oauthd.store import Conflict, Store

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8
INTERVAL = 5.0
SLOW_DOWN_STEP = 5.0
KEEP_AFTER_EXPIRY = 600.0  # answer expired_token (not invalid_grant) this long after expiry


def normalise_user_code(typed: str) -> str | None:
    """Upper case, without dash and spaces; None unless it is 8 letters of the alphabet."""
    code = "".join(c for c in typed.upper() if c not in "- ")
    if len(code) != USER_CODE_LENGTH or any(c not in USER_CODE_ALPHABET for c in code):
        return None
    return code


def display_user_code(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


def device_key(user_code: str, key: bytes) -> str:
    """The record key of a flow: a keyed hash of its user code. A user code has only 34
    bits, so a plain hash of it would give the code back to anyone who can read the
    store (a backup, the Redis or PostgreSQL database) by trying them all; without the key
    that is not possible."""
    message = f"oauthd-user-code:{user_code}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


class DeviceFlows:
    def __init__(
        self, config: Config, store: Store, clock: Clock, tokens: Tokens, key: bytes
    ) -> None:
        """`key`: the HMAC key of the user codes (`oauthd.keyring.device_code_key`); all
        instances on a shared backend must have the same one."""
        self._key = key
        self._config = config
        self._store = store
        self._clock = clock
        self._tokens = tokens
        self.targets = Targets(config)

    async def start(self, client: Client, form: Mapping[str, str]) -> dict[str, Any]:
        """`/device_authorization`: a new flow and what the device shows its user."""
        if DEVICE_GRANT not in client.grant_types:
            raise OAuthError("unauthorized_client", "this client may not use the device grant")
        resource = self._resource(form.get("resource"))
        scopes = self._scopes(client, resource, form.get("scope"))
        now = self._clock.now()
        ttl = self._config.tokens.device_ttl
        for _ in range(5):
            user_code = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(8))
            minted = crypto.mint_token(device_key(user_code, self._key))
            flow = DeviceFlow(
                device_key=minted.key,
                secret_hash=minted.secret_hash,
                client_id=client.client_id,
                scopes=scopes,
                resource=self.targets.identifier(resource),
                status="pending",
                user=None,
                grant_id=None,
                interval=INTERVAL,
                last_poll_at=None,
                deadline=now + ttl,
                created_at=now,
                expires_at=now + ttl + KEEP_AFTER_EXPIRY,
            )
            try:
                await self._store.devices.add(flow)
            except Conflict:
                continue
            issuer = self._config.server.issuer
            shown = display_user_code(user_code)
            return {
                "device_code": minted.token,
                "user_code": shown,
                "verification_uri": f"{issuer}/device",
                "verification_uri_complete": f"{issuer}/device?user_code={shown}",
                "expires_in": int(ttl),
                "interval": int(INTERVAL),
            }
        raise OAuthError("temporarily_unavailable", "could not allocate a user code", 503)

    def _resource(self, requested: str | None) -> ResourceConfig:
        """RFC 8707 at the device authorization endpoint, as at /authorize."""
        try:
            return self.targets.named(requested)
        except UnknownTarget as exc:
            raise OAuthError("invalid_target", str(exc)) from None

    def _scopes(
        self, client: Client, resource: ResourceConfig, scope: str | None
    ) -> tuple[str, ...]:
        try:
            return requested_scopes(client, resource, scope)
        except ValueError as exc:
            raise OAuthError("invalid_scope", str(exc)) from None

    # -- the user's side -------------------------------------------------------------------

    async def find(self, typed: str) -> DeviceFlow | None:
        """The pending flow for a typed user code (any case, dash optional)."""
        code = normalise_user_code(typed)
        flow = await self._store.devices.get(device_key(code, self._key)) if code else None
        if flow is None or flow.status != "pending" or flow.deadline <= self._clock.now():
            return None
        return flow

    async def pending_for(
        self, flow: DeviceFlow, browser_secret: str, typed: str
    ) -> PendingAuthorization:
        """The login and approval steps for `flow`; `state` keeps the user code to show."""
        now = self._clock.now()
        shown = display_user_code(normalise_user_code(typed) or "")
        pending = PendingAuthorization(
            id=crypto.new_key(),
            client_id=flow.client_id,
            redirect_uri="",
            scopes=flow.scopes,
            resource=flow.resource,
            state=shown,
            code_challenge="",
            user=None,
            browser_hash=crypto.hash_secret(browser_secret),
            device_key=flow.device_key,
            upstream=None,
            created_at=now,
            expires_at=min(flow.deadline, now + self._config.tokens.pending_ttl),
        )
        await self._store.pending.add(pending)
        return pending

    async def decide(self, pending: PendingAuthorization, allow: bool) -> None:
        """Record the user's decision on the device flow named by `pending`."""
        assert pending.device_key is not None and pending.user is not None
        await self._store.pending.delete(pending.id)
        now = self._clock.now()

        def decided(flow: DeviceFlow) -> DeviceFlow:
            if flow.status != "pending" or flow.deadline <= now:
                return flow
            status = "approved" if allow else "denied"
            return dataclasses.replace(
                flow, status=status, user=pending.user, groups=pending.groups
            )

        flow = await self._store.devices.update(pending.device_key, decided)
        if flow is None or flow.status == "pending" or flow.user != pending.user:
            raise page_error(
                "expired_token", "This device code has expired. Start again on the device."
            )

    # -- polling (the token endpoint) --------------------------------------------------------

    async def redeem(self, client: Client, form: Mapping[str, str]) -> TokenResponse:
        parts = crypto.split_token(form.get("device_code", ""))
        flow = await self._store.devices.get(parts[0]) if parts else None
        if parts is None or flow is None or not crypto.secret_matches(parts[1], flow.secret_hash):
            raise invalid_grant("device_code is not valid", reasons.DEVICE_CODE_INVALID)
        if flow.client_id != client.client_id:
            raise invalid_grant("device_code was issued to another client", reasons.WRONG_CLIENT)
        now = self._clock.now()
        if flow.deadline <= now:
            raise OAuthError("expired_token", "the device code has expired")
        if flow.status == "denied":
            await self._store.devices.delete(flow.device_key)
            raise OAuthError("access_denied", "the user denied the request")
        if flow.status == "pending":
            await self._poll_pending(flow, now)
        return await self._issue(flow)

    async def _poll_pending(self, flow: DeviceFlow, now: float) -> None:
        too_soon = flow.last_poll_at is not None and now - flow.last_poll_at < flow.interval

        def polled(current: DeviceFlow) -> DeviceFlow:
            interval = current.interval + (SLOW_DOWN_STEP if too_soon else 0.0)
            return dataclasses.replace(current, last_poll_at=now, interval=interval)

        await self._store.devices.update(flow.device_key, polled)
        if too_soon:
            raise OAuthError("slow_down", "polling too often: wait `interval` seconds longer")
        raise OAuthError("authorization_pending", "the user has not approved yet")

    async def _issue(self, flow: DeviceFlow) -> TokenResponse:
        taken = await self._store.devices.take(flow.device_key)  # single use
        if taken is None or taken.status != "approved" or taken.user is None:
            raise invalid_grant("device_code was already used", reasons.CODE_REPLAYED)
        return await self._tokens.issue(
            crypto.new_key(),
            taken.user,
            taken.client_id,
            taken.scopes,
            taken.resource,
            grant_type=DEVICE_GRANT,
            groups=taken.groups,
        )
