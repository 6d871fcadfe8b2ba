"""Client registry hygiene: when a registration was last used, and which ones go.

MCP clients such as Claude and Claude Code register again on every fresh connection, so
the registry fills with registrations that nobody will use again. Three rules keep it
bounded (the config keys are in `[oauth]`):

- A registration carries `expires_at = created_at + unused_client_lifetime` until its first
  use, which clears it: a registration never used is gone after that time, removed by
  every backend's own expiry.
- At most `unused_registrations_per_app` never-used registrations per app (same name and
  redirect set, `Client.app`): the app's `RegistrationGroup` lists its registrations
  oldest first; one pushed off the list is expired at once if it is still unused. So a
  flood of identical registrations leaves at most that many behind, whatever the rate.
- A registration idle for `idle_client_lifetime` (last used, or made, that long ago) that
  holds no live grant is removed by housekeeping (`remove_idle`).

Only registrations (`source == "dcr"`) are touched; a cached metadata document follows its
HTTP cache lifetime. Every removal is a compare-and-swap (`Table.update` setting
`expires_at` to now) that re-checks the rule on the record as stored, so a registration
used meanwhile by another request or instance is kept.

`last_used_at` is written at most once per LAST_USED_RESOLUTION per client, so using a
client costs no store write per request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import weakref
from collections.abc import Callable

import orjson

from oauthd.audit import AuditEvent, reasons
from oauthd.clock import Clock
from oauthd.config import OAuthConfig
from oauthd.metrics import Metrics
from oauthd.model import Client, RegistrationGroup
from oauthd.store import Conflict, Store, Unavailable

log = logging.getLogger("oauthd.clients")

LAST_USED_RESOLUTION = 3600.0  # seconds: last_used_at is at most this stale


def group_key(client: Client) -> str:
    """The key of the app's `RegistrationGroup`: a digest of `Client.app`."""
    return hashlib.sha256(orjson.dumps(client.app)).hexdigest()[:32]


def fingerprint(client: Client) -> str:
    """12 hex characters of the app's key: what audit records name a registration's app by."""
    return group_key(client)[:12]


def removed_event(client: Client, why: str) -> AuditEvent:
    """The registry removed an unused or idle registration (`why`: "unused_per_app",
    "idle"); it held no grant."""
    return AuditEvent(
        "client_removed",
        client_id=client.client_id,
        reason=reasons.CLIENT_REAPED,
        detail={"why": why, "client_name": client.client_name, "fingerprint": fingerprint(client)},
    )


def _is_stale(client: Client, now: float) -> bool:
    used = client.last_used_at
    return used is None or now - used >= LAST_USED_RESOLUTION


class RegistryHygiene:
    def __init__(self, config: OAuthConfig, store: Store, clock: Clock, metrics: Metrics) -> None:
        self._metrics = metrics
        # One group update at a time per app in this process: concurrent compare-and-swaps
        # of one record would mostly retry (Redis WATCH); instances still race, rarely.
        self._joining: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._config = config
        self._store = store
        self._clock = clock

    def unused_expiry(self, created_at: float) -> float | None:
        """When a registration made at `created_at` goes if it is never used."""
        lifetime = self._config.unused_client_lifetime
        return created_at + lifetime if lifetime else None

    # -- use ---------------------------------------------------------------------------------

    async def used(self, client: Client) -> Client | None:
        """Note that `client` is being used (at most one write per LAST_USED_RESOLUTION);
        the client as stored, None if it was removed meanwhile (expired as unused or
        idle). A first use ends the unused lifetime. Noting is not worth a failed
        request: when the store cannot write, the client is returned as it was."""
        now = self._clock.now()
        if client.source != "dcr" or not _is_stale(client, now):
            return client

        def mark(stored: Client) -> Client:
            if not _is_stale(stored, now):
                return stored  # another request or instance marked it: no write
            return dataclasses.replace(stored, last_used_at=now, expires_at=None)

        try:
            return await self._store.clients.update(client.client_id, mark)
        except Unavailable:
            return client

    # -- registration --------------------------------------------------------------------------

    async def registered(self, client: Client) -> None:
        """Add a new registration to its app's group; expire the never-used ones pushed off
        it (the oldest beyond `unused_registrations_per_app`). Best effort: the
        registration stands when the store fails here (it still expires unused)."""
        try:
            dropped = await self._join_group(client)
        except Unavailable as exc:
            log.warning(
                "registration not counted against its app's unused ones: store unavailable",
                extra={"event": "client.group_failed", "reason": exc.reason},
            )
            return
        for client_id in dropped:
            if await self._expire_if(client_id, lambda c: c.last_used_at is None, "unused_per_app"):
                self._metrics.clients_removed("unused_per_app")

    async def _join_group(self, client: Client) -> list[str]:
        key = group_key(client)
        lock = self._joining.get(key)
        if lock is None:
            lock = self._joining[key] = asyncio.Lock()
        async with lock:
            return await self._append(key, client)

    async def _append(self, key: str, client: Client) -> list[str]:
        cap = self._config.unused_registrations_per_app
        dropped: list[str] = []
        expires_at = self.unused_expiry(client.created_at)

        def append(group: RegistrationGroup) -> RegistrationGroup:
            ids = (*group.client_ids, client.client_id)
            dropped[:] = ids[:-cap]  # the last call is the one written
            # the newest member's unused expiry: the group is of no use after it
            return dataclasses.replace(group, client_ids=ids[-cap:], expires_at=expires_at)

        while True:
            if await self._store.registration_groups.update(key, append) is not None:
                return dropped
            first = RegistrationGroup(key, (client.client_id,), client.created_at, expires_at)
            try:
                await self._store.registration_groups.add(first)
                return []
            except Conflict:
                continue  # another registration of the app made the group first

    async def _expire_if(self, client_id: str, rule: Callable[[Client], bool], why: str) -> bool:
        """Expire the registration now if `rule(client)` holds for it as stored, recorded
        as removed (`why`)."""
        now, expired = self._clock.now(), False

        def expire(stored: Client) -> Client:
            nonlocal expired
            expired = stored.source == "dcr" and rule(stored)
            return dataclasses.replace(stored, expires_at=now) if expired else stored

        def event(client: Client) -> AuditEvent | None:
            return removed_event(client, why) if client.expires_at == now else None

        await self._store.clients.update(client_id, expire, audit=event)
        return expired

    # -- housekeeping ----------------------------------------------------------------------------

    async def remove_idle(self) -> int:
        """Remove the registrations idle (last used, or made, if never used) for
        `idle_client_lifetime` that hold no live grant; how many. Scans the clients, and
        the grants only when some client is idle (housekeeping runs it hourly)."""
        lifetime = self._config.idle_client_lifetime
        if not lifetime:
            return 0
        cutoff = self._clock.now() - lifetime

        def idle(client: Client) -> bool:
            return client.source == "dcr" and _idle_since(client) <= cutoff

        candidates = [c.client_id async for c in self._store.clients.scan() if idle(c)]
        if not candidates:
            return 0
        holding = {g.client_id async for g in self._store.grants.scan()}
        removed = 0
        for client_id in candidates:
            if client_id not in holding and await self._expire_if(client_id, idle, "idle"):
                removed += 1
                self._metrics.clients_removed("idle")
        return removed


def _idle_since(client: Client) -> float:
    return client.created_at if client.last_used_at is None else client.last_used_at
