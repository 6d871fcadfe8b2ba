"""The token endpoint: parse once, authenticate the client once, dispatch by grant type."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping

from oauthd import crypto
from oauthd.model import AuthCode, Client
from oauthd.oauth.authorize import canonical_resource
from oauthd.oauth.clients import ClientCredentials, ClientRegistry
from oauthd.oauth.device import DEVICE_GRANT, DeviceFlows
from oauthd.oauth.errors import OAuthError, invalid_grant, invalid_request
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
    ) -> None:
        self._sealer = sealer
        self._store = store
        self._clients = clients
        self._tokens = tokens
        self._grants: dict[str, Grant] = {
            "authorization_code": self._authorization_code,
            "refresh_token": self._refresh_token,
            DEVICE_GRANT: devices.redeem,
        }

    async def handle(
        self, form: Mapping[str, str], credentials: ClientCredentials | None
    ) -> TokenResponse:
        grant_type = _required(form, "grant_type")
        grant = self._grants.get(grant_type)
        if grant is None:
            raise OAuthError(
                "unsupported_grant_type", f"grant_type {grant_type!r} is not supported"
            )
        client = await self._clients.authenticate(credentials)
        if grant_type not in client.grant_types:
            raise OAuthError("unauthorized_client", f"this client may not use {grant_type}")
        return await grant(client, form)

    async def _refresh_token(self, client: Client, form: Mapping[str, str]) -> TokenResponse:
        return await self._tokens.refresh(
            client, _required(form, "refresh_token"), form.get("scope"), form.get("resource")
        )

    async def _authorization_code(self, client: Client, form: Mapping[str, str]) -> TokenResponse:
        parts = crypto.split_token(_required(form, "code"))
        verifier = _required(form, "code_verifier")
        code = await self._store.codes.get(parts[0]) if parts else None
        if parts is None or code is None or not crypto.secret_matches(parts[1], code.secret_hash):
            raise invalid_grant("authorization code is not valid (expired or unknown)")
        self._check_code(code, client, form, verifier)
        return await self._redeem(code)

    def _check_code(
        self, code: AuthCode, client: Client, form: Mapping[str, str], verifier: str
    ) -> None:
        if code.client_id != client.client_id:
            raise invalid_grant("authorization code was issued to another client")
        if code.redirect_uri_given and "redirect_uri" not in form:
            # RFC 6749 s4.1.3: required when the authorization request had it
            raise invalid_grant("redirect_uri is required: the authorization request had one")
        if form.get("redirect_uri", code.redirect_uri) != code.redirect_uri:
            raise invalid_grant("redirect_uri differs from the authorization request")
        if not crypto.pkce_matches(verifier, code.code_challenge):
            raise invalid_grant("PKCE verification failed (code_verifier)")
        resource = form.get("resource")
        if resource is not None and canonical_resource(resource) != code.resource:
            raise OAuthError("invalid_target", "resource differs from the authorization request")

    async def _redeem(self, code: AuthCode) -> TokenResponse:
        """Single use: the first redemption claims the code; a replay revokes what the
        first one issued (RFC 6749 s4.1.2), also while that one is still in flight: the
        replay drops the code before the grant, and the first redemption answers only if
        the code is still there after its grant was written."""
        grant_id = crypto.new_key()

        def claim(current: AuthCode) -> AuthCode:
            return current if current.grant_id else dataclasses.replace(current, grant_id=grant_id)

        claimed = await self._store.codes.update(code.code_key, claim)
        if claimed is None:
            raise invalid_grant("authorization code expired")
        if claimed.grant_id != grant_id:
            if claimed.grant_id:
                await self._store.codes.delete(code.code_key)
                await self._tokens.end_grant(claimed.grant_id)
                self._tokens.reuse_detected(
                    "authorization_code", code.user, code.client_id, claimed.grant_id
                )
            raise invalid_grant("authorization code was already used; its tokens are revoked")
        upstream = None
        if code.upstream_tokens is not None and self._sealer is not None:
            try:
                opened = self._sealer.open(code.upstream_tokens, code.code_key)
            except ValueError:  # sealed under an earlier login.encryption_key
                raise invalid_grant(
                    "authorization code can no longer be used; sign in again"
                ) from None
            upstream = self._sealer.seal(opened, grant_id)
        issued = await self._tokens.issue(
            grant_id, code.user, code.client_id, code.scopes, code.resource, upstream
        )
        if await self._store.codes.get(code.code_key) is None:  # replayed meanwhile
            await self._tokens.end_grant(grant_id)
            raise invalid_grant("authorization code was already used; its tokens are revoked")
        return issued
