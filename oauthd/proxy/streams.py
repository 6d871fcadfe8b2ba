"""The upstream answers being relayed right now, by the grant they were opened with, so
that ending a grant ends its streams (SSE answers, GET streams, `subscriptions/listen`):

- at once, when the grant ends in this process (`end_grant`, called by the proxy's
  grant-ended listener: revocation, the admin CLI, `/account`, reuse detection, client
  deletion);
- within `interval`, when it ends in another instance of a Redis/PostgreSQL deployment:
  `watch` looks up the grants that have streams open every `interval` (reads the store's
  cache answers, kept fresh by the backend's invalidations) and ends the streams of those
  that are gone or expired.

Ending a stream closes its upstream response: the relay then ends the client's stream
(SSE answers are chunked, so the client sees the end), and the client's reconnect meets
the 401 of a token that is no longer valid. Those ends are oauthd's, not the upstream's
failures: `ended_here` tells the relay not to count them.
"""

from __future__ import annotations

import asyncio
import logging
import weakref

import aiohttp

from oauthd.clock import Clock
from oauthd.model import Grant
from oauthd.store import Table, Unavailable

log = logging.getLogger("oauthd.proxy")

WATCH_INTERVAL = 0.5  # seconds: well inside the 1 s in which a revocation must end streams


class OpenStreams:
    def __init__(self, grants: Table[Grant], clock: Clock, interval: float = WATCH_INTERVAL):
        self._grants = grants
        self._clock = clock
        self._interval = interval
        self._by_grant: dict[str, set[aiohttp.ClientResponse]] = {}
        self._long_lived: set[aiohttp.ClientResponse] = set()
        self._ended: weakref.WeakSet[aiohttp.ClientResponse] = weakref.WeakSet()
        self.shutting_down = False

    def opened(self, grant_id: str, upstream: aiohttp.ClientResponse, long_lived: bool) -> None:
        """`upstream`'s answer is being relayed back (`long_lived`: a GET stream, which
        also ends at shutdown); `closed` when it is done. (Two calls, not a context
        manager: this is the hot path.)"""
        streams = self._by_grant.get(grant_id)
        if streams is None:
            self._by_grant[grant_id] = {upstream}
        else:
            streams.add(upstream)
        if long_lived:
            self._long_lived.add(upstream)

    def closed(self, grant_id: str, upstream: aiohttp.ClientResponse) -> None:
        streams = self._by_grant.get(grant_id)
        if streams is not None:
            streams.discard(upstream)
            if not streams:
                del self._by_grant[grant_id]
        self._long_lived.discard(upstream)

    def ended_here(self, upstream: aiohttp.ClientResponse) -> bool:
        """True if oauthd ended this answer (a shutdown, an ended grant)."""
        return self.shutting_down or upstream in self._ended

    def end_grant(self, grant_id: str) -> int:
        """End every answer being relayed for `grant_id`; how many there were."""
        streams = self._by_grant.pop(grant_id, set())
        for upstream in streams:
            self._ended.add(upstream)
            upstream.close()
        if streams:
            log.info(
                "streams of an ended grant closed",
                extra={"event": "proxy.streams_ended", "count": len(streams)},
            )
        return len(streams)

    def end_long_lived(self) -> None:
        """At shutdown: end the GET streams (clients reconnect to the next instance)."""
        self.shutting_down = True
        for upstream in list(self._long_lived):
            upstream.close()

    async def watch(self) -> None:
        """Forever: end the streams of grants that ended elsewhere (see the module's doc)."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.sweep()
            except Unavailable:
                pass  # the store is down: nothing can be known ended, streams go on
            except Exception:  # a bug: log it, keep watching
                log.exception("stream watch failed", extra={"event": "http.error"})

    async def sweep(self) -> None:
        now = self._clock.now()
        for grant_id in list(self._by_grant):
            grant = await self._grants.get(grant_id)
            if grant is None or (grant.expires_at is not None and grant.expires_at <= now):
                self.end_grant(grant_id)
