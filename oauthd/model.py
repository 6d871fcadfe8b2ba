"""The records oauthd keeps (design section 2).

Records are replaced whole, never mutated in place once stored: a table hands out the stored
object, and the snapshot writer relies on a stored record never changing under it. Change a
record with `dataclasses.replace` inside `Table.update`.

`expires_at` is seconds since the epoch; `None` means the record does not expire by time.
Digests (`*_hash`) are SHA-256 of a secret; the clear secret is never kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

INTERN = {"intern": True}  # field metadata: share equal strings/tuples between records

_LOOPBACK = re.compile(r"http://(127\.0\.0\.1|\[::1\]|localhost)(:[0-9]+)?(?=[/?]|$)", re.I)


def redirect_set(uris: Iterable[str]) -> tuple[str, ...]:
    """Redirect URIs as one app's registrations share them: sorted, each once, the port of
    a loopback http redirect written `:*` (it may change on every run, RFC 8252 s7.3, and
    matching ignores it), so that `http://localhost:53127/callback` and
    `http://localhost:60211/callback` are one app's."""
    return tuple(
        sorted({_LOOPBACK.sub(lambda m: f"http://{m[1].lower()}:*", uri, 1) for uri in uris})
    )


@dataclass(slots=True)
class Client:
    """A registered client (RFC 7591) or a cached Client ID Metadata Document."""

    KIND: ClassVar[str] = "clients"
    client_id: str
    client_name: str
    redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    response_types: tuple[str, ...]
    token_endpoint_auth_method: str
    application_type: str
    scope: str
    secret_hash: bytes | None
    source: str  # "dcr" | "cimd"
    created_at: float
    # A registration never used expires `oauth.unused_client_lifetime` after it was made;
    # its first use clears that (see oauth/registry.py).
    expires_at: float | None = None
    # when it was last used at /authorize, /token, ...; None: never. Written at most once
    # per `registry.LAST_USED_RESOLUTION` (format 3)
    last_used_at: float | None = None
    # private_key_jwt (RFC 7523 s2.2): the client's public keys, as a JWKS document (JSON
    # text), or the https URL that serves them; None: none registered (format 5)
    jwks: str | None = None
    jwks_uri: str | None = None
    # the resource identifier (issuer + path) a client_credentials client gets tokens for
    # when its request names none; None: the server's default resource (format 5)
    resource: str | None = None

    @property
    def key(self) -> str:
        return self.client_id

    @property
    def app(self) -> tuple[str, tuple[str, ...]]:
        """What the registrations of one app share: the name and the redirect set."""
        return self.client_name, redirect_set(self.redirect_uris)


# The resource path of every consent and MCP session made before format 4: the first round
# protected exactly one resource, the `[upstream]` shorthand at `/mcp`.
FIRST_RESOURCE_PATH = "/mcp"


def consent_key(user: str, client_id: str, resource: str) -> str:
    """`resource`: the resource's path. A consent to `/mcp` keeps the key it had before
    format 4 (`user` and `client_id` alone), so that the consents stored before the upgrade
    (in a snapshot, a journal, Redis or PostgreSQL) are found under the key they have."""
    if resource == FIRST_RESOURCE_PATH:
        return f"{user}\x1f{client_id}"
    return f"{user}\x1f{client_id}\x1f{resource}"


@dataclass(slots=True)
class Consent:
    """A user approved a client for some scopes of one resource, named by its path (e.g.
    `/mcp`; not the identifier issuer + path, so that a consent does not depend on the
    issuer, and one stored before format 4 is exactly `/mcp`'s)."""

    KIND: ClassVar[str] = "consents"
    user: str = field(metadata=INTERN)
    client_id: str = field(metadata=INTERN)
    scopes: tuple[str, ...] = field(metadata=INTERN)
    created_at: float
    expires_at: float | None
    resource: str = field(default=FIRST_RESOURCE_PATH, metadata=INTERN)  # format 4

    @property
    def key(self) -> str:
        return consent_key(self.user, self.client_id, self.resource)


@dataclass(slots=True)
class PendingAuthorization:
    """An authorization (code flow, or approval of a device flow) waiting for login,
    consent or the upstream IdP."""

    KIND: ClassVar[str] = "pending"
    id: str
    client_id: str = field(metadata=INTERN)
    redirect_uri: str
    scopes: tuple[str, ...] = field(metadata=INTERN)
    resource: str = field(metadata=INTERN)
    state: str | None  # the client's state; for a device approval, the user code shown
    code_challenge: str  # "" for a device approval
    user: str | None  # set once the user logged in
    browser_hash: bytes  # digest of the cookie secret of the browser that started the flow
    device_key: str | None  # set when this approves a device flow (RFC 8628)
    upstream: bytes | None  # encrypted upstream-leg secrets (state, nonce, PKCE verifier)
    created_at: float
    expires_at: float | None
    # False when /authorize had no redirect_uri (the single registered one was used); format 2
    redirect_uri_given: bool = True
    # the user's groups, set with `user` at sign-in (see `Grant.groups`); format 4
    groups: tuple[str, ...] = field(default=(), metadata=INTERN)

    @property
    def key(self) -> str:
        return self.id


