"""What an operator can do to the running daemon: list and end sessions (grants), list,
create and delete clients, list and remove account links (enterprise identities linked to
users), list and rotate the signing keys (`SigningKeys`, the protocol's key ring).

Grants and clients are keyed by id only, so every listing and every revocation by user or
client is a scan of a table (`Table.scan`: chunked, the event loop keeps serving). That is
fine for an operator's command; nothing on a request path scans.

Sessions end through `AuthServer.revoke_grant` (counted and audited), as at `/revoke`: the grant is
gone from the store at once (the next request with its tokens gets 401) and the proxy
closes its MCP sessions upstream. `revoke_grant` also forgets the user's consent to that
client for the grant's resource (as on `/account`), so that the app has to ask again.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from oauthd.admin.views import ClientGroupView, ClientView, LinkView, SessionView
from oauthd.audit import AuditEvent, reasons
from oauthd.config import Config
from oauthd.exits import ExitCode
from oauthd.model import AccountLink, Client, Grant, SigningKey, account_link_key
from oauthd.oauth import ClientRefused, NewClient, Registration, client_deleted_event
from oauthd.store import Store

END_BATCH = 64  # grants ended concurrently: their journal writes share fsyncs


class AdminError(Exception):
    """The operation cannot be done as asked; str() says why, for the operator, and
    `exit_code` how the command ends."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(slots=True, frozen=True)
class ClientDeletion:
    client: Client | None  # None: no record (a cached document that expired)
    ended: list[Grant]


class GrantRevoker(Protocol):
    """What the admin socket needs of the protocol (`AuthServer` is one)."""

    async def revoke_grant(self, grant_id: str, *, by: str) -> Grant | None: ...


class SigningKeys(Protocol):
    """What the admin socket needs of the signing key ring (`oauthd.oauth.KeyRing`); its
    refusals are `KeyRingError`s."""

    def members(self) -> list[SigningKey]: ...

    async def refresh(self) -> None: ...

    async def rotate(self) -> SigningKey: ...

    async def retire(self, kid: str) -> tuple[SigningKey, SigningKey | None]: ...


class Authority(GrantRevoker, Protocol):
    """What the admin socket needs of the protocol to create clients too."""

    async def add_client(self, spec: NewClient) -> Registration:
        """ClientRefused saying why the client cannot be made so."""
        ...


@dataclass(slots=True, frozen=True)
class Selection:
    """Which sessions: each field given narrows them."""

    user: str | None = None
    client_id: str | None = None
    resource: str | None = None  # an identifier (`Grant.resource`)
    principal: str | None = None

    def __contains__(self, grant: Grant) -> bool:
        return (
            (self.user is None or grant.user == self.user)
            and (self.client_id is None or grant.client_id == self.client_id)
            and (self.resource is None or grant.resource == self.resource)
            and (self.principal is None or grant.principal == self.principal)
        )


