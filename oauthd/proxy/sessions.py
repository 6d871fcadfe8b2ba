"""MCP sessions bound to the OAuth grant that created them (MCP security best practices,
"Session Hijacking"): an `Mcp-Session-Id` is never authentication; it only works with a
token of the grant it was bound to, across refreshes and restarts.

The one exception is the same person through the same app at the same resource with a
grant newer than the session: a client that authorized again, as on a step-up (a 403
`insufficient_scope` sends it through a new authorization, and the official SDKs then
retry in the session they have). The session is handed over to the new grant, which
closes it when it ends; it never goes back to an older one."""

from __future__ import annotations

import dataclasses
import logging

from oauthd.clock import Clock
from oauthd.crypto import Sealer, lookup_key
from oauthd.model import FIRST_RESOURCE_PATH, Grant, McpSession
from oauthd.store import Store

log = logging.getLogger("oauthd.proxy")

SESSION_HEADER = "Mcp-Session-Id"
MAX_SESSIONS_PER_GRANT = 64  # oldest bindings (grant list and records) are deleted past this
CLOSED = frozenset({200, 202, 204, 404})  # a DELETE's statuses after which a session is gone


class SessionBindings:
    def __init__(
        self, store: Store, clock: Clock, sealer: Sealer, ttl: float, issuer: str = ""
    ) -> None:
        # the resource of a binding stored before format 4 (its `resource` is ""): `/mcp`'s
        self._legacy_resource = issuer + FIRST_RESOURCE_PATH
        self._ttl = ttl  # a binding outlives no grant that has not been used for this long
        self._store = store
        self._clock = clock
        self._sealer = sealer

    async def belongs_to(self, session_id: str, grant: Grant) -> bool:
        """True if the session was opened with this grant, or with an earlier grant of the
        same user, client and resource (then it is handed over to this one); a binding in
        use is kept alive (its expiry slides like the grant's)."""
        binding = await self._store.mcp_sessions.get(lookup_key(session_id))
        if binding is None:
            return False
        if binding.grant_id != grant.id:
            if not self._newer_grant_of_its_principal(binding, grant):
                return False
            await self._hand_over(binding, grant)
            return True
        now = self._clock.now()
        if binding.expires_at is not None and binding.expires_at - now < self._ttl / 2:
            renewed = now + self._ttl
            await self._store.mcp_sessions.update(
                binding.session_key, lambda b: dataclasses.replace(b, expires_at=renewed)
            )
        return True

    async def bind(self, session_id: str, grant: Grant) -> None:
        key = lookup_key(session_id)
        existing = await self._store.mcp_sessions.get(key)
        if existing is not None:
            if existing.grant_id != grant.id:  # an upstream handing out one id twice
                log.warning(
                    "upstream reused an MCP session id of another grant; not rebound",
                    extra={"event": "proxy.session_id_reused"},
                )
            return
        await self._store.mcp_sessions.put(
            McpSession(
                session_key=key,
                grant_id=grant.id,
                user=grant.user,
                client_id=grant.client_id,
                sealed_id=self._sealer.seal(session_id.encode(), key),
                created_at=self._clock.now(),
                expires_at=self._clock.now() + self._ttl,
                resource=grant.resource,
            )
        )

        await self._list(key, grant)

    def _newer_grant_of_its_principal(self, binding: McpSession, grant: Grant) -> bool:
        """Whether `grant` is of the binding's user, client and resource, and newer than
        the binding (a session never goes back to an older grant, nor back and forth)."""
        return (
            binding.user == grant.user
            and binding.client_id == grant.client_id
            and (binding.resource or self._legacy_resource) == grant.resource
            and grant.created_at > binding.created_at
        )

    async def _hand_over(self, binding: McpSession, grant: Grant) -> None:
        """The session of `binding` from now on belongs to `grant` (listed by it, not by
        the grant it was bound to)."""
        old_grant, key, renewed = binding.grant_id, binding.session_key, self._clock.now()

        def moved(current: McpSession) -> McpSession:
            if current.grant_id != old_grant:
                return current  # handed over meanwhile
            # bound anew now: a grant older than this moment never takes it back
            return dataclasses.replace(
                current, grant_id=grant.id, created_at=renewed, expires_at=renewed + self._ttl
            )

        await self._store.mcp_sessions.update(key, moved)
        log.info(
            "MCP session handed over to a new grant of its user and client",
            extra={"event": "proxy.session_handed_over", "client_id": grant.client_id},
        )
        await self._unlist(key, old_grant)
        await self._list(key, grant)

    async def _list(self, key: str, grant: Grant) -> None:
        """`grant` lists the binding `key` (so that it closes the session when it ends)."""
        evicted: list[str] = []

        def listed(current: Grant) -> Grant:  # pure: may run again on shared backends
            if key in current.mcp_sessions:
                evicted.clear()
                return current
            listed_keys = (*current.mcp_sessions, key)
            keys = listed_keys[-MAX_SESSIONS_PER_GRANT:]
            evicted[:] = listed_keys[: len(listed_keys) - len(keys)]
            return dataclasses.replace(current, mcp_sessions=keys)

        updated = await self._store.grants.update(grant.id, listed)
        if updated is None:
            evicted[:] = [key]  # the grant ended meanwhile: nothing may keep this binding
        # The grant tracks at most MAX_SESSIONS_PER_GRANT bindings: the oldest beyond that
        # are deleted, so that records never pile up past what the grant can release.
        for old in evicted:
            await self._store.mcp_sessions.delete(old)
        if evicted and updated is not None:
            log.info(
                "oldest MCP session binding of a grant evicted",
                extra={"event": "proxy.session_evicted", "count": len(evicted)},
            )

    async def track(
        self, method: str, status: int, grant: Grant, session_id: str | None, new_id: str | None
    ) -> None:
        """Follow the upstream's answer to a request in `session_id` (None: none yet): a
        new session id it handed out (`new_id`, status below 400) is bound to the grant; a
        DELETE it accepted, or of a session it did not know, forgets `session_id`."""
        if new_id and new_id != session_id and status < 400:
            await self.bind(new_id, grant)
        if method == "DELETE" and session_id and status in CLOSED:
            await self.forget(session_id, grant)

    async def forget(self, session_id: str, grant: Grant) -> None:
        key = lookup_key(session_id)
        await self._store.mcp_sessions.delete(key)
        await self._unlist(key, grant.id)

    async def _unlist(self, key: str, grant_id: str) -> None:
        def unlisted(current: Grant) -> Grant:
            keys = tuple(k for k in current.mcp_sessions if k != key)
            return (
                current
                if keys == current.mcp_sessions
                else dataclasses.replace(current, mcp_sessions=keys)
            )

        await self._store.grants.update(grant_id, unlisted)

    async def release_all(self, grant: Grant) -> list[str]:
        """Forget every session of an ended grant; return their ids to close upstream."""
        ids: list[str] = []
        for key in grant.mcp_sessions:
            binding = await self._store.mcp_sessions.get(key)
            if binding is None or binding.grant_id != grant.id:
                continue  # gone, or handed over to a newer grant
            binding = await self._store.mcp_sessions.take(key)
            if binding is None or binding.sealed_id is None:
                continue
            try:
                ids.append(self._sealer.open(binding.sealed_id, key).decode())
            except ValueError:
                log.warning(
                    "an MCP session id could not be unsealed (key changed?)",
                    extra={"event": "proxy.session_unsealable"},
                )
        return ids