@dataclass(slots=True)
class AuthCode:
    """An authorization code; single use. `grant_id` names what redeeming it issued."""

    KIND: ClassVar[str] = "codes"
    code_key: str
    secret_hash: bytes
    client_id: str = field(metadata=INTERN)
    redirect_uri: str
    user: str = field(metadata=INTERN)
    scopes: tuple[str, ...] = field(metadata=INTERN)
    resource: str = field(metadata=INTERN)
    code_challenge: str
    grant_id: str | None
    upstream_tokens: bytes | None  # sealed upstream IdP tokens, bound to this code
    created_at: float
    expires_at: float | None
    # the token request must repeat redirect_uri when /authorize had it (RFC 6749 s4.1.3)
    redirect_uri_given: bool = True
    groups: tuple[str, ...] = field(default=(), metadata=INTERN)  # the user's; format 4

    @property
    def key(self) -> str:
        return self.code_key


@dataclass(slots=True)
class Grant:
    """An OAuth session: one refresh-token family and its current access token.

    The grant id is the key part of both of its tokens. `previous_refresh_hash` is the
    superseded refresh token, honoured as a retry until `successor_used`.
    `scopes` is what the user granted; `access_scopes` what the current access token carries
    when a refresh asked for fewer (None: all of `scopes`). `superseded_hashes` holds the
    first 16 bytes of the digests of the last superseded refresh tokens, concatenated, oldest
    first (bounded, one bytes object: a million grants): presenting one of them is reuse.
    """

    KIND: ClassVar[str] = "grants"
    id: str
    user: str = field(metadata=INTERN)
    client_id: str = field(metadata=INTERN)
    scopes: tuple[str, ...] = field(metadata=INTERN)
    resource: str = field(metadata=INTERN)
    access_hash: bytes
    access_expires_at: float
    refresh_hash: bytes
    previous_refresh_hash: bytes | None
    rotated_at: float | None
    successor_used: bool
    upstream_tokens: bytes | None  # AES-GCM ciphertext of the user's upstream IdP tokens
    mcp_sessions: tuple[str, ...]  # keys of the McpSession records bound to this grant
    created_at: float
    last_used_at: float
    expires_at: float | None
    access_scopes: tuple[str, ...] | None = field(default=None, metadata=INTERN)  # format 2
    superseded_hashes: bytes = b""  # format 2
    # the user's groups when they signed in (local users: `[[login.users]] groups`; OIDC:
    # the `login.oidc.groups_claim` of the ID token); format 4
    groups: tuple[str, ...] = field(default=(), metadata=INTERN)
    # who `user` is (`PRINCIPAL_USER`: a person; `PRINCIPAL_SERVICE`: a machine, through
    # client credentials or workload identity); format 5
    principal: str = field(default="user", metadata=INTERN)

    @classmethod
    def first(
        cls,
        grant_id: str,
        user: str,
        client_id: str,
        scopes: tuple[str, ...],
        resource: str,
        *,
        access_hash: bytes,
        refresh_hash: bytes,
        now: float,
        access_expires_at: float,
        expires_at: float,
        upstream_tokens: bytes | None = None,
        groups: tuple[str, ...] = (),
        principal: str = "user",
    ) -> Grant:
        """A new grant with its first token pair, not yet rotated or used."""
        return cls(
            id=grant_id,
            user=user,
            client_id=client_id,
            scopes=scopes,
            resource=resource,
            access_hash=access_hash,
            access_expires_at=access_expires_at,
            refresh_hash=refresh_hash,
            previous_refresh_hash=None,
            rotated_at=None,
            successor_used=False,
            upstream_tokens=upstream_tokens,
            mcp_sessions=(),
            created_at=now,
            last_used_at=now,
            expires_at=expires_at,
            groups=groups,
            principal=principal,
        )

    @property
    def token_scopes(self) -> tuple[str, ...]:
        """The scopes of the current access token."""
        return self.scopes if self.access_scopes is None else self.access_scopes

    @property
    def key(self) -> str:
        return self.id


@dataclass(slots=True)
class DeviceFlow:
    """An RFC 8628 device authorization. Its key is a digest of the user code (so the page
    finds it from what the user types) and the key part of the device code."""

    KIND: ClassVar[str] = "devices"
    device_key: str
    secret_hash: bytes  # of the device code's secret
    client_id: str = field(metadata=INTERN)
    scopes: tuple[str, ...] = field(metadata=INTERN)
    resource: str = field(metadata=INTERN)
    status: str  # "pending" | "approved" | "denied"
    user: str | None
    grant_id: str | None
    interval: float
    last_poll_at: float | None
    deadline: float  # the codes expire here; the record stays a while to say so
    created_at: float
    expires_at: float | None
    groups: tuple[str, ...] = field(default=(), metadata=INTERN)  # the user's; format 4

    @property
    def key(self) -> str:
        return self.device_key


