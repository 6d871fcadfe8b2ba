"""A person's own grants ("Connected apps" at /account): listing them and revoking one.

Grants are keyed by id, not by user, so listing a user's grants scans the grants table
(`Table.scan`, chunked, without blocking the event loop); it runs only for a signed-in
user looking at the page."""

from __future__ import annotations

from dataclasses import dataclass

from oauthd.model import Grant, consent_key
from oauthd.oauth.tokens import Tokens
from oauthd.store import Store


@dataclass(slots=True, frozen=True)
class ConnectedApp:
    grant_id: str
    client_id: str
    client_name: str  # the client_id when the client is no longer registered
    scopes: tuple[str, ...]
    created_at: float
    last_used_at: float


class Accounts:
    def __init__(self, store: Store, tokens: Tokens) -> None:
        self._store = store
        self._tokens = tokens

    async def connected_apps(self, user: str) -> list[ConnectedApp]:
        """The user's live grants, the most recently used first."""
        grants = [g async for g in self._store.grants.scan() if g.user == user]
        names: dict[str, str] = {}
        for grant in grants:
            if grant.client_id not in names:
                client = await self._store.clients.get(grant.client_id)
                names[grant.client_id] = client.client_name if client else grant.client_id
        apps = [
            ConnectedApp(
                g.id, g.client_id, names[g.client_id], g.scopes, g.created_at, g.last_used_at
            )
            for g in grants
        ]
        apps.sort(key=lambda a: (-a.last_used_at, a.client_name, a.grant_id))
        return apps

    async def revoke(self, user: str, grant_id: str) -> Grant | None:
        """End the user's grant (its tokens stop working at once, its MCP sessions are
        closed) and forget the user's consent to that client, so that the app has to ask
        again. None if there is no such grant of this user."""
        grant = await self._store.grants.get(grant_id) if grant_id else None
        if grant is None or grant.user != user:
            return None
        ended = await self._tokens.revoke_grant(grant_id, by="account")  # counted, audited
        if ended is not None:
            await self._store.consents.delete(consent_key(user, ended.client_id))
        return ended
