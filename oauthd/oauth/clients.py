"""Clients: RFC 7591 dynamic registration, Client ID Metadata Documents, and client
authentication at the token endpoint."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

import orjson

from oauthd import crypto
from oauthd.audit import reasons
from oauthd.clock import Clock
from oauthd.config import Config
from oauthd.metrics import Metrics
from oauthd.model import Client
from oauthd.oauth import client_events, redirects
from oauthd.oauth.client_auth import (
    PRIVATE_KEY_JWT,
    SECRET_METHODS,
    ClientAuthenticator,
    ClientCredentials,
    ClientKeySource,
    registered_jwks,
)
from oauthd.oauth.errors import OAuthError, invalid_client
from oauthd.oauth.hygiene import RegistryHygiene
from oauthd.oauth.metadata import AUTH_METHODS
from oauthd.store import Store

MAX_REDIRECT_URIS = 20
MAX_NAME = 200
SUPPORTED_GRANTS = frozenset(
    {"authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"}
)
CLIENT_CREDENTIALS = "client_credentials"
DEFAULT_GRANTS = ("authorization_code", "refresh_token")


class ClientDocumentError(Exception):
    """A Client ID Metadata Document could not be fetched or is not acceptable; str() is a
    reason safe to show to the client."""


@dataclass(slots=True, frozen=True)
class FetchedDocument:
    metadata: Mapping[str, object]  # a JSON object, not yet checked as a client document
    expires_at: float  # cache it until then (== fetched_at: do not cache)
    fetched_at: float


class DocumentFetcher(Protocol):
    """The transport of Client ID Metadata Documents (URL safety, size, time, cache
    headers); what the document must say is checked here, in `document_problem`."""

    async def fetch(self, client_id: str) -> FetchedDocument:
        """The JSON object at `client_id`; ClientDocumentError for any failure."""
        ...


def document_problem(
    meta: Mapping[str, object],
    client_id: str,
    allowed_private_schemes: frozenset[str] = frozenset(),
) -> str | None:
    """Why `meta` is not an acceptable metadata document for `client_id`, or None: the
    fields the draft requires, the document naming its own URL, redirect URIs we accept
    (as for a registration), and no client authentication (a document has no secret)."""
    if "client_id" not in meta:
        return "document has no client_id"
    if meta["client_id"] != client_id:
        return "client_id in the document is not the URL it was fetched from"
    name = meta.get("client_name")
    if not isinstance(name, str) or not name.strip():
        return "client_name must be a non-empty string"
    uris = meta.get("redirect_uris")
    if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
        return "redirect_uris must be a non-empty array of strings"
    for uri in uris:
        if redirects.check_registered(uri, allowed_private_schemes=allowed_private_schemes):
            return f"unacceptable redirect URI {uri!r}"
    if meta.get("token_endpoint_auth_method", "none") != "none":
        return 'only token_endpoint_auth_method "none" is supported for metadata-document clients'
    return None


@dataclass(slots=True, frozen=True)
class Registration:
    client: Client
    secret: str | None  # clear client secret: returned once, never stored
    dropped_redirect_uris: tuple[str, ...]


def _metadata_error(description: str) -> OAuthError:
    return OAuthError("invalid_client_metadata", description)


def _inline_jwks(body: Mapping[str, Any], method: str) -> str | None:
    """The public keys a private_key_jwt client registers, inline only: a `jwks_uri`
    would make oauthd fetch from wherever a stranger says (operators may register one)."""
    if "jwks_uri" in body:
        raise _metadata_error(
            "jwks_uri is not accepted at registration: send the public keys as jwks"
        )
    if "jwks" not in body:
        if method == PRIVATE_KEY_JWT:
            raise _metadata_error("token_endpoint_auth_method private_key_jwt needs jwks")
        return None
    if method != PRIVATE_KEY_JWT:
        raise _metadata_error("jwks is only for token_endpoint_auth_method private_key_jwt")
    try:
        return registered_jwks(body["jwks"])
    except ValueError as exc:
        raise _metadata_error(f"jwks: {exc}") from None


def _optional_text(body: Mapping[str, Any], name: str, limit: int = 2000) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise _metadata_error(f"{name} must be a string of at most {limit} characters")
    return value


def _text_list(body: Mapping[str, Any], name: str) -> tuple[str, ...] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _metadata_error(f"{name} must be an array of strings")
    return tuple(value)


class ClientRegistry:
    def __init__(
        self,
        config: Config,
        store: Store,
        clock: Clock,
        fetcher: DocumentFetcher | None,
        metrics: Metrics | None = None,
        keys: ClientKeySource | None = None,
    ) -> None:
        """`keys`: where the keys of clients registered with a `jwks_uri` come from."""
        self._metrics = metrics or Metrics()
        self._config = config
        self._store = store
        self._clock = clock
        self._fetcher = fetcher
        self._schemes = frozenset(s.lower() for s in config.oauth.allowed_redirect_schemes)
        self.hygiene = RegistryHygiene(config.oauth, store, clock, self._metrics)
        self.authenticator = ClientAuthenticator(
            config.server.issuer, store, clock, self._metrics, self._lookup, self.hygiene.used, keys
        )

    # -- registration (RFC 7591) ---------------------------------------------------------

    async def register(self, body: Mapping[str, Any]) -> Registration:
        if not self._config.oauth.registration:
            raise OAuthError(
                "access_denied",
                "dynamic client registration is disabled",
                403,
                reason=reasons.REGISTRATION_DISABLED,
            )
        uris, dropped = self._redirect_uris(body)
        method = self._auth_method(body)
        grants = self._grant_types(body, method)
        jwks = _inline_jwks(body, method)
        secret = crypto.new_secret() if method in SECRET_METHODS else None
        now = self._clock.now()
        client = Client(
            client_id=crypto.new_key(),
            client_name=_optional_text(body, "client_name", MAX_NAME) or "Unnamed client",
            redirect_uris=uris,
            grant_types=grants,
            response_types=self._response_types(body, grants),
            token_endpoint_auth_method=method,
            application_type=self._application_type(body, uris),
            scope=self._scope(body),
            secret_hash=crypto.hash_secret(secret) if secret else None,
            source="dcr",
            created_at=now,
            expires_at=self.hygiene.unused_expiry(now),
            jwks=jwks,
        )
        await self._store.clients.add(client, audit=client_events.registered(client))
        await self.hygiene.registered(client)
        self._metrics.client_registered()
        return Registration(client, secret, dropped)

    def _redirect_uris(self, body: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        uris = _text_list(body, "redirect_uris") or ()
        grants = _text_list(body, "grant_types") or DEFAULT_GRANTS
        if not uris:
            if "authorization_code" in grants:
                raise OAuthError("invalid_redirect_uri", "redirect_uris is required")
            return (), ()
        if len(uris) > MAX_REDIRECT_URIS:
            raise OAuthError(
                "invalid_redirect_uri", f"at most {MAX_REDIRECT_URIS} redirect_uris are accepted"
            )
        result = redirects.filter_registration(uris, allowed_private_schemes=self._schemes)
        if result.failure is not None:
            raise OAuthError("invalid_redirect_uri", result.failure)
        return result.accepted, tuple(uri for uri, _ in result.rejected)

    def _auth_method(self, body: Mapping[str, Any]) -> str:
        method = _optional_text(body, "token_endpoint_auth_method") or "client_secret_basic"
        if method not in AUTH_METHODS:
            raise _metadata_error(
                f"token_endpoint_auth_method {method!r} is not supported "
                f"(supported: {', '.join(AUTH_METHODS)})"
            )
        return method

    def _grant_types(self, body: Mapping[str, Any], method: str) -> tuple[str, ...]:
        grants = _text_list(body, "grant_types") or DEFAULT_GRANTS
        unknown = [g for g in grants if g not in SUPPORTED_GRANTS and g != CLIENT_CREDENTIALS]
        if unknown:
            raise _metadata_error(f"grant_types: {unknown[0]!r} is not supported")
        if CLIENT_CREDENTIALS in grants:
            if not self._config.oauth.registration_client_credentials:
                raise _metadata_error(
                    "grant_types: 'client_credentials' is not offered at registration "
                    "(an operator creates such clients with `oauthd clients add`)"
                )
            if method == "none":
                raise _metadata_error(
                    "grant_types: 'client_credentials' needs a confidential client "
                    "(token_endpoint_auth_method client_secret_basic, client_secret_post "
                    "or private_key_jwt)"
                )
        return tuple(dict.fromkeys(grants))

    def _response_types(self, body: Mapping[str, Any], grants: tuple[str, ...]) -> tuple[str, ...]:
        types = _text_list(body, "response_types")
        if types is None:
            return ("code",) if "authorization_code" in grants else ()
        if any(t != "code" for t in types):
            raise _metadata_error('response_types: only "code" is supported')
        return tuple(dict.fromkeys(types))

    def _application_type(self, body: Mapping[str, Any], uris: tuple[str, ...]) -> str:
        kind = _optional_text(body, "application_type")
        if kind is None:
            loopback = bool(uris) and all(redirects.is_loopback_redirect(u) for u in uris)
            return "native" if loopback else "web"
        if kind not in ("web", "native"):
            raise _metadata_error('application_type must be "web" or "native"')
        return kind

    def _scope(self, body: Mapping[str, Any]) -> str:
        scope = _optional_text(body, "scope")
        if scope is None:
            return " ".join(self._config.scopes_supported)
        unknown = [s for s in scope.split() if s not in self._config.scopes_supported]
        if unknown:
            raise _metadata_error(f"scope: {unknown[0]!r} is not offered by this server")
        return " ".join(dict.fromkeys(scope.split()))

    # -- lookup ----------------------------------------------------------------------------

    async def find(self, client_id: str) -> Client | None:
        """A registered client, or the (cached) metadata document at an https client_id;
        a registration found is noted as used (`RegistryHygiene.used`)."""
        client = await self._lookup(client_id)
        return None if client is None else await self.hygiene.used(client)

    async def _lookup(self, client_id: str) -> Client | None:
        if not client_id or len(client_id) > 2000:
            return None
        client = await self._store.clients.get(client_id)
        if client is not None or not self._is_document_url(client_id):
            return client
        return await self._fetch_document(client_id)

    def _is_document_url(self, client_id: str) -> bool:
        if self._fetcher is None or not self._config.oauth.client_id_metadata_documents:
            return False
        try:
            parts = urlsplit(client_id)
            host = parts.hostname
        except ValueError:  # "https://[::1/c": fetching it says why it is refused
            return client_id.startswith("https://")
        return parts.scheme == "https" and bool(host) and parts.path not in ("", "/")

    async def _fetch_document(self, client_id: str) -> Client:
        assert self._fetcher is not None
        try:
            fetched = await self._fetcher.fetch(client_id)
        except ClientDocumentError as exc:
            raise invalid_client(f"client metadata document: {exc}") from None
        meta = fetched.metadata
        problem = document_problem(meta, client_id, self._schemes)
        if problem is not None:
            raise invalid_client(f"client metadata document: {problem}")
        uris = tuple(cast("list[str]", meta["redirect_uris"]))  # checked just above
        client = Client(
            client_id=client_id,
            client_name=str(meta.get("client_name", ""))[:MAX_NAME] or client_id,
            redirect_uris=uris,
            grant_types=DEFAULT_GRANTS,
            response_types=("code",),
            token_endpoint_auth_method="none",
            application_type="native" if all(map(redirects.is_loopback_redirect, uris)) else "web",
            scope=" ".join(self._config.scopes_supported),
            secret_hash=None,
            source="cimd",
            created_at=fetched.fetched_at,
            expires_at=fetched.expires_at,
        )
        await self._store.clients.put(client)
        return client

    # -- client authentication ---------------------------------------------------------------

    async def authenticate(self, credentials: ClientCredentials | None) -> Client:
        """The client, authenticated as it registered (`ClientAuthenticator`);
        `invalid_client` otherwise."""
        return await self.authenticator.authenticate(credentials)


def registration_response(registration: Registration) -> dict[str, Any]:
    client = registration.client
    body: dict[str, Any] = {
        "client_id": client.client_id,
        "client_id_issued_at": int(client.created_at),
        "client_name": client.client_name,
        "redirect_uris": list(client.redirect_uris),
        "grant_types": list(client.grant_types),
        "response_types": list(client.response_types),
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
        "application_type": client.application_type,
        "scope": client.scope,
    }
    if client.jwks is not None:
        body["jwks"] = orjson.loads(client.jwks)
    if registration.secret is not None:
        body["client_secret"] = registration.secret
        body["client_secret_expires_at"] = 0
    return body