@dataclass(slots=True)
class McpSession:
    """An upstream `Mcp-Session-Id` bound to a grant; keyed by a hash of the session id.
    `resource` is its grant's resource identifier (issuer + path, as `Grant.resource`);
    "" in a record written before format 4 to a shared backend (Redis, PostgreSQL): its
    grant's resource holds then (a snapshot's are filled in by the migration)."""

    KIND: ClassVar[str] = "mcp_sessions"
    session_key: str
    grant_id: str
    user: str = field(metadata=INTERN)
    client_id: str = field(metadata=INTERN)
    sealed_id: bytes | None  # the session id, encrypted: to close it upstream on revocation
    created_at: float
    expires_at: float | None
    resource: str = field(default="", metadata=INTERN)  # format 4

    @property
    def key(self) -> str:
        return self.session_key


@dataclass(slots=True)
class RegistrationGroup:
    """The registrations of one app that have not been used yet, oldest first: those with
    the same name, redirect URIs (loopback ports aside), grant types and authentication
    method. Bounds how many never-used registrations one app leaves behind (clients that
    register again on every connection). Keyed by a digest of what the group shares; it
    expires with its newest member's unused lifetime (format 3)."""

    KIND: ClassVar[str] = "registration_groups"
    group_key: str
    client_ids: tuple[str, ...]
    created_at: float
    expires_at: float | None

    @property
    def key(self) -> str:
        return self.group_key


@dataclass(slots=True)
class AccountSession:
    """A person signed in at /account ("Connected apps"). The cookie is
    `<session_key>.<secret>`; only a digest of the secret is kept (format 3)."""

    KIND: ClassVar[str] = "account_sessions"
    session_key: str
    secret_hash: bytes
    user: str = field(metadata=INTERN)
    created_at: float
    expires_at: float | None

    @property
    def key(self) -> str:
        return self.session_key


PRINCIPAL_USER = "user"
PRINCIPAL_SERVICE = "service"

KEY_NEXT = "next"
KEY_ACTIVE = "active"
KEY_RETIRED = "retired"


@dataclass(slots=True)
class SigningKey:
    """One key of oauthd's signing key ring (format 5). Its state moves next -> active ->
    retired; exactly one key is active. The private key is sealed (AES-256-GCM, the
    session key: `login.encryption_key`) with the kid as associated data; the public JWK is
    kept in clear for the JWKS document. A next key is published from `created_at` and
    signs from `activate_after`; a retired key stays published until `expires_at`, when
    everything it signed has expired."""

    KIND: ClassVar[str] = "signing_keys"
    kid: str
    alg: str  # "ES256" | "RS256"
    state: str  # KEY_NEXT | KEY_ACTIVE | KEY_RETIRED
    public_jwk: str  # JSON text of the public JWK (kid, alg, use "sig")
    sealed_private: bytes
    created_at: float
    activate_after: float  # a next key may become active from here on
    activated_at: float | None
    retired_at: float | None
    expires_at: float | None

    @property
    def key(self) -> str:
        return self.kid


@dataclass(slots=True)
class UsedAssertion:
    """A JWT id (`jti`) seen in a client assertion, workload token or ID-JAG, kept until
    the JWT expires so that it is never accepted twice, across restarts and instances
    (`Table.add` is atomic). Keyed by a digest of the issuer and the jti (format 5)."""

    KIND: ClassVar[str] = "used_assertions"
    assertion_key: str
    issuer: str = field(metadata=INTERN)
    created_at: float
    expires_at: float | None

    @property
    def key(self) -> str:
        return self.assertion_key


def account_link_key(issuer: str, subject: str) -> str:
    return f"{issuer}\x1f{subject}"


@dataclass(slots=True)
class AccountLink:
    """An enterprise identity (an ID-JAG's issuer and subject) linked to a user of ours
    (format 5). `via`: "subject" (the user is named after the subject's mapping) or
    "email" (linked to an existing user by email, where the operator enabled it)."""

    KIND: ClassVar[str] = "account_links"
    issuer: str = field(metadata=INTERN)
    subject: str
    user: str = field(metadata=INTERN)
    via: str
    created_at: float
    expires_at: float | None

    @property
    def key(self) -> str:
        return account_link_key(self.issuer, self.subject)


Record = (
    Client
    | Consent
    | PendingAuthorization
    | AuthCode
    | Grant
    | DeviceFlow
    | McpSession
    | RegistrationGroup
    | AccountSession
    | SigningKey
    | UsedAssertion
    | AccountLink
)

RECORD_TYPES: tuple[type[Record], ...] = (
    Client,
    Consent,
    PendingAuthorization,
    AuthCode,
    Grant,
    DeviceFlow,
    McpSession,
    RegistrationGroup,
    AccountSession,
    SigningKey,
    UsedAssertion,
    AccountLink,
)
