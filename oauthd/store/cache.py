"""A per-process read cache of grants and MCP session bindings for the shared backends
(redis, postgres), kept right by invalidations that the backend pushes.

Every token-checked `/mcp` request reads its grant, and its session binding when it names
an `Mcp-Session-Id`. On a shared backend each read is a round trip that costs oauthd
about as much CPU as the rest of the request (docs/performance.md); a hit here costs what
the file backend's read costs. Only `get` is served from the cache; every other operation
goes to the backend.

What keeps revocation immediate:

- Only found records are kept (no negative entries), at most `size` per kind (the least
  recently used go first), and expiry is checked on every hit (`is_live`).
- A listener, on a connection of its own outside the pool, hears of every change to these
  two kinds, whoever makes it (any instance, the admin commands, expiry): Redis client
  tracking (`store/redis_tracking.py`), PostgreSQL triggers and `LISTEN`
  (`store/postgres_notify.py`). Each invalidation drops its key at once.
- A read's result is kept only if no invalidation of its key, no flush and no reconnect
  came while the read was in flight. A read that raced a write may return the old record
  (as it would without a cache), but it never leaves it cached.
- While the listener is not subscribed (at start, after its connection broke, until it
  has subscribed again) the cache is empty and bypassed: every `get` goes to the backend.
  The listener reconnects by itself, with backoff.
- A hit is served only while the listener is fresh: it heard from the server (any
  message: a pong, a heartbeat's answer, an invalidation) within the last `FRESH_WITHIN`
  seconds. It pings every `PING_EVERY` seconds, so a healthy idle listener stays fresh;
  one whose connection went silent (a frozen server, a dead network path) stops serving
  hits after at most `FRESH_WITHIN` seconds, long before the dead connection is detected
  (a ping unanswered within the store's timeout) and replaced.
- This process's own writes drop the key at once, before and after the write.
- A write of this process that changed a cached kind returns only once the listener
  `confirm`ed it: everything the backend did before the confirmation was asked for has
  been delivered to this cache (at most `ECHO_WITHIN` seconds; past that the whole cache
  is cleared). An invalidation of the same key by someone else does not count: the
  confirmation is a round trip of its own, ordered after the write. Redis: a PING on the
  listener's connection, sent after the write's reply came; Redis had queued the write's
  invalidation for every tracking connection before it read that PING (BCAST messages
  go out in the `beforeSleep` of the write's event-loop turn, before its reply), so when
  our pong arrives every other instance's copy is already in its socket, ahead of any
  request that reaches it after we answered. PostgreSQL: a `pg_notify` of a marker
  committed after the write; notifications reach a listener in commit order, so our
  listener has the write's invalidation once it has the marker. Other listeners' server
  processes each send on their own schedule, though (measured: median 0.07 ms, p99
  4.3 ms, max 9.7 ms behind ours on a loaded machine), so a write that ends a record (a
  `take` or `delete` that removed one: a revocation) or a grant's access token (an
  `update` that replaced `access_hash`: an access token's revocation, or a refresh)
  waits `listener.grace` more before it returns (`REVOKE_GRACE` on PostgreSQL, 0 on
  Redis). That bounds the lag in practice, not by a protocol guarantee;
  `storage.cache_size = 0` turns the cache off for strict behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, TypeVar

from oauthd.audit import Audit
from oauthd.clock import Clock
from oauthd.model import Record
from oauthd.store.base import R, Store, Table, finish_within, is_live

log = logging.getLogger("oauthd.store")

T = TypeVar("T")

CACHE_SIZE = 10_000  # records kept per kind (storage.cache_size)
ECHO_WITHIN = 1.0  # seconds a write waits for the listener's confirmation
PING_EVERY = 0.25  # seconds between the listener's pings (or heartbeat queries)
FRESH_WITHIN = 1.0  # a hit is served only if the listener heard the server this recently
FIRST_PAUSE, LONGEST_PAUSE = 0.05, 5.0  # between reconnects (doubling, with jitter)


class Listen(Protocol):
    """The backend's invalidation listener.

    Called, it runs one listener session: connect, subscribe, call `cache.up()`, then
    deliver invalidations (`cache.invalidate`, `cache.flush`) and call `cache.alive()` on
    every message from the server (pinging every `PING_EVERY` seconds so that there is
    one), until the connection fails (raise) or the task is cancelled. It closes its
    connections before it returns."""

    grace: float  # seconds a write that ended a record waits after its confirmation

    async def __call__(self, cache: ReadCache, /) -> None: ...

    async def confirm(self) -> None:
        """Return once every invalidation of a change the backend made before this call
        has been delivered to the cache; at once when no session is subscribed. Raises
        when the session fails meanwhile."""


class _Read:
    """A read in flight; `stale` once its key was invalidated meanwhile."""

    __slots__ = ("stale",)

    def __init__(self) -> None:
        self.stale = False


class _Kind:
    """The cache of one kind: entries (least recently used first) and reads in flight, by
    key."""

    __slots__ = ("entries", "kind", "reads")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.entries: OrderedDict[str, Record] = OrderedDict()
        self.reads: dict[str, list[_Read]] = {}

    def keep(self, key: str, record: Record, size: int) -> None:
        self.entries[key] = record
        self.entries.move_to_end(key)
        while len(self.entries) > size:
            self.entries.popitem(last=False)

    def drop(self, key: str) -> None:
        self.entries.pop(key, None)
        for read in self.reads.get(key, ()):
            read.stale = True

    def clear(self) -> None:
        self.entries.clear()
        for reads in self.reads.values():
            for read in reads:
                read.stale = True


class ReadCache:
    """The cache of one store, and the task that runs its listener."""

    def __init__(
        self, clock: Clock, listen: Listen, *, size: int = CACHE_SIZE, timeout: float = 2.0
    ) -> None:
        self.clock = clock
        self.listener = listen
        self.size = size
        self.timeout = timeout  # the store's: a bound for the listener's steps
        self.ready = False  # subscribed: the cache may be used
        self.heard = 0.0  # monotonic time the listener last heard from the server
        self.epoch = 0  # bumped by every flush: a read that spans one keeps nothing
        self.hits = 0
        self.misses = 0  # reads that went to the backend while ready
        self.stale_skips = 0  # reads that went to the backend: the listener was not fresh
        self._kinds: dict[str, _Kind] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._said_off = False  # the outage was logged: log the recovery too

    def wrap(self, table: Table[R]) -> Table[R]:
        self._kinds[table.kind] = _Kind(table.kind)
        return CachedTable(table, self)

    def start(self) -> None:
        """Start the listener (needs a running event loop); idempotent."""
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="oauthd-cache-listener"
            )

    async def close(self) -> None:
        """Stop the listener and close its connection; idempotent."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # bounded: a client library's cleanup may wait on a silent server
            await asyncio.wait({task}, timeout=self.timeout)
        self.down()

    def fresh(self) -> bool:
        """Subscribed, and heard from the server within `FRESH_WITHIN` seconds: hits may
        be served."""
        return self.ready and time.monotonic() - self.heard <= FRESH_WITHIN

    # -- what the listener calls ----------------------------------------------------------

    def up(self) -> None:
        """Subscribed: from now on every change is heard, so the cache may fill."""
        self.flush()
        self.alive()
        self.ready = True
        if self._said_off:
            self._said_off = False
            log.info("read cache on again", extra={"event": "store.cache_on"})

    def alive(self) -> None:
        """A message came from the server: everything sent before it has been heard."""
        self.heard = time.monotonic()

    def down(self) -> None:
        self.ready = False
        self.flush()

    def invalidate(self, kind: str, key: str) -> None:
        cached = self._kinds.get(kind)
        if cached is not None:
            cached.drop(key)

    def flush(self) -> None:
        self.epoch += 1
        for cached in self._kinds.values():
            cached.clear()

    # -- the listener's life ----------------------------------------------------------------

    async def _run(self) -> None:
        """Run listener sessions until closed; never raises (the cache is bypassed while
        no session is subscribed). The outage is logged once, and the recovery."""
        pause = FIRST_PAUSE
        while True:
            problem = "the connection closed"
            try:
                await self.listener(self)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever it is: bypass the cache, try again later
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            finally:
                was_up = self.ready
                self.down()
            if was_up:
                pause = FIRST_PAUSE
            if not self._said_off:
                self._said_off = True
                log.warning(
                    "read cache off: its invalidation listener is not connected; every "
                    "read goes to the backend until it is",
                    extra={"event": "store.cache_off", "reason": problem},
                )
            await asyncio.sleep(pause * random.uniform(0.5, 1.0))
            pause = min(pause * 2, LONGEST_PAUSE)

    # -- what the tables call ---------------------------------------------------------------

    async def confirmed(self, kind: str, *, ended: bool) -> None:
        """Return once the listener confirmed that this process's write, done by now, has
        been delivered to it (see the module docstring); after `ECHO_WITHIN` seconds, or
        when it fails, clear the whole cache instead. A write that `ended` a record then
        waits the listener's `grace`, whether or not this cache is up (other instances'
        are what it waits for)."""
        if self.ready:
            try:
                await finish_within(self.listener.confirm(), ECHO_WITHIN)
            except Exception as exc:
                log.warning(
                    "read cache cleared: a write's invalidation was not confirmed in time",
                    extra={
                        "event": "store.cache_echo_late",
                        "kind": kind,
                        "reason": type(exc).__name__,
                    },
                )
                self.flush()
        if ended and self.listener.grace > 0:
            await asyncio.sleep(self.listener.grace)


