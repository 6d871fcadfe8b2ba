"""Clients an operator creates (`oauthd clients add`): confidential machine clients of the
client credentials grant and of the JWT bearer grant (workload identity, enterprise
ID-JAGs), with a secret or with public keys (`private_key_jwt`).

Such a client is `source = "admin"`: the registry's hygiene never expires or sweeps it
(it touches `dcr` registrations only); it goes when an operator deletes it. Unlike
dynamic registration, an operator may register a `jwks_uri`: its host joins the key
fetcher's allowlist (`ClientKeySource.permit`), now and whenever the client authenticates
(after a restart too)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson

from oauthd import crypto
from oauthd.clock import Clock
from oauthd.config import Config, ResourceConfig
from oauthd.model import Client
from oauthd.oauth import client_events
from oauthd.oauth.assertions import JWT_BEARER
from oauthd.oauth.client_auth import (
    PRIVATE_KEY_JWT,
    SECRET_METHODS,
    ClientKeySource,
    registered_jwks,
)
from oauthd.oauth.client_credentials import CLIENT_CREDENTIALS
from oauthd.oauth.clients import MAX_NAME, Registration
from oauthd.oauth.resources import Targets, UnknownTarget
from oauthd.store import Store

OPERATOR_GRANTS = (CLIENT_CREDENTIALS, JWT_BEARER)
OPERATOR_AUTH_METHODS = ("client_secret_basic", "client_secret_post", PRIVATE_KEY_JWT)
SOURCE = "admin"


class ClientRefused(ValueError):
    """The client cannot be created as asked; str() says why, for the operator."""


@dataclass(slots=True, frozen=True)
class NewClient:
    """What an operator asks for. `jwks`: the public keys as JSON text; `scopes` empty:
    every scope the server offers; `resource`: a resource's path or identifier, None:
    the server's default resource."""

    name: str
    grant_types: tuple[str, ...]
    auth_method: str
    jwks: str | None = None
    jwks_uri: str | None = None
    scopes: tuple[str, ...] = ()
    resource: str | None = None


class OperatorClients:
    def __init__(
        self, config: Config, store: Store, clock: Clock, keys: ClientKeySource | None
    ) -> None:
        self._config = config
        self._targets = Targets(config)
        self._store = store
        self._clock = clock
        self._keys = keys

    async def add(self, spec: NewClient) -> Registration:
        """The new client and its secret (None for private_key_jwt), durable when this
        returns; ClientRefused naming the first thing wrong."""
        name = spec.name.strip()
        if not name or len(name) > MAX_NAME:
            raise ClientRefused(f"the name must be 1 to {MAX_NAME} characters")
        grants = self._grant_types(spec.grant_types)
        jwks, jwks_uri = self._keys_of(spec)
        resource = None if spec.resource is None else self._resource(spec.resource)
        secret = crypto.new_secret() if spec.auth_method in SECRET_METHODS else None
        client = Client(
            client_id=crypto.new_key(),
            client_name=name,
            redirect_uris=(),
            grant_types=grants,
            response_types=(),
            token_endpoint_auth_method=spec.auth_method,
            application_type="web",
            scope=self._scope(spec.scopes),
            secret_hash=crypto.hash_secret(secret) if secret else None,
            source=SOURCE,
            created_at=self._clock.now(),
            jwks=jwks,
            jwks_uri=jwks_uri,
            resource=None if resource is None else self._targets.identifier(resource),
        )
        await self._store.clients.add(
            client, audit=client_events.registered(client, "client_created")
        )
        if jwks_uri is not None and self._keys is not None:
            self._keys.permit(jwks_uri)
        return Registration(client, secret, ())

    def _grant_types(self, grants: tuple[str, ...]) -> tuple[str, ...]:
        if not grants:
            raise ClientRefused("give at least one grant type")
        for grant in grants:
            if grant not in OPERATOR_GRANTS:
                raise ClientRefused(
                    f"grant {grant!r} is not one an operator creates clients for "
                    f"(one of: {', '.join(OPERATOR_GRANTS)})"
                )
        return tuple(dict.fromkeys(grants))

    def _keys_of(self, spec: NewClient) -> tuple[str | None, str | None]:
        if spec.auth_method not in OPERATOR_AUTH_METHODS:
            raise ClientRefused(
                f"authentication method {spec.auth_method!r} is not one for a confidential "
                f"client (one of: {', '.join(OPERATOR_AUTH_METHODS)})"
            )
        if spec.auth_method != PRIVATE_KEY_JWT:
            if spec.jwks is not None or spec.jwks_uri is not None:
                raise ClientRefused(f"{spec.auth_method} takes no keys (jwks or jwks_uri)")
            return None, None
        if (spec.jwks is None) == (spec.jwks_uri is None):
            raise ClientRefused("private_key_jwt needs exactly one of jwks and jwks_uri")
        if spec.jwks_uri is not None:
            return None, _jwks_uri(spec.jwks_uri)
        try:
            return registered_jwks(orjson.loads(spec.jwks or "")), None
        except orjson.JSONDecodeError:
            raise ClientRefused("the JWKS is not JSON") from None
        except ValueError as exc:
            raise ClientRefused(str(exc)) from None

    def _scope(self, scopes: tuple[str, ...]) -> str:
        offered = self._config.scopes_supported
        for scope in scopes:
            if scope not in offered:
                raise ClientRefused(
                    f"scope {scope!r} is not offered by this server (offered: {' '.join(offered)})"
                )
        return " ".join(dict.fromkeys(scopes or offered))

    def _resource(self, named: str) -> ResourceConfig:
        found = self._config.resource_named(named) if named.startswith("/") else None
        if found is not None:
            return found
        try:
            return self._targets.named(named)
        except UnknownTarget as exc:
            raise ClientRefused(str(exc)) from None


def _jwks_uri(uri: str) -> str:
    try:
        url = urlsplit(uri)
        host = url.hostname
    except ValueError:
        raise ClientRefused(f"jwks_uri {uri!r} is not a URL") from None
    if url.scheme != "https" or not host:
        raise ClientRefused(f"jwks_uri must be an https URL, not {uri!r}")
    if url.username is not None or url.password is not None or url.fragment:
        raise ClientRefused("jwks_uri must have no user name, password or fragment")
    return uri
