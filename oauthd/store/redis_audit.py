"""The redis backend's audit trail: one stream per chain, `<prefix>audit:<chain>`, each
entry one record (field `record`: the sealed JSON line), with the server's ms ids.

An audited write carries its XADD in the change's own atomic step: `add` and `put` one
Lua script each (the live-key check, SET, XADD), `take`, `update` and `delete` a
WATCH/MULTI loop (read the record, compute the event from it, then MULTI: the change and
the XADD). Every step first checks, on the server, that the chain's head is the one the
record was sealed after (`<stream>:head`, the last record's hash, moved in the same step),
so that a second instance with the same chain name, or a write that timed out and landed
late, is refused whole (`StaleHead`: the head is read again) and never forks the chain.
A write without `audit=` (or with `[audit] enabled = false`) is the unaudited path of
`redis.py`, as cheap as before. See `oauthd.store.audit` for how the
chain is sealed and kept whole, and docs/scaling.md for the cost.

`RedisAuditReader` reads the streams offline (`oauthd audit verify|export`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError, WatchError
from redis.maint_notifications import MaintNotificationsConfig

from oauthd.audit import GENESIS, Anchor, Audit, AuditEvent, ChainHead, head_of, resolve
from oauthd.clock import Clock
from oauthd.store import codec
from oauthd.store.audit import Sealing, SharedTrail, StaleHead, TrailSettings
from oauthd.store.base import Conflict, R, Unavailable

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline

T = TypeVar("T")


class RedisStore(Protocol):
    """What the trail uses of `oauthd.store.redis.RedisStore`."""

    clock: Clock
    prefix: str
    client: aioredis.Redis
    writes: int

    async def call(self, operation: Awaitable[T]) -> T: ...


class RedisTable(Protocol[R]):
    """What the trail uses of `oauthd.store.redis.RedisTable`."""

    kind: str

    def key_name(self, key: str) -> str: ...

    def decode(self, value: bytes | str) -> R: ...

    def live(self, record: R | None) -> R | None: ...

    def expiry(self, record: R) -> dict[str, Any]: ...


FIELD = "record"  # the stream entry's one field
STALE = -1  # a script's answer: the chain's head is not the one the record was sealed after
READ_BATCH = 1000  # entries per XRANGE of the reader

HEAD_SUFFIX = ":head"  # beside each stream: its last record's hash (a string key)
STREAM_SCAN_COUNT = 2000  # keys per SCAN round trip when looking for the audit streams

# Is the chain's head (the last record's hash) ARGV[prev]? The stream's last entry says;
# the head key (moved with each record) answers the common case without decoding it, and
# a key out of step (a stream written before there was one, or deleted by hand) falls back
# to the stream. An empty chain's head is GENESIS.
_HEAD_IS = """
local function head_is(stream, head_key, prev)
  if redis.call('GET', head_key) == prev then return true end
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if #last == 0 then return prev == '{genesis}' end
  return cjson.decode(last[1][2][2])['hash'] == prev
end
local function append(stream, head_key, line, hash)
  redis.call('XADD', stream, '*', 'record', line)
  redis.call('SET', head_key, hash)
end
""".replace("{genesis}", GENESIS)

# KEYS: the chain's stream, its head key; ARGV: prev, hash, line. 1 appended, -1 stale.
_APPEND = (
    _HEAD_IS
    + """
if not head_is(KEYS[1], KEYS[2], ARGV[1]) then return -1 end
append(KEYS[1], KEYS[2], ARGV[3], ARGV[2])
return 1
"""
)

# KEYS: the record's key, the stream, its head key; ARGV: prev, hash, line, the record's
# JSON, its PXAT ('' = no expiry), now (our clock; `add` only: a live record refuses).
# 1 written (with its record), 0 a live record holds the key (nothing written), -1 stale.
_ADD = (
    _HEAD_IS
    + """
if not head_is(KEYS[2], KEYS[3], ARGV[1]) then return -1 end
if ARGV[6] ~= '' then
  local v = redis.call('GET', KEYS[1])
  if v then
    local e = cjson.decode(v)['expires_at']
    if e == cjson.null or e > tonumber(ARGV[6]) then return 0 end
  end
end
if ARGV[5] == '' then
  redis.call('SET', KEYS[1], ARGV[4])
else
  redis.call('SET', KEYS[1], ARGV[4], 'PXAT', ARGV[5])
