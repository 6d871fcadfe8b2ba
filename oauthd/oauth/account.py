"""A person's own grants ("Connected apps" at /account): signing in to see them, listing
them and revoking one.

A sign-in at /account is an `AccountSession` in the store, like every other login: it
survives a restart and is seen by every instance on a shared backend. The browser holds
`<key>.<secret>`; the store holds a digest of the secret, compared in constant time. A
session ends after SESSION_TTL (the backends' own expiry, purged by housekeeping) or when
signed out (deleted: ended for every copy of the cookie, on every instance).

Grants are keyed by id, not by user, so listing a user's grants scans the grants table
(`Table.scan`, chunked, without blocking the event loop); it runs only for a signed-in
user looking at the page."""

from __future__ import annotations

from dataclasses import dataclass

from oauthd import crypto
from oauthd.clock import Clock
from oauthd.model import AccountSession, Grant
from oauthd.oauth.tokens import Tokens
from oauthd.store import Store

SESSION_TTL = 30 * 60.0


@dataclass(slots=True, frozen=True)
class ConnectedApp:
    grant_id: str
    client_id: str
    client_name: str  # the client_id when the client is no longer registered
    resource_name: str  # its resource's `name` (its path when no longer configured)
    scopes: tuple[str, ...]
    created_at: float
    last_used_at: float


class Accounts:
    def __init__(self, store: Store, tokens: Tokens, clock: Clock) -> None:
        self._store = store
        self._tokens = tokens
        self._clock = clock

    # -- signing in ----------------------------------------------------------------------------

    async def sign_in(self, user: str) -> tuple[str, AccountSession]:
        """A new session of `user` (whose password was checked): the cookie value (hand it
        to the browser, never store or log it) and the session."""
        minted = crypto.mint_token()
        now = self._clock.now()
        session = AccountSession(minted.key, minted.secret_hash, user, now, now + SESSION_TTL)
        await self._store.account_sessions.add(session)
        return minted.token, session

    async def session(self, cookie: str | None) -> AccountSession | None:
        """The live session the cookie value names, or None (absent, malformed, expired,
        signed out, or a secret that does not match)."""
        parts = crypto.split_token(cookie) if cookie else None
        if parts is None:
            return None
        key, secret = parts
        session = await self._store.account_sessions.get(key)
        if session is None or not crypto.secret_matches(secret, session.secret_hash):
            return None
        return session

    async def sign_out(self, session: AccountSession) -> None:
        """End the session everywhere (every copy of its cookie, on every instance)."""
        await self._store.account_sessions.delete(session.session_key)

    async def connected_apps(self, user: str) -> list[ConnectedApp]:
        """The user's live grants, the most recently used first."""
        grants = [g async for g in self._store.grants.scan() if g.user == user]
        names: dict[str, str] = {}
        for grant in grants:
            if grant.client_id not in names:
                client = await self._store.clients.get(grant.client_id)
                names[grant.client_id] = client.client_name if client else grant.client_id
        resource_name = self._tokens.targets.name_of
        apps = [
            ConnectedApp(
                g.id,
                g.client_id,
                names[g.client_id],
                resource_name(g.resource),
                g.scopes,
                g.created_at,
                g.last_used_at,
            )
            for g in grants
        ]
        apps.sort(key=lambda a: (-a.last_used_at, a.client_name, a.grant_id))
        return apps

    async def owned(self, user: str, grant_id: str) -> Grant | None:
        """The grant `grant_id` if it is `user`'s (what /account may revoke), else None."""
        grant = await self._store.grants.get(grant_id) if grant_id else None
        return grant if grant is not None and grant.user == user else None
