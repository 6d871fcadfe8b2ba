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
  The listener reconnects by itself, with backoff; a connection that went silent is found
  by a heartbeat (every `HEARTBEAT` seconds, answered within the store's timeout).
- This process's own writes drop the key at once, before and after the write.
- A write of this process that changed a cached record returns only once the listener has
  heard that key's invalidation (at most `ECHO_WITHIN` seconds; past that the whole cache
  is cleared). That closes the window between instances: the backend sends an
  invalidation to every listener at the same moment (Redis writes the BCAST messages of a
  command to all tracking connections in one step, before the command's reply; PostgreSQL
  delivers a NOTIFY to every listener at commit), so when instance A has its own copy,
  instance B's is already in B's socket, ahead of any request that reaches B after A
  answered; B's event loop handles readable sockets in the order they became readable.
  A client told by A that a token is revoked finds it refused by B.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from oauthd.clock import Clock
from oauthd.model import Record
from oauthd.store.base import R, Store, Table, is_live

log = logging.getLogger("oauthd.store")

T = TypeVar("T")

CACHE_SIZE = 10_000  # records kept per kind (storage.cache_size)
ECHO_WITHIN = 1.0  # seconds a write waits for its own invalidation
HEARTBEAT = 1.0  # seconds between the listener's liveness checks
FIRST_PAUSE, LONGEST_PAUSE = 0.05, 5.0  # between reconnects (doubling, with jitter)

# One listener session: connect, subscribe, call `cache.up()`, then deliver invalidations
# (`cache.invalidate`, `cache.flush`) until the connection fails (raise) or the task is
# cancelled. It closes its connection before it returns.
Listen = Callable[["ReadCache"], Awaitable[None]]


class _Read:
    """A read in flight; `stale` once its key was invalidated meanwhile."""

    __slots__ = ("stale",)

    def __init__(self) -> None:
        self.stale = False


class _Kind:
    """The cache of one kind: entries (least recently used first), reads in flight, and
    the writes waiting for their invalidation, by key."""

    __slots__ = ("echoes", "entries", "kind", "reads")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.entries: OrderedDict[str, Record] = OrderedDict()
        self.reads: dict[str, list[_Read]] = {}
        self.echoes: dict[str, list[asyncio.Future[None]]] = {}

    def keep(self, key: str, record: Record, size: int) -> None:
        self.entries[key] = record
        self.entries.move_to_end(key)
        while len(self.entries) > size:
            self.entries.popitem(last=False)

    def drop(self, key: str) -> None:
        self.entries.pop(key, None)
        for read in self.reads.get(key, ()):
            read.stale = True

    def heard(self, key: str) -> None:
        self.drop(key)
        for echo in self.echoes.pop(key, ()):
            if not echo.done():
                echo.set_result(None)

    def clear(self) -> None:
        self.entries.clear()
        for reads in self.reads.values():
            for read in reads:
                read.stale = True
        echoes, self.echoes = self.echoes, {}
        for waiting in echoes.values():
            for echo in waiting:
                if not echo.done():
                    echo.set_result(None)


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
        self.epoch = 0  # bumped by every flush: a read that spans one keeps nothing
        self.hits = 0
        self.misses = 0  # reads that went to the backend while ready
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

    # -- what the listener calls ----------------------------------------------------------

    def up(self) -> None:
        """Subscribed: from now on every change is heard, so the cache may fill."""
        self.flush()
        self.ready = True
        if self._said_off:
            self._said_off = False
            log.info("read cache on again", extra={"event": "store.cache_on"})

    def down(self) -> None:
        self.ready = False
        self.flush()

    def invalidate(self, kind: str, key: str) -> None:
        cached = self._kinds.get(kind)
        if cached is not None:
            cached.heard(key)

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

    def expect(self, cached: _Kind, key: str) -> asyncio.Future[None] | None:
        """A future set when `key`'s next invalidation (or any flush) is heard; None when
        the listener is not subscribed (nothing is cached, and nothing would be heard)."""
        if not self.ready:
            return None
        echo: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        cached.echoes.setdefault(key, []).append(echo)
        return echo

    async def echoed(self, cached: _Kind, key: str, echo: asyncio.Future[None] | None) -> None:
        """Return once `echo` is set; after `ECHO_WITHIN` seconds clear the whole cache."""
        if echo is None or echo.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(echo), ECHO_WITHIN)
        except TimeoutError:
            log.warning(
                "read cache cleared: a write's invalidation did not come back in time",
                extra={"event": "store.cache_echo_late", "kind": cached.kind},
            )
            self.flush()
        finally:
            self.forget(cached, key, echo)

    @staticmethod
    def forget(cached: _Kind, key: str, echo: asyncio.Future[None] | None) -> None:
        waiting = cached.echoes.get(key)
        if echo is not None and waiting is not None and echo in waiting:
            waiting.remove(echo)
            if not waiting:
                del cached.echoes[key]


class CachedTable(Table[R]):
    """A table whose `get` is served from the cache while the listener is subscribed; every
    other operation, and any attribute the backend's table has beyond the `Table`
    interface (e.g. `purge_expired`), goes to the backend's table."""

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

    async def _write(self, key: str, operation: Awaitable[T], changed: Callable[[T], bool]) -> T:
        """Run a write of `key`: dropped from the cache before and after it, and, when it
        changed a record, not returned before the listener heard it (see the module
        docstring)."""
        cache, cached = self._cache, self._cached
        echo = cache.expect(cached, key)
        cached.drop(key)
        try:
            result = await operation
        except BaseException:
            cache.forget(cached, key, echo)
            raise
        finally:
            cached.drop(key)
        if changed(result):
            await cache.echoed(cached, key, echo)
        else:
            cache.forget(cached, key, echo)
        return result

    async def add(self, record: R) -> None:
        # A new key: no instance holds it (only found records are cached), nothing to wait for.
        await self._write(record.key, self.inner.add(record), lambda _: False)

    async def put(self, record: R) -> None:
        await self._write(record.key, self.inner.put(record), lambda _: True)

    async def take(self, key: str) -> R | None:
        return await self._write(key, self.inner.take(key), lambda taken: taken is not None)

    async def update(self, key: str, change: Callable[[R], R]) -> R | None:
        wrote = False

        def tracked(record: R) -> R:
            nonlocal wrote
            new = change(record)
            wrote = new is not record  # the last call decides (it may run more than once)
            return new

        return await self._write(key, self.inner.update(key, tracked), lambda _: wrote)

    async def delete(self, key: str) -> bool:
        return await self._write(key, self.inner.delete(key), bool)

    def scan(self) -> AsyncIterator[R]:
        return self.inner.scan()

    async def count(self) -> int:
        return await self.inner.count()


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
