"""The redis backend: Redis or Valkey through redis-py's asyncio client.

One key per record, `<prefix><kind>:<key>`, holding the record's JSON (`codec.encode`), with
native expiry (`SET ... PXAT`; no expiry when `expires_at` is None). Atomicity comes from the
server: `add` is `SET NX`, `take` a small Lua script (read, check expiry, delete), `update` a
WATCH/MULTI retry loop (its change function may run more than once, as the contract allows).

Expiry is also checked against the injected clock on every read, so a record is invisible
from its `expires_at` on even if this instance's clock runs ahead of the server's; the
server's expiry is set from the same clock (`expires_at - clock.now()` from now), which is
`expires_at` itself under the system clock.

Every call is bounded by `timeout`; any connection, timeout or server error is raised as
`Unavailable` (HTTP 503 + Retry-After), never as another exception. Nothing is retried
(the pool is built without redis-py's `retry`): a command that failed may have run, and
`take` or `add` run twice would lose a code or report a false conflict. A pooled
connection that the server closed (it restarted) is found before a command is sent on it:
redis-py's pool checks each connection it hands out for unexpected data or EOF and
reconnects it, so no request fails for a stale connection, and no `health_check_interval`
PING is needed. (redis-py skips that check while its "maintenance notifications", a Redis
Enterprise feature, may be on, which they are by default: they are turned off here.)
`check` (for /readyz) pings the server, at most once a second (`Probe`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError, WatchError
from redis.maint_notifications import MaintNotificationsConfig

from oauthd.audit import Audit, resolve
from oauthd.clock import Clock, SystemClock
from oauthd.model import (
    AccountLink,
    AccountSession,
    AuthCode,
    Client,
    Consent,
    DeviceFlow,
    Grant,
    McpSession,
    PendingAuthorization,
    RegistrationGroup,
    SigningKey,
    UsedAssertion,
)
from oauthd.store import codec
from oauthd.store.audit import TrailSettings, logged, trail_settings
from oauthd.store.base import (
    Conflict,
    Probe,
    R,
    Store,
    StoreStatus,
    Table,
    Unavailable,
    finish_within,
    is_live,
)
from oauthd.store.cache import CACHE_SIZE, ReadCache, attach
from oauthd.store.redis_audit import RedisTrail
from oauthd.store.redis_counters import RedisCounters
from oauthd.store.redis_tracking import RedisInvalidations

T = TypeVar("T")

log = logging.getLogger("oauthd.store")

MGET_BATCH = 200  # records read per MGET round trip by `scan` and the purge
SCAN_COUNT = 2000  # keys asked for per SCAN round trip
# How far the server's clock may lag ours before `purge_expired` walks the records itself:
# a record the server has not expired yet is gone from it within this many seconds anyway.
CLOCK_TOLERANCE = 1.0
RETRY_AFTER = 5.0

# Atomically: the value if it is live at ARGV[1] (deleting it), else nil (leaving it).
_TAKE = """
local v = redis.call('GET', KEYS[1])
if not v then return false end
local e = cjson.decode(v)['expires_at']
if e ~= cjson.null and e <= tonumber(ARGV[1]) then return false end
redis.call('DEL', KEYS[1])
return v
"""

# Atomically: delete KEYS[1] if it still holds ARGV[1]; 1 if deleted.
_DELETE_IF_SAME = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _escape_glob(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisTable(Table[R]):
    def __init__(self, kind: str, store: RedisStore) -> None:
        self.kind = kind
        self._store = store
        self._prefix = f"{store.prefix}{kind}:"
        self._pattern = _escape_glob(self._prefix) + "*"

    # -- helpers --------------------------------------------------------------------------

    def key_name(self, key: str) -> str:
        return self._prefix + key

    def decode(self, value: bytes | str) -> R:
        record: R = codec.decode(self.kind, orjson.loads(value))  # type: ignore[assignment]
        return record

    def live(self, record: R | None) -> R | None:
        if record is None or not is_live(record, self._store.clock.now()):
            return None
        return record

    def expiry(self, record: R) -> dict[str, Any]:
        """The SET options for the record's native expiry (none when it never expires)."""
        if record.expires_at is None:
            return {}
        remaining = record.expires_at - self._store.clock.now()
        return {"pxat": int((time.time() + max(remaining, 0.001)) * 1000)}

    # -- the contract ---------------------------------------------------------------------

    async def get(self, key: str) -> R | None:
        value = await self._store.call(self._store.client.get(self.key_name(key)))
        return None if value is None else self.live(self.decode(value))

    async def add(self, record: R, *, audit: Audit | None = None) -> None:
        event = resolve(audit, record)
        if event is not None and self._store.audit.enabled:
            await self._store.audit.add(self, record, event)  # with its XADD (redis_audit.py)
            return
        name, value = self.key_name(record.key), codec.encode(record)
        client = self._store.client

        async def add() -> None:
            if await client.set(name, value, nx=True, **self.expiry(record)):
                return
            # Present: maybe only expired by our clock, not yet by the server's.
            async with client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(name)
                        old = await pipe.get(name)
                        if old is not None and self.live(self.decode(old)) is not None:
                            raise Conflict(f"{self.kind}: key already present")
                        pipe.multi()  # type: ignore[no-untyped-call]
                        pipe.set(name, value, **self.expiry(record))
                        await pipe.execute()
                        return
                    except WatchError:
                        continue

        await self._store.call(add())
        self._store.writes += 1
        logged(event)

    async def put(self, record: R, *, audit: Audit | None = None) -> None:
        event = resolve(audit, record)
        if event is not None and self._store.audit.enabled:
            await self._store.audit.put(self, record, event)
            return
        name, value = self.key_name(record.key), codec.encode(record)
        await self._store.call(self._store.client.set(name, value, **self.expiry(record)))
        self._store.writes += 1
        logged(event)

    async def put_many(self, records: Sequence[R]) -> None:
        client = self._store.client

        async def put_all() -> None:
            async with client.pipeline(transaction=False) as pipe:
                for record in records:
                    pipe.set(self.key_name(record.key), codec.encode(record), **self.expiry(record))
                await pipe.execute()

        await self._store.call(put_all())
        self._store.writes += len(records)

    async def take(self, key: str, *, audit: Audit | None = None) -> R | None:
        if audit is not None and self._store.audit.enabled:
            return await self._store.audit.take(self, key, audit)
        now = repr(self._store.clock.now())
        value = await self._store.call(
            self._store.take_script(keys=[self.key_name(key)], args=[now])
        )
        if value is None:
            return None
        self._store.writes += 1
        record = self.decode(value)
        logged(resolve(audit, record))
        return record

    async def update(
        self, key: str, change: Callable[[R], R], *, audit: Audit | None = None
    ) -> R | None:
        if audit is not None and self._store.audit.enabled:
            return await self._store.audit.update(self, key, change, audit)
        name = self.key_name(key)
        client = self._store.client

        async def update() -> R | None:
            async with client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(name)
                        value = await pipe.get(name)
                        record = None if value is None else self.live(self.decode(value))
                        if record is None:
                            return None
                        new = change(record)
                        if new is record:
                            return record
                        if new.key != key:
                            raise ValueError(f"{self.kind}: update must keep the key")
                        pipe.multi()  # type: ignore[no-untyped-call]
                        pipe.set(name, codec.encode(new), **self.expiry(new))
                        await pipe.execute()
                        self._store.writes += 1
                        return new
                    except WatchError:
                        continue

        before = self._store.writes
        result = await self._store.call(update())
        if result is not None and self._store.writes != before:
            logged(resolve(audit, result))
        return result

    async def delete(self, key: str, *, audit: Audit | None = None) -> bool:
        if audit is not None and self._store.audit.enabled:
            return await self._store.audit.delete(self, key, audit)
        value = await self._store.call(self._store.client.getdel(self.key_name(key)))
        if value is None:
            return False
        self._store.writes += 1
        record = self.live(self.decode(value))
        if record is not None:
            logged(resolve(audit, record))
        return record is not None

    async def _keys(self) -> AsyncIterator[list[bytes | str]]:
        """The table's keys, a batch per SCAN round trip, each key once."""
        seen: set[bytes | str] = set()
        cursor: int = 0
        while True:
            cursor, batch = await self._store.call(
                self._store.client.scan(cursor, match=self._pattern, count=SCAN_COUNT)
            )
            fresh = [k for k in batch if k not in seen]  # SCAN may return a key twice
            seen.update(fresh)
            if fresh:
                yield fresh
            if cursor == 0:
                return

    async def _values(self) -> AsyncIterator[list[tuple[bytes | str, bytes | str]]]:
        """(key, value) of the table's records, an MGET of at most MGET_BATCH at a time
        (so a consumer's turn stays short); vanished keys skipped. The SCAN asks for more
        keys a round trip: the keyspace holds every kind, and a small kind among a million
        grants would take thousands of round trips."""
        async for keys in self._keys():
            for start in range(0, len(keys), MGET_BATCH):
                batch = keys[start : start + MGET_BATCH]
                values = await self._store.call(self._store.client.mget(batch))
                found = [(k, v) for k, v in zip(batch, values, strict=True) if v is not None]
                if found:
                    yield found

    async def count(self) -> int:
        total = 0
        async for keys in self._keys():
            total += len(keys)
        return total

    async def scan(self) -> AsyncIterator[R]:
        async for batch in self._values():
            records: list[R] = codec.decode_many(  # type: ignore[assignment]
                self.kind, [orjson.loads(v) for _, v in batch]
            )
            for record in records:
                if self.live(record) is not None:
                    yield record

    async def purge_expired(self) -> int:
        """Delete the records expired by our clock that the server has not expired yet
        (only when the clocks disagree: normally the server has removed them already)."""
        removed = 0
        async for batch in self._values():
            for name, value in batch:
                if self.live(self.decode(value)) is None:
                    removed += await self._store.call(
                        self._store.delete_if_same_script(keys=[name], args=[value])
                    )
        return removed


