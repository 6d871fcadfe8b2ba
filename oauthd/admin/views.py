"""What the admin socket shows of a session (grant) or a client.

Each view names every field it shows, so that a digest, a secret or a sealed upstream token
cannot slip into an answer when a record grows a field. orjson writes them as JSON objects
(tuples as arrays); `from_json` reads them back.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from oauthd.model import AccountLink, Client, Grant, SigningKey

V = TypeVar("V", "SessionView", "ClientView", "ClientGroupView", "LinkView", "KeyView")


@dataclass(slots=True, frozen=True)
class SessionView:
    id: str  # the grant id: the key part of its tokens, not a secret
    user: str
    client_id: str
    client_name: str  # "" when the client is no longer registered (or cached)
    scopes: tuple[str, ...]
    created_at: float
    last_used_at: float
    expires_at: float | None
    mcp_sessions: int
    resource: str = ""  # the grant's resource: its path (its identifier if not the issuer's)
    principal: str = "user"  # "user": a person; "service": a client acting for itself

    @classmethod
    def of(cls, grant: Grant, client: Client | None, resource: str = "") -> SessionView:
        return cls(
            id=grant.id,
            user=grant.user,
            client_id=grant.client_id,
            client_name=client.client_name if client else "",
            scopes=grant.scopes,
            created_at=grant.created_at,
            last_used_at=grant.last_used_at,
            expires_at=grant.expires_at,
            mcp_sessions=len(grant.mcp_sessions),
            resource=resource,
            principal=grant.principal,
        )


@dataclass(slots=True, frozen=True)
class ClientView:
    client_id: str
    client_name: str
    source: str  # "dcr" (registered) or "cimd" (a cached metadata document)
    auth_method: str
    redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    created_at: float
    expires_at: float | None  # a cached document's expiry, or a never-used registration's
    sessions: int
    # who its tokens speak for: "user" (people, through it), "service" (the client itself:
    # client credentials), "user service" (both)
    principal: str = "user"
    scope: str = ""
    resource: str | None = None  # a client credentials client's default resource
    jwks_uri: str | None = None

    @classmethod
    def of(cls, client: Client, sessions: int) -> ClientView:
        return cls(
            client_id=client.client_id,
            client_name=client.client_name,
            source=client.source,
            auth_method=client.token_endpoint_auth_method,
            redirect_uris=client.redirect_uris,
            grant_types=client.grant_types,
            created_at=client.created_at,
            expires_at=client.expires_at,
            sessions=sessions,
            principal=principal_of(client),
            scope=client.scope,
            resource=client.resource,
            jwks_uri=client.jwks_uri,
        )


SERVICE_GRANTS = frozenset({"client_credentials"})


def principal_of(client: Client) -> str:
    """Whom a client's tokens speak for, by its grant types: the client itself
    (client_credentials), people (every other grant: an ID-JAG redeemed with the JWT
    bearer grant names a person too)."""
    kinds = []
    if set(client.grant_types) - SERVICE_GRANTS:
        kinds.append("user")
    if SERVICE_GRANTS & set(client.grant_types):
        kinds.append("service")
    return " ".join(kinds)


@dataclass(slots=True, frozen=True)
class ClientGroupView:
    """The registrations of one app (`Client.app`: the same name and redirect set)."""

    client_name: str
    redirect_uris: tuple[str, ...]  # the redirect set: loopback ports written ":*"
    clients: int
    used: int  # registrations used at least once (at /authorize, /token, ...)
    never_used: int
    sessions: int  # live sessions (grants) of the group's registrations
    oldest: float  # the first registration's created_at
    newest: float  # the last registration's created_at
    last_used_at: float | None  # the latest use of any of them; None: never used

    @classmethod
    def of(cls, members: Sequence[Client], sessions: Counter[str]) -> ClientGroupView:
        name, redirects = members[0].app
        uses = [c.last_used_at for c in members if c.last_used_at is not None]
        created = [c.created_at for c in members]
        return cls(
            client_name=name,
            redirect_uris=redirects,
            clients=len(members),
            used=len(uses),
            never_used=len(members) - len(uses),
            sessions=sum(sessions[c.client_id] for c in members),
            oldest=min(created),
            newest=max(created),
            last_used_at=max(uses, default=None),
        )


@dataclass(slots=True, frozen=True)
class LinkView:
    """An enterprise identity (ID-JAG issuer and subject) linked to a user of ours."""

    issuer: str
    subject: str
    user: str
    via: str  # "subject" (named by the issuer's user_template) or "email"
    created_at: float

    @classmethod
    def of(cls, link: AccountLink) -> LinkView:
        return cls(link.issuer, link.subject, link.user, link.via, link.created_at)


@dataclass(slots=True, frozen=True)
class KeyView:
    """A signing key: never its key material (the public JWK is in the JWKS document)."""

    kid: str
    alg: str
    state: str  # "next" | "active" | "retired"
    created_at: float
    activate_after: float  # a next key signs from here on
    activated_at: float | None
    retired_at: float | None
    expires_at: float | None  # a retired key leaves the JWKS document here

    @classmethod
    def of(cls, key: SigningKey) -> KeyView:
        return cls(
            kid=key.kid,
            alg=key.alg,
            state=key.state,
            created_at=key.created_at,
            activate_after=key.activate_after,
            activated_at=key.activated_at,
            retired_at=key.retired_at,
            expires_at=key.expires_at,
        )


_FIELDS: dict[type[Any], frozenset[str]] = {
    cls: frozenset(f.name for f in dataclasses.fields(cls))
    for cls in (SessionView, ClientView, ClientGroupView, LinkView, KeyView)
}


def from_json(cls: type[V], item: Mapping[str, Any]) -> V:
    """A view from its JSON object (lists back to tuples; unknown keys ignored)."""
    names = _FIELDS[cls]
    fields: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in item.items() if k in names
    }
    return cls(**fields)
