"""The memory backend: tables in process memory. Also the heart of the file backend, which
wraps these tables with a `ChangeSink` that journals every change."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from oauthd.audit import Audit, AuditEvent, AuditTrail, MemoryTrail, resolve
from oauthd.clock import Clock
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
    Record,
    RegistrationGroup,
    SigningKey,
    UsedAssertion,
)
from oauthd.store.base import Conflict, R, Store, StoreStatus, Table, is_live
from oauthd.store.counters import MemoryCounters
from oauthd.store.records import RecordMap
from oauthd.store.rows import LAYOUTS

PURGE_CHUNK = 2000
SCAN_CHUNK = 1000  # records looked at per event-loop turn by `scan`


class ChangeSink(Protocol):
    """Where a table reports its changes (the file backend's journal)."""

    def check_writable(self) -> None:
        """Raise `Unavailable` if a change could not be made durable now."""

    async def room(self) -> None:
        """Return once an audit record may be written (a bounded buffer); called before a
        write with `audit=` changes anything."""

    async def changed(
        self,
        kind: str,
        key: str,
        record: Record | None,
        previous: Record | None,
        event: AuditEvent | None = None,
    ) -> None:
        """The change (`key` held `previous`, now `record`; None: nothing) is applied in
        memory; return once it and its audit `event` are durable. If it cannot be made
        durable, put `previous` back (`MemoryTable.restore`) before raising
        `Unavailable`: a request answered with an error leaves the state as it was (#11)."""


class NullSink:
    """Nothing to make durable; audit events go to the memory trail."""

    def __init__(self, trail: MemoryTrail) -> None:
        self.trail = trail

    def check_writable(self) -> None:
        return None

    async def room(self) -> None:
        return None

    async def changed(
        self,
        kind: str,
        key: str,
        record: Record | None,
        previous: Record | None,
        event: AuditEvent | None = None,
    ) -> None:
        if event is not None:
            self.trail.note(event)


def _live(record: R | None, now: float) -> R | None:
    return record if record is not None and is_live(record, now) else None


class MemoryTable(Table[R]):
    """Every mutation happens in one synchronous step (no await between the check and the
    change), which is what makes `take` and `update` atomic here."""

    def __init__(self, kind: str, clock: Clock, sink: ChangeSink) -> None:
        self.kind = kind
        layout = LAYOUTS[kind]
        self.records: RecordMap[R] = RecordMap(layout.pack, layout.unpack)
        self._clock = clock
        self._sink = sink

    def _now_live(self, key: str) -> R | None:
        return _live(self.records.get(key), self._clock.now())

    def restore(self, key: str, previous: R | None) -> None:
        """Put back what `key` held before a change that could not be made durable (even
        an expired record)."""
        if previous is None:
            self.records.pop(key)
        else:
            self.records.set(key, previous)

    async def get(self, key: str) -> R | None:
        return self._now_live(key)

    async def add(self, record: R, *, audit: Audit | None = None) -> None:
        if audit is not None:
            await self._sink.room()
        self._sink.check_writable()
        previous = self.records.get(record.key)
        if _live(previous, self._clock.now()) is not None:
            raise Conflict(f"{self.kind}: key already present")
        event = resolve(audit, record)
        self.records.set(record.key, record)
        await self._sink.changed(self.kind, record.key, record, previous, event)

    async def put(self, record: R, *, audit: Audit | None = None) -> None:
        if audit is not None:
            await self._sink.room()
        self._sink.check_writable()
        event = resolve(audit, record)
        previous = self.records.get(record.key)
        self.records.set(record.key, record)
        await self._sink.changed(self.kind, record.key, record, previous, event)

    async def take(self, key: str, *, audit: Audit | None = None) -> R | None:
        if audit is not None:
            await self._sink.room()
        self._sink.check_writable()
        record = self._now_live(key)
        if record is None:
            return None
        event = resolve(audit, record)
        self.records.pop(key)
        await self._sink.changed(self.kind, key, None, record, event)
        return record

    async def update(
        self, key: str, change: Callable[[R], R], *, audit: Audit | None = None
    ) -> R | None:
        if audit is not None:
            await self._sink.room()
        self._sink.check_writable()
        record = self._now_live(key)
        if record is None:
            return None
        new = change(record)
        if new is record:
            return record
        if new.key != key:
            raise ValueError(f"{self.kind}: update must keep the key")
        event = resolve(audit, new)
        self.records.set(key, new)
        await self._sink.changed(self.kind, key, new, record, event)
        return new

    async def delete(self, key: str, *, audit: Audit | None = None) -> bool:
        if audit is not None:
            await self._sink.room()
        self._sink.check_writable()
        record = self.records.get(key)
        if record is None:
            return False
        event = resolve(audit, record) if _live(record, self._clock.now()) else None
        self.records.pop(key)
        await self._sink.changed(self.kind, key, None, record, event)
        return _live(record, self._clock.now()) is not None

    async def count(self) -> int:
        return len(self.records)

    async def scan(self) -> AsyncIterator[R]:
        """The live records of the moment the scan froze the map. They are gathered first
        (a chunk per turn) and handed out after the thaw, so that a slow or abandoned
        consumer never holds the map frozen (which would hold up the snapshot writer)."""
        now = self._clock.now()
        found: list[R] = []
        async with self.records.frozen() as values:
            while chunk := list(itertools.islice(values, SCAN_CHUNK)):
                found.extend(r for r in chunk if _live(r, now) is not None)
                await asyncio.sleep(0)
        for start in range(0, len(found), SCAN_CHUNK):
            now = self._clock.now()  # nor one that expired since
            for record in found[start : start + SCAN_CHUNK]:
                if _live(record, now) is not None:
                    yield record
            await asyncio.sleep(0)

    async def purge_expired(self) -> int:
        """Drop expired records without telling the sink: expiry is re-applied on load, so
        a purge never needs to be durable."""
        now = self._clock.now()
        expired: list[str] = []
        async with self.records.frozen() as values:
            while True:
                chunk = [r for _, r in zip(range(PURGE_CHUNK), values, strict=False)]
                if not chunk:
                    break
                expired.extend(r.key for r in chunk if _live(r, now) is None)
                await asyncio.sleep(0)
        removed = 0
        for start in range(0, len(expired), PURGE_CHUNK):
            for key in expired[start : start + PURGE_CHUNK]:
                record = self.records.get(key)  # may have been replaced since the scan
                if record is not None and _live(record, now) is None:
                    self.records.pop(key)
                    removed += 1
            await asyncio.sleep(0)
        return removed


class MemoryStore(Store):
    def __init__(
        self, clock: Clock, sink: ChangeSink | None = None, trail: AuditTrail | None = None
    ) -> None:
        memory = trail if isinstance(trail, MemoryTrail) else MemoryTrail(clock)
        self.audit: AuditTrail = trail or memory
        sink = sink or NullSink(memory)
        self.clock = clock
        self.clients = MemoryTable[Client](Client.KIND, clock, sink)
        self.consents = MemoryTable[Consent](Consent.KIND, clock, sink)
        self.pending = MemoryTable[PendingAuthorization](PendingAuthorization.KIND, clock, sink)
        self.codes = MemoryTable[AuthCode](AuthCode.KIND, clock, sink)
        self.grants = MemoryTable[Grant](Grant.KIND, clock, sink)
        self.devices = MemoryTable[DeviceFlow](DeviceFlow.KIND, clock, sink)
        self.mcp_sessions = MemoryTable[McpSession](McpSession.KIND, clock, sink)
        self.registration_groups = MemoryTable[RegistrationGroup](
            RegistrationGroup.KIND, clock, sink
        )
        self.account_sessions = MemoryTable[AccountSession](AccountSession.KIND, clock, sink)
        self.signing_keys = MemoryTable[SigningKey](SigningKey.KIND, clock, sink)
        self.used_assertions = MemoryTable[UsedAssertion](UsedAssertion.KIND, clock, sink)
        self.account_links = MemoryTable[AccountLink](AccountLink.KIND, clock, sink)
        self.counters = MemoryCounters(clock)  # in process, never journaled
        self.by_kind: dict[str, MemoryTable[Any]] = {t.kind: t for t in self.memory_tables()}

    def memory_tables(self) -> tuple[MemoryTable[Any], ...]:
        return self.tables()  # type: ignore[return-value]

    async def ping(self) -> None:
        return None

    def status(self) -> StoreStatus:
        return StoreStatus(backend="memory", healthy=True)

    async def close(self) -> None:
        return None