class RedisStore(Store):
    def __init__(
        self,
        clock: Clock,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "oauthd:",
        pool_size: int = 20,
        timeout: float = 2.0,
        cache_size: int = CACHE_SIZE,
        audit: TrailSettings | None = None,
    ) -> None:
        self.clock = clock
        self.prefix = prefix
        self.timeout = timeout
        self.writes = 0  # how many writes this store made (for tests and metrics)
        self._pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=pool_size,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )
        self.client = aioredis.Redis(connection_pool=self._pool)
        self.take_script = self.client.register_script(_TAKE)
        self.delete_if_same_script = self.client.register_script(_DELETE_IF_SAME)
        self.audit: RedisTrail = RedisTrail(self, audit or trail_settings(None))  # redis_audit.py
        self.audit.start()  # retention, if an event loop runs (else at the first write)
        self._error: str | None = None
        self._closed = False
        self._server_kept_time = True  # at the last purge (a change is logged)
        self._probe = Probe(self.ping)
        self.clients = RedisTable[Client](Client.KIND, self)
        self.consents = RedisTable[Consent](Consent.KIND, self)
        self.pending = RedisTable[PendingAuthorization](PendingAuthorization.KIND, self)
        self.codes = RedisTable[AuthCode](AuthCode.KIND, self)
        self.grants = RedisTable[Grant](Grant.KIND, self)
        self.devices = RedisTable[DeviceFlow](DeviceFlow.KIND, self)
        self.mcp_sessions = RedisTable[McpSession](McpSession.KIND, self)
        self.registration_groups = RedisTable[RegistrationGroup](RegistrationGroup.KIND, self)
        self.account_sessions = RedisTable[AccountSession](AccountSession.KIND, self)
        self.signing_keys = RedisTable[SigningKey](SigningKey.KIND, self)
        self.used_assertions = RedisTable[UsedAssertion](UsedAssertion.KIND, self)
        self.account_links = RedisTable[AccountLink](AccountLink.KIND, self)
        self.counters = RedisCounters(self)  # shared by every instance (redis_counters.py)
        listen = RedisInvalidations(url, prefix, (Grant.KIND, McpSession.KIND), timeout)
        self.read_cache: ReadCache | None = attach(
            self, clock, listen, size=cache_size, timeout=timeout
        )  # grants and MCP sessions read from memory (store/cache.py)

    async def call(self, operation: Awaitable[T]) -> T:
        """Await one backend operation within the timeout (`finish_within`: not a moment
        longer, even when the server is silent); trouble becomes `Unavailable`."""
        try:
            result = await finish_within(operation, self.timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            reason = f"redis: {type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if isinstance(exc, TimeoutError):
                reason = f"redis: no answer within {self.timeout:g}s"
            self._error = reason
            raise Unavailable(reason, RETRY_AFTER) from None
        self._error = None
        return result

    async def ping(self) -> None:
        await self.call(self.client.ping())

    async def _server_time(self) -> tuple[int, int] | None:
        try:
            seconds, micros = await self.client.time()
        except ResponseError:
            return None
        return int(seconds), int(micros)

    async def census(self) -> dict[str, int]:
        """Records by kind from one SCAN pass over the prefix (each table's `count` would
        walk the whole keyspace once per kind). Unlike `count`, it keeps no set of the keys
        seen, so at a million records it holds nothing: a key the server moves while it
        resizes its hash table may be counted twice, which monitoring can live with."""
        counts = {table.kind: 0 for table in self.tables()}
        by_name = {kind.encode(): kind for kind in counts}
        start = len(self.prefix.encode())
        pattern = _escape_glob(self.prefix) + "*"
        cursor: int = 0
        while True:
            cursor, batch = await self.call(
                self.client.scan(cursor, match=pattern, count=SCAN_COUNT)
            )
            for name in cast(list[bytes], batch):  # the client does not decode responses
                kind = by_name.get(name[start:].partition(b":")[0])
                if kind is not None:
                    counts[kind] += 1
            if cursor == 0:
                return counts

    async def purge_expired(self) -> int:
        """The server expires every record itself, at the time our clock gave it (`PXAT`),
        so walking all the records (a SCAN and an MGET per table) is only worth it when our
        clock and the server's disagree: an injected clock (not the system's), or a server
        clock lagging ours by more than CLOCK_TOLERANCE. Every minute at a million grants,
        the walk would cost more than the rest of the daemon."""
        if isinstance(self.clock, SystemClock) and await self._server_keeps_time():
            return 0
        return await super().purge_expired()

    async def _server_keeps_time(self) -> bool:
        before = time.time()
        reply = await self.call(self._server_time())
        if reply is None:
            return False  # TIME refused (an ACL, a proxy): walk, as without the check
        seconds, micros = reply
        lag = (before + time.time()) / 2 - (seconds + micros / 1e6)
        keeps = lag <= CLOCK_TOLERANCE
        if keeps != self._server_kept_time:
            self._server_kept_time = keeps
            level = logging.INFO if keeps else logging.WARNING
            log.log(level, "redis server clock lag", extra={"event": "redis.clock", "lag": lag})
        return keeps

    def status(self) -> StoreStatus:
        if self._closed:
            return StoreStatus(backend="redis", healthy=False, detail="closed")
        return StoreStatus(backend="redis", healthy=self._error is None, detail=self._error)

    async def check(self) -> StoreStatus:
        if self._closed:
            return self.status()
        problem = await self._probe.problem()
        return StoreStatus(backend="redis", healthy=problem is None, detail=problem)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.audit.close()
        if self.read_cache is not None:
            await self.read_cache.close()
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(self.client.aclose(close_connection_pool=True), self.timeout)
