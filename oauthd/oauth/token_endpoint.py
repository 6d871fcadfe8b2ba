"""The token endpoint: parse once, authenticate the client once, dispatch by grant type."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping

from oauthd import crypto
from oauthd.audit import AuditEvent, reasons
from oauthd.model import AuthCode, Client
from oauthd.oauth.assertions import JWT_BEARER
from oauthd.oauth.client_auth import ClientCredentials
from oauthd.oauth.client_credentials import CLIENT_CREDENTIALS, ClientCredentialsGrant
from oauthd.oauth.clients import ClientRegistry
from oauthd.oauth.device import DEVICE_GRANT, DeviceFlows
from oauthd.oauth.errors import OAuthError, invalid_grant, invalid_request
from oauthd.oauth.jwt_bearer import JwtBearerGrant
from oauthd.oauth.resources import canonical_resource
from oauthd.oauth.tokens import TokenResponse, Tokens
from oauthd.store import Store

Grant = Callable[[Client, Mapping[str, str]], Awaitable[TokenResponse]]


def _required(form: Mapping[str, str], name: str) -> str:
    value = form.get(name)
    if not value:
        raise invalid_request(f"{name} is required")
    return value


class TokenEndpoint:
    def __init__(
        self,
        store: Store,
        clients: ClientRegistry,
        tokens: Tokens,
        devices: DeviceFlows,
        sealer: crypto.Sealer | None = None,
        machines: ClientCredentialsGrant | None = None,
        jwt_bearer: JwtBearerGrant | None = None,
    ) -> None:
        """`machines`: the client credentials grant (None: not offered); `jwt_bearer`: the
        JWT bearer grant, offered when there are trusted issuers."""
        self._sealer = sealer
        self._jwt_bearer = jwt_bearer if jwt_bearer is not None and jwt_bearer.issuers else None
        self._store = store
        self._clients = clients
        self._tokens = tokens
        self._grants: dict[str, Grant] = {
            "authorization_code": self._authorization_code,
            "refresh_token": self._refresh_token,
            DEVICE_GRANT: devices.redeem,
        }
        if machines is not None:
            self._grants[CLIENT_CREDENTIALS] = machines.redeem

    async def handle(
        self, form: Mapping[str, str], credentials: ClientCredentials | None
    ) -> TokenResponse:
        grant_type = _required(form, "grant_type")
        grant = self._grants.get(grant_type)
        if grant_type == JWT_BEARER and self._jwt_bearer is not None:
            # a workload assertion needs no client: the grant decides whether to authenticate
            client = lambda: self._client(credentials, grant_type)  # noqa: E731
            return await self._jwt_bearer.redeem(form, credentials is not None, client)
        if grant is None:
            raise OAuthError(
                "unsupported_grant_type", f"grant_type {grant_type!r} is not supported"
            )
        return await grant(await self._client(credentials, grant_type), form)

    async def _client(self, credentials: ClientCredentials | None, grant_type: str) -> Client:
        """The authenticated client, allowed to use `grant_type`."""
        client = await self._clients.authenticate(credentials)
        if grant_type not in client.grant_types:
            raise OAuthError("unauthorized_client", f"this client may not use {grant_type}")
        return client

    async def _refresh_token(self, client: Client, form: Mapping[str, str]) -> TokenResponse:
        return await self._tokens.refresh(
            client, _required(form, "refresh_token"), form.get("scope"), form.get("resource")
        )

    async def _authorization_code(self, client: Client, form: Mapping[str, str]) -> TokenResponse:
        parts = crypto.split_token(_required(form, "code"))
        verifier = _required(form, "code_verifier")
        code = await self._store.codes.get(parts[0]) if parts else None
        if parts is None or code is None or not crypto.secret_matches(parts[1], code.secret_hash):
            raise invalid_grant(
                "authorization code is not valid (expired or unknown)", reasons.CODE_INVALID
            )
        self._check_code(code, client, form, verifier)
        return await self._redeem(code)

    def _check_code(
        self, code: AuthCode, client: Client, form: Mapping[str, str], verifier: str
    ) -> None:
        if code.client_id != client.client_id:
            raise invalid_grant(
                "authorization code was issued to another client", reasons.WRONG_CLIENT
            )
        if code.redirect_uri_given and "redirect_uri" not in form:
            # RFC 6749 s4.1.3: required when the authorization request had it
            raise invalid_grant(
                "redirect_uri is required: the authorization request had one",
                reasons.CODE_INVALID,
            )
        if form.get("redirect_uri", code.redirect_uri) != code.redirect_uri:
            raise invalid_grant(
                "redirect_uri differs from the authorization request", reasons.CODE_INVALID
            )
        if not crypto.pkce_matches(verifier, code.code_challenge):
            raise invalid_grant("PKCE verification failed (code_verifier)", reasons.CODE_INVALID)
        resource = form.get("resource")
        if resource is not None and canonical_resource(resource) != canonical_resource(
            code.resource
        ):
            raise OAuthError("invalid_target", "resource differs from the authorization request")

    async def _redeem(self, code: AuthCode) -> TokenResponse:
        """Single use, safe to retry. The grant is written first and the code claimed for it
        after, so a claimed code always names a grant that was written: if that grant is
        gone it was ended, never "not yet written". The first claim wins (a loser removes
        its own grant); a code already claimed is a retry or a replay (`_claimed`)."""
        if code.grant_id:
            return await self._claimed(code, code.grant_id)
        grant_id = crypto.new_key()
        grant, issued = await self._tokens.create(
            grant_id,
            code.user,
            code.client_id,
            code.scopes,
            code.resource,
            self._upstream_for(code, grant_id),
            groups=code.groups,
        )

        def claim(current: AuthCode) -> AuthCode:
            return current if current.grant_id else dataclasses.replace(current, grant_id=grant_id)

        issued_event = self._tokens.events.issued(grant, "authorization_code")

        def event(claimed: AuthCode) -> AuditEvent | None:
            return issued_event if claimed.grant_id == grant_id else None

        claimed = await self._store.codes.update(code.code_key, claim, audit=event)
        if claimed is None or claimed.grant_id != grant_id:
            await self._store.grants.delete(grant_id)  # never handed out
            if claimed is None:
                raise invalid_grant("authorization code expired", reasons.EXPIRED)
            return await self._claimed(code, claimed.grant_id or "")
        self._tokens.events.count_issued(grant, "authorization_code")
        return issued

    async def _claimed(self, code: AuthCode, grant_id: str) -> TokenResponse:
        """The code was redeemed before, by this client with its PKCE verifier and
        redirect_uri (checked already). While the grant it produced was never used, this is
        a retry of an exchange whose answer was lost (a 503 for a write that timed out but
        landed): the grant's tokens are issued again, voiding the earlier pair. Otherwise it
        is a replay (RFC 6749 s4.1.2): the code and what it issued are revoked."""
        reissued = await self._tokens.reissue_unused(grant_id)
        if reissued is not None:
            return reissued
        await self._store.codes.delete(code.code_key)
        await self._tokens.end_replayed(grant_id, "authorization_code", reasons.CODE_REPLAYED)
        raise invalid_grant(
            "authorization code was already used; its tokens are revoked", reasons.CODE_REPLAYED
        )

    def _upstream_for(self, code: AuthCode, grant_id: str) -> bytes | None:
        """The code's sealed upstream tokens, sealed again for the grant."""
        if code.upstream_tokens is None or self._sealer is None:
            return None
        try:
            opened = self._sealer.open(code.upstream_tokens, code.code_key)
        except ValueError:  # sealed under an earlier login.encryption_key
            raise invalid_grant(
                "authorization code can no longer be used; sign in again", reasons.KEY_RETIRED
            ) from None
        return self._sealer.seal(opened, grant_id)
