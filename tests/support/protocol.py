"""The protocol on its own: an `AuthServer` over the memory store with a `FakeClock`, no HTTP.

`Env` is one server with its store, clock, config and a fake CIMD fetcher; its methods run
the steps the HTTP layer would (register, begin, logged_in, approve, token), so a test
reads as the flow it checks. `build_env(tmp, **sections)` makes one.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from oauthd import crypto
from oauthd.clock import FakeClock
from oauthd.config import Config, ResourceConfig, TrustedIssuerConfig
from oauthd.keyring import read_keyring
from oauthd.model import Client, PendingAuthorization
from oauthd.oauth.authorize import Flow
from oauthd.oauth.client_auth import ClientCredentials, ClientKeySource
from oauthd.oauth.clients import ClientDocumentError, FetchedDocument, Registration
from oauthd.oauth.errors import OAuthError
from oauthd.oauth.server import AuthServer
from oauthd.oauth.tokens import TokenResponse
from oauthd.store import MemoryStore, Store
from oauthd.users import Users
from tests.support.configs import (
    USER,
    make_config,
    write_secret,
)

ISSUER = "https://mcp.example.com"
RESOURCE = f"{ISSUER}/mcp"
SCOPES = ("mcp", "files:read", "files:write")
ADDRESS = "192.0.2.10"
WEB_REDIRECT = "https://app.example.com/oauth/callback"
LOOPBACK_REDIRECT = "http://127.0.0.1/callback"
CIMD_CLIENT_ID = "https://client.example.org/oauth/metadata.json"
FILES = f"{ISSUER}/files/mcp"  # the second resource of `two_resources`
INTROSPECTION_SECRET = "introspection-secret-0123456789"


class FakeFetcher:
    """A `DocumentFetcher` serving Client ID Metadata Documents from a dict; counts fetches."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.documents: dict[str, Mapping[str, object]] = {}
        self.fetches: list[str] = []
        self.lifetime = 300.0

    async def fetch(self, client_id: str) -> FetchedDocument:
        self.fetches.append(client_id)
        document = self.documents.get(client_id)
        if document is None:
            raise ClientDocumentError("HTTP 404")
        now = self.clock.now()
        return FetchedDocument(document, now + self.lifetime, now)


def protocol_config(tmp_path: Path, **sections: Mapping[str, Any]) -> Config:
    """`tests.support.configs.make_config` with our issuer, the memory store, a few scopes
    and the introspection secret `INTROSPECTION_SECRET`; `sections` override fields per
    section, e.g. tokens={...}."""
    changes: dict[str, dict[str, Any]] = {
        "storage": {"backend": "memory"},
        "oauth": {"scopes": SCOPES},
    }
    for name, values in sections.items():
        changes[name] = {**changes.get(name, {}), **values}
    config = make_config(tmp_path, 0, issuer=ISSUER, **changes)
    write_secret(tmp_path / "introspection.secret", INTROSPECTION_SECRET + "\n")
    return config


def two_resources(config: Config) -> tuple[ResourceConfig, ...]:
    """`[[resource]]` tables for `build_env(resources=...)`: "Notes" at /mcp offering
    `mcp`, and "Files" at /files/mcp offering files:read and files:write."""
    upstream = config.upstream
    return (
        ResourceConfig("/mcp", "Notes", upstream, ("mcp",)),
        ResourceConfig("/files/mcp", "Files", upstream, ("files:read", "files:write")),
    )


def new_verifier() -> str:
    return crypto.new_secret()  # 43 unreserved characters: a valid PKCE verifier


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


@dataclass(slots=True)
class Started:
    """An authorization request that `begin` accepted."""

    pending: PendingAuthorization
    browser: str
    verifier: str