class Admin:
    """The operations return records; `views` turns sessions into what is shown, a chunk
    at a time while they are sent: a million views made at once would keep the garbage
    collector busy (and the event loop stalled) for seconds."""

    def __init__(self, store: Store, auth: Authority, config: Config) -> None:
        self._store = store
        self._auth = auth
        self._config = config

    def resource_identifier(self, path_or_identifier: str) -> str:
        """What a grant of the resource named by its path or identifier holds in
        `Grant.resource` (also for a resource no longer configured)."""
        config = self._config
        resource = config.resource_named(path_or_identifier)
        if resource is not None:
            return resource.uri(config.server.issuer)
        if path_or_identifier.startswith("/"):
            return config.server.issuer + path_or_identifier
        return path_or_identifier

    def resource_path(self, identifier: str) -> str:
        """How sessions lists show a grant's resource: its path."""
        issuer = self._config.server.issuer
        return identifier[len(issuer) :] if identifier.startswith(issuer + "/") else identifier

    async def links(self) -> list[LinkView]:
        """Every account link (enterprise identity -> user), by issuer then subject."""
        links = [LinkView.of(link) async for link in self._store.account_links.scan()]
        return sorted(links, key=lambda v: (v.issuer, v.subject))

    async def remove_link(self, issuer: str, subject: str) -> LinkView:
        """Forget a link: the identity's next ID-JAG links it anew (its grants stay until
        they expire or are revoked: `sessions revoke --user`)."""

        def unlinked(link: AccountLink) -> AuditEvent:
            detail = {"issuer": link.issuer, "subject": link.subject}
            return AuditEvent("account_unlinked", user=link.user, detail=detail)

        key = account_link_key(issuer, subject)
        link = await self._store.account_links.take(key, audit=unlinked)
        if link is None:
            raise AdminError(f"no link of subject {subject!r} at issuer {issuer!r}")
        return LinkView.of(link)

    async def sessions(
        self,
        user: str | None = None,
        client_id: str | None = None,
        resource: str | None = None,
        principal: str | None = None,
    ) -> list[Grant]:
        """Live sessions, of `user`, `client_id`, `resource` (a path or identifier) and/or
        `principal` ("user", "service") if given, in no particular order (sorting a
        million in the daemon would stall it: the command sorts)."""
        wanted = None if resource is None else self.resource_identifier(resource)
        selection = Selection(user, client_id, wanted, principal)
        return [g async for g in self._store.grants.scan() if g in selection]

    async def revoke(
        self,
        grant_id: str | None = None,
        user: str | None = None,
        client_id: str | None = None,
        resource: str | None = None,
    ) -> list[Grant]:
        """End one session by id, or every session of `user`, `client_id` and/or
        `resource` (each given narrows it); the sessions ended. A session created while
        this runs is not ended."""
        if grant_id is not None:
            if resource is not None or user is not None or client_id is not None:
                raise AdminError("a session id names one session: give no other selector")
            grant = await self._store.grants.get(grant_id)
            if grant is None:
                raise AdminError(f"no live session {grant_id!r}")
            grants = [grant]
        elif user is None and client_id is None and resource is None:
            raise AdminError("say which sessions to revoke: an id, a user, a client or a resource")
        else:
            grants = await self.sessions(user, client_id, resource)
        return await self._end(grants)

    async def clients(self) -> list[ClientView]:
        """Registered clients and cached client metadata documents, with their session
        counts, in no particular order."""
        sessions = Counter([g.client_id async for g in self._store.grants.scan()])
        return [ClientView.of(c, sessions[c.client_id]) async for c in self._store.clients.scan()]

    async def client_stats(self) -> list[ClientGroupView]:
        """The registrations grouped by app (name and redirect set), with counts of used
        and never-used ones and of their sessions, in no particular order. Cached
        metadata documents are not registrations and are left out."""
        sessions = Counter([g.client_id async for g in self._store.grants.scan()])
        apps: dict[tuple[str, tuple[str, ...]], list[Client]] = {}
        async for client in self._store.clients.scan():
            if client.source == "dcr":
                apps.setdefault(client.app, []).append(client)
        return [ClientGroupView.of(members, sessions) for members in apps.values()]

    async def add_client(self, spec: NewClient) -> tuple[ClientView, str | None]:
        """A new confidential client (`AuthServer.add_client`) and its secret, shown once
        (None for private_key_jwt); refused with exit code DATAERR."""
        try:
            registration = await self._auth.add_client(spec)
        except ClientRefused as exc:
            raise AdminError(str(exc), ExitCode.DATAERR) from None
        return ClientView.of(registration.client, 0), registration.secret

    async def delete_client(self, client_id: str) -> ClientDeletion:
        """Forget a client and everything of it: its sessions end, its consents, codes and
        pending authorizations go. The record goes first, so that it can start nothing new
        meanwhile. A metadata-document client is only forgotten: it is fetched again the
        next time it is used."""
        client = await self._store.clients.take(client_id, audit=client_deleted_event)
        grants = await self.sessions(None, client_id, None)
        ended = await self._end(grants, by=reasons.CLIENT_DELETED)
        leftovers = await self._delete_leftovers(client_id)
        if client is None and not ended and not leftovers:
            raise AdminError(f"no client {client_id!r}")
        return ClientDeletion(client, ended)

    async def views(
        self, grants: Sequence[Grant], size: int, known: Client | None = None
    ) -> AsyncIterator[list[SessionView]]:
        """`grants` as views, `size` at a time, one chunk per event-loop turn; `known`: a
        client already deleted, whose name is still wanted."""
        clients: dict[str, Client | None] = {known.client_id: known} if known else {}
        for start in range(0, len(grants), size):
            chunk = []
            for grant in grants[start : start + size]:
                if grant.client_id not in clients:
                    clients[grant.client_id] = await self._store.clients.get(grant.client_id)
                resource = self.resource_path(grant.resource)
                chunk.append(SessionView.of(grant, clients[grant.client_id], resource))
            yield chunk
            await asyncio.sleep(0)

    # -- helpers ---------------------------------------------------------------------------

    async def _end(self, grants: list[Grant], by: str = "admin") -> list[Grant]:
        ended: list[Grant] = []
        for start in range(0, len(grants), END_BATCH):
            batch = grants[start : start + END_BATCH]
            results = await asyncio.gather(*(self._auth.revoke_grant(g.id, by=by) for g in batch))
            ended.extend(g for g in results if g is not None)
        return ended

    async def _delete_leftovers(self, client_id: str) -> int:
        """The client's consents, codes, pending authorizations and device flows."""
        store, deleted = self._store, 0
        for table in (store.consents, store.codes, store.pending, store.devices):
            keys = [r.key async for r in table.scan() if r.client_id == client_id]
            for key in keys:
                deleted += await table.delete(key)
        return deleted