end
append(KEYS[2], KEYS[3], ARGV[3], ARGV[2])
return 1
"""
)


def _escape_glob(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


async def _scan_names(
    client: aioredis.Redis,
    pattern: str,
    key_type: str,
    call: Callable[[Awaitable[Any]], Awaitable[Any]],
) -> list[str]:
    """The keys matching `pattern` of `key_type`. SCAN walks the whole keyspace (a
    million grants' keys too): each round trip asks for STREAM_SCAN_COUNT keys and has the
    timeout of its own (`call`), not the walk."""
    names: list[str] = []
    cursor: int = 0
    while True:
        cursor, batch = await call(
            client.scan(cursor, match=pattern, count=STREAM_SCAN_COUNT, _type=key_type)
        )
        names.extend(name.decode() if isinstance(name, bytes) else str(name) for name in batch)
        if cursor == 0:
            return names


async def chain_streams(
    client: aioredis.Redis, prefix: str, call: Callable[[Awaitable[Any]], Awaitable[Any]]
) -> dict[str, str]:
    """The audit streams under `prefix`: chain name -> stream key."""
    start = stream_prefix(prefix)
    keys = await _scan_names(client, _escape_glob(start) + "*", "STREAM", call)
    return {key[len(start) :]: key for key in keys}


async def _chain_heads(client: aioredis.Redis, prefix: str) -> set[str]:
    """The chains whose head key is under `prefix` (offline: the reader's own timeouts)."""
    start = stream_prefix(prefix)
    pattern = _escape_glob(start) + "*" + _escape_glob(HEAD_SUFFIX)
    keys = await _scan_names(client, pattern, "STRING", _as_is)
    return {key[len(start) : -len(HEAD_SUFFIX)] for key in keys}


async def _as_is(operation: Awaitable[Any]) -> Any:
    return await operation  # the reader's client has socket timeouts of its own


def stream_prefix(prefix: str) -> str:
    return f"{prefix}audit:"


def _id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


@dataclass(slots=True)
class Step:
    """What a WATCHed write does with the value it read: its result, and (unless
    `change` is None: nothing to write) the change to queue and the event of it."""

    result: Any
    change: Callable[[Pipeline], Any] | None = None
    event: AuditEvent | None = None


class RedisTrail(SharedTrail):
    def __init__(self, store: RedisStore, settings: TrailSettings) -> None:
        super().__init__(settings, store.clock)
        self._store = store
        self.stream = stream_prefix(store.prefix) + settings.chain
        self.head_key = self.stream + HEAD_SUFFIX
        self._add_script = store.client.register_script(_ADD)
        self._append_script = store.client.register_script(_APPEND)

    async def read_head(self) -> ChainHead:
        entries: Any = await self._store.call(self._store.client.xrevrange(self.stream, count=1))
        return head_of(entries[0][1][FIELD.encode()]) if entries else ChainHead()

    async def append_record(self, sealing: Sealing, line: bytes) -> None:
        keys = [self.stream, self.head_key]
        args: list[str | bytes] = [sealing.prev, sealing.hash, line]
        if await self._store.call(self._append_script(keys=keys, args=args)) == STALE:
            raise StaleHead("the audit chain's head moved")

    async def expire(self, now: float | None = None) -> int:
        """XTRIM MINID by the streams' ms ids (the server's time; `now` seconds, by
        default the system clock's), keeping each stream's last entry."""
        cutoff = (int(((time.time() if now is None else now) - self.retention) * 1000), 0)
        client, removed = self._store.client, 0
        streams = await chain_streams(client, self._store.prefix, self._store.call)
        for stream in streams.values():
            last = await self._store.call(client.xrevrange(stream, count=1))
            if not last:
                continue
            ms, seq = min(cutoff, _id(last[0][0] or b"0-0"))
            removed += await self._store.call(
                client.xtrim(stream, minid=f"{ms}-{seq}", approximate=False)
            )
        return removed

    # -- audited writes (the table checked `enabled` and that there is an event) ----------

    async def add(self, table: RedisTable[R], record: R, event: AuditEvent) -> None:
        await self.write(lambda sealing: self._set(table, record, event, sealing, only_new=True))

    async def put(self, table: RedisTable[R], record: R, event: AuditEvent) -> None:
        await self.write(lambda sealing: self._set(table, record, event, sealing, only_new=False))

    async def _set(
        self, table: RedisTable[R], record: R, event: AuditEvent, sealing: Sealing, only_new: bool
    ) -> None:
        """SET the record with its record of `event` in one script; `only_new`: refused
        (`Conflict`) while a live record holds the key."""
        line = sealing.seal(event)
        pxat = table.expiry(record).get("pxat", "")
        now = repr(self.clock.now()) if only_new else ""
        keys = [table.key_name(record.key), self.stream, self.head_key]
        args: list[str | bytes] = [sealing.prev, sealing.hash, line, codec.encode(record)]
        args += [str(pxat), now]
        written = await self._store.call(self._add_script(keys=keys, args=args))
        if written == STALE:
            raise StaleHead("the audit chain's head moved")
        if not written:
            raise Conflict(f"{table.kind}: key already present")
        self._store.writes += 1

    async def take(self, table: RedisTable[R], key: str, audit: Audit) -> R | None:
        name = table.key_name(key)

        def plan(value: bytes | str | None) -> Step:
            record = None if value is None else table.live(table.decode(value))
            if record is None:
                return Step(None)
            return Step(record, lambda pipe: pipe.delete(name), resolve(audit, record))

        result: R | None = await self.write(lambda sealing: self._watched(name, plan, sealing))
        return result

    async def update(
        self, table: RedisTable[R], key: str, change: Callable[[R], R], audit: Audit
    ) -> R | None:
        name = table.key_name(key)

        def plan(value: bytes | str | None) -> Step:
            record = None if value is None else table.live(table.decode(value))
            if record is None:
                return Step(None)
            new = change(record)
            if new is record:
                return Step(record)
            if new.key != key:
                raise ValueError(f"{table.kind}: update must keep the key")
            encoded, expiry = codec.encode(new), table.expiry(new)
            return Step(new, lambda pipe: pipe.set(name, encoded, **expiry), resolve(audit, new))

        result: R | None = await self.write(lambda sealing: self._watched(name, plan, sealing))
        return result

    async def delete(self, table: RedisTable[R], key: str, audit: Audit) -> bool:
        name = table.key_name(key)

        def plan(value: bytes | str | None) -> Step:
            if value is None:
                return Step(False)
            record = table.live(table.decode(value))
            if record is None:  # expired by our clock: removed, no record of it
                return Step(False, lambda pipe: pipe.delete(name))
            return Step(True, lambda pipe: pipe.delete(name), resolve(audit, record))

        return bool(await self.write(lambda sealing: self._watched(name, plan, sealing)))

    async def _watched(
        self, name: str, plan: Callable[[bytes | str | None], Step], sealing: Sealing
    ) -> Any:
        """WATCH `name` and the chain's head, read both, and apply the plan's change with
        its record in one MULTI/EXEC; again from the read if either changed meanwhile
        (`StaleHead` if the head was not ours to begin with)."""

        async def loop() -> Any:
            async with self._store.client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(name, self.head_key)
                        value, head = await pipe.mget(name, self.head_key)
                        step = plan(value)
                        if step.change is None:
                            sealing.undo()
                            return step.result
                        if step.event is not None and not await self._head_is_ours(head):
                            raise StaleHead("the audit chain's head moved")
                        pipe.multi()  # type: ignore[no-untyped-call]
                        step.change(pipe)
                        if step.event is None:
                            sealing.undo()
                        else:
                            pipe.xadd(self.stream, {FIELD: sealing.seal(step.event)})
                            pipe.set(self.head_key, sealing.hash)
                        await pipe.execute()
                        self._store.writes += 1
                        return step.result
                    except WatchError:  # the record changed: again, from the head we had
                        sealing.undo()
                        continue

        return await self._store.call(loop())

    async def _head_is_ours(self, head: bytes | str | None) -> bool:
        """Is the server's head the one this instance seals after? The head key's value
        (`head`) answers the common case; otherwise the stream's last entry decides, as in
        the scripts."""
        ours = self.chain.head.hash
        if head is not None and (head.decode() if isinstance(head, bytes) else head) == ours:
            return True
        return (await self.read_head()).hash == ours


class RedisAuditReader:
    """The audit streams of one prefix, read offline (`oauthd.audit.AuditReader`)."""

    def __init__(self, url: str, prefix: str, timeout: float = 5.0) -> None:
        self.prefix = prefix
        self.timeout = timeout
        self.client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )

    async def chains(self) -> list[str]:
        """The chains with a stream, and those with only a head key left (a stream deleted
        whole: `verify` reports its records cut)."""
        try:
            streams = await chain_streams(self.client, self.prefix, _as_is)
            heads = await _chain_heads(self.client, self.prefix)
        except (RedisError, OSError) as exc:
            raise Unavailable(f"redis: {exc}") from None
        return sorted(set(streams) | heads)

    async def lines(self, chain: str) -> AsyncIterator[tuple[str, bytes]]:
        stream, start = stream_prefix(self.prefix) + chain, "-"
        while True:
            try:
                batch: Any = await self.client.xrange(stream, min=start, count=READ_BATCH)
            except (RedisError, OSError) as exc:
                raise Unavailable(f"redis: {exc}") from None
            for entry_id, fields in batch:
                ident = entry_id.decode()
                yield f"stream entry {ident}", fields[FIELD.encode()]
            if len(batch) < READ_BATCH:
                return
            start = "(" + batch[-1][0].decode()

    async def anchor(self, chain: str) -> Anchor | None:
        """The head key beside the stream: the hash of the chain's last record, moved in
        the same script as each record (so a record cut from the stream's end is found)."""
        key = stream_prefix(self.prefix) + chain + HEAD_SUFFIX
        try:
            head = await self.client.get(key)
        except (RedisError, OSError) as exc:
            raise Unavailable(f"redis: {exc}") from None
        if head is None:
            return None
        return Anchor(head.decode() if isinstance(head, bytes) else str(head), None, key)

    async def close(self) -> None:
        await self.client.aclose()