class CachedTable(Table[R]):
    """A table whose `get` is served from the cache while the listener is subscribed and
    fresh; every other operation, and any attribute the backend's table has beyond the
    `Table` interface, goes to the backend's table."""

    def __init__(self, inner: Table[R], cache: ReadCache) -> None:
        self.kind = inner.kind
        self.inner = inner
        self._cache = cache
        self._cached = cache._kinds[inner.kind]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def get(self, key: str) -> R | None:
        cache = self._cache
        if not cache.ready:
            cache.start()  # when the store was made outside an event loop
            return await self.inner.get(key)
        if not cache.fresh():  # the listener may have gone silent: trust nothing kept
            cache.stale_skips += 1
            return await self.inner.get(key)
        entries = self._cached.entries
        found = entries.get(key)
        if found is not None:
            if is_live(found, cache.clock.now()):
                entries.move_to_end(key)
                cache.hits += 1
                return found  # type: ignore[return-value]
            del entries[key]
        cache.misses += 1
        return await self._fill(key)

    async def _fill(self, key: str) -> R | None:
        cached, epoch, read = self._cached, self._cache.epoch, _Read()
        reads = cached.reads.setdefault(key, [])
        reads.append(read)
        try:
            record = await self.inner.get(key)
        finally:
            reads.remove(read)
            if not reads and cached.reads.get(key) is reads:
                del cached.reads[key]
        if record is not None and not read.stale and self._cache.epoch == epoch:
            cached.keep(key, record, self._cache.size)  # epoch unchanged: still subscribed
        return record

    async def _write(
        self,
        key: str,
        operation: Awaitable[T],
        changed: Callable[[T], bool],
        ended: Callable[[T], bool] = lambda _: False,
    ) -> T:
        """Run a write of `key`: dropped from the cache before and after it, and, when it
        changed a record, not returned before the listener confirmed it (and, when it
        `ended` a record or credential, the grace passed; see the module docstring)."""
        cached = self._cached
        cached.drop(key)
        try:
            result = await operation
        finally:
            cached.drop(key)
        if changed(result):
            await self._cache.confirmed(self.kind, ended=ended(result))
        return result

    async def add(self, record: R, *, audit: Audit | None = None) -> None:
        # A new key: no instance holds it (only found records are cached), nothing to wait for.
        await self._write(record.key, self.inner.add(record, audit=audit), lambda _: False)

    async def put(self, record: R, *, audit: Audit | None = None) -> None:
        await self._write(record.key, self.inner.put(record, audit=audit), lambda _: True)

    async def take(self, key: str, *, audit: Audit | None = None) -> R | None:
        taken: Callable[[R | None], bool] = lambda record: record is not None  # noqa: E731
        return await self._write(key, self.inner.take(key, audit=audit), taken, taken)

    async def update(
        self, key: str, change: Callable[[R], R], *, audit: Audit | None = None
    ) -> R | None:
        wrote = withdrew = False

        def tracked(record: R) -> R:
            nonlocal wrote, withdrew
            new = change(record)
            wrote = new is not record  # the last call decides (it may run more than once)
            withdrew = wrote and _withdraws(record, new)
            return new

        return await self._write(
            key, self.inner.update(key, tracked, audit=audit), lambda _: wrote, lambda _: withdrew
        )

    async def delete(self, key: str, *, audit: Audit | None = None) -> bool:
        return await self._write(key, self.inner.delete(key, audit=audit), bool, bool)

    def scan(self) -> AsyncIterator[R]:
        return self.inner.scan()

    async def purge_expired(self) -> int:
        """The backend's purge; the cache needs no news of it, as it never hands out an
        expired record."""
        return await self.inner.purge_expired()

    async def count(self) -> int:
        return await self.inner.count()


def _withdraws(old: Record, new: Record) -> bool:
    """An update that ends a credential, as a revocation does: a grant's access token
    replaced (voided by its revocation, or rotated by a refresh)."""
    return getattr(old, "access_hash", None) != getattr(new, "access_hash", None)


def attach(
    store: Store, clock: Clock, listen: Listen, *, size: int, timeout: float
) -> ReadCache | None:
    """Serve the store's grants and MCP session bindings from a cache kept by `listen`
    (None, and nothing changed, when `size` is 0: the cache is off). The listener starts
    now if an event loop runs, else on the first read."""
    if size <= 0:
        return None
    cache = ReadCache(clock, listen, size=size, timeout=timeout)
    store.grants = cache.wrap(store.grants)
    store.mcp_sessions = cache.wrap(store.mcp_sessions)
    with contextlib.suppress(RuntimeError):
        cache.start()
    return cache