@dataclass(slots=True)
class Issued:
    """A finished code flow: the code's redirect and the token response."""

    registration: Registration
    verifier: str
    redirect_uri: str
    tokens: TokenResponse
    query: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Env:
    config: Config
    clock: FakeClock
    store: Store
    fetcher: FakeFetcher
    server: AuthServer

    # -- clients -------------------------------------------------------------------------

    async def register(self, **body: Any) -> Registration:
        """A public loopback client unless `body` says otherwise."""
        body.setdefault("redirect_uris", [LOOPBACK_REDIRECT])
        body.setdefault("token_endpoint_auth_method", "none")
        body.setdefault("client_name", "Test client")
        return await self.server.register(body, ADDRESS)

    async def register_confidential(self, **body: Any) -> Registration:
        body.setdefault("redirect_uris", [WEB_REDIRECT])
        body.setdefault("token_endpoint_auth_method", "client_secret_basic")
        return await self.register(**body)

    # -- the browser's steps -------------------------------------------------------------

    def authorize_params(
        self, client: Client, verifier: str, **extra: str | None
    ) -> dict[str, str]:
        params: dict[str, str | None] = {
            "response_type": "code",
            "client_id": client.client_id,
            "redirect_uri": client.redirect_uris[0],
            "code_challenge": crypto.pkce_challenge(verifier),
            "code_challenge_method": "S256",
            "state": "state-" + secrets.token_hex(4),
            "resource": RESOURCE,
        }
        params.update(extra)
        return {k: v for k, v in params.items() if v is not None}

    async def begin(self, client: Client, **extra: str | None) -> Started:
        """`/authorize` with good parameters; `extra` overrides (None drops one)."""
        verifier = new_verifier()
        browser = crypto.new_secret()
        pending = await self.server.authorizer.begin(
            self.authorize_params(client, verifier, **extra), browser
        )
        return Started(pending, browser, verifier)

    async def signed_in(self, started: Started, user: str = USER) -> Flow:
        flow = await self.server.authorizer.flow(started.pending.id, started.browser)
        return await self.server.authorizer.logged_in(flow, user)

    async def approved(self, started: Started, user: str = USER) -> dict[str, str]:
        """Log in and allow; the query the browser is sent back with."""
        location = await self.server.finish(await self.signed_in(started, user), allow=True)
        assert location is not None
        return query_of(location)

    # -- the token endpoint --------------------------------------------------------------

    async def token(
        self, registration: Registration, form: Mapping[str, str], method: str | None = None
    ) -> TokenResponse:
        return await self.server.token(form, credentials(registration, method))

    async def code_flow(
        self, registration: Registration | None = None, user: str = USER, **extra: str | None
    ) -> Issued:
        """register -> begin -> logged_in -> approve -> token."""
        registration = registration or await self.register()
        started = await self.begin(registration.client, **extra)
        query = await self.approved(started, user)
        form = {
            "grant_type": "authorization_code",
            "code": query["code"],
            "code_verifier": started.verifier,
            "redirect_uri": started.pending.redirect_uri,
            "resource": RESOURCE,
        }
        tokens = await self.token(registration, form)
        return Issued(registration, started.verifier, started.pending.redirect_uri, tokens, query)

    async def refresh(
        self, issued: Issued, refresh_token: str | None = None, **extra: str
    ) -> TokenResponse:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token or issued.tokens.refresh_token or "",
            **extra,
        }
        return await self.token(issued.registration, form)


def credentials(registration: Registration, method: str | None = None) -> ClientCredentials:
    """How the client authenticates: as it registered unless `method` says otherwise."""
    client = registration.client
    method = method or client.token_endpoint_auth_method
    secret = None if method == "none" else registration.secret
    return ClientCredentials(client.client_id, secret, method)


async def refused(call: Any) -> OAuthError:
    """The `OAuthError` an awaitable raises (failing the test if it raises none)."""
    with pytest.raises(OAuthError) as caught:
        await call
    return caught.value


def build_env(
    tmp_path: Path,
    store: Store | None = None,
    clock: FakeClock | None = None,
    *,
    resources: Callable[[Config], tuple[ResourceConfig, ...]] | None = None,
    jwks: ClientKeySource | None = None,
    issuers: tuple[TrustedIssuerConfig, ...] = (),
    **sections: Mapping[str, Any],
) -> Env:
    """An `Env` over the memory store, or over `store` (whose clock `clock` is);
    `resources`: makes the `[[resource]]` tables from the config (e.g. `two_resources`);
    `issuers`: the `[[trusted_issuer]]` tables, their keys from `jwks`."""
    config = protocol_config(tmp_path, **sections)
    if issuers:
        config = dataclasses.replace(config, trusted_issuer=issuers)
    if resources is not None:
        config = dataclasses.replace(config, resource=resources(config))
    clock = clock or FakeClock()
    store = store or MemoryStore(clock)
    fetcher = FakeFetcher(clock)
    server = AuthServer(
        config,
        store,
        clock,
        Users(config.login.users),
        fetcher,
        keyring=read_keyring(config),
        jwks=jwks,
    )
    return Env(config, clock, store, fetcher, server)


EnvFactory = Callable[..., Env]
