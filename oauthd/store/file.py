"""The file backend (the default): the memory tables, wrapped by the persistence engine.

Every change is applied in memory in one synchronous step and then handed to the engine,
which journals it (fsync before the caller's write returns; if the journal fails, the
change is undone before the caller gets `Unavailable`) or, with `durability = "snapshot"`,
only marks the state dirty for the next snapshot.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import math
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from functools import partial
from typing import Any

from oauthd.audit import AuditEvent, default_chain_name, log_durable
from oauthd.clock import Clock
from oauthd.config import AuditConfig
from oauthd.model import Record
from oauthd.persist import DiskError, Engine, EngineObserver, RecoveryError, SaveSchedule
from oauthd.persist.recovery import Recovered
from oauthd.store import codec
from oauthd.store.audit_files import AUDIT_DIR, AuditFiles
from oauthd.store.audit_recovery import recover_chain
from oauthd.store.base import StoreStatus, Unavailable, is_live
from oauthd.store.file_trail import FileTrail
from oauthd.store.memory import MemoryStore, MemoryTable
from oauthd.store.migrations import CURRENT_VERSION, MIGRATIONS
from oauthd.store.rows import LAYOUTS, Row, young_collections_only

SNAPSHOT_CHUNK = 100  # records built from their rows and serialised per event-loop turn

Decoded = dict[str, dict[str, Row]]  # by kind and key


class EngineSink:
    """Reports table changes to the engine; disk trouble becomes `Unavailable` (503), after
    the engine put the failed changes back (newest first) through `tables`. A change's
    audit record is sealed and rides in the change's own journal frame: neither is ever on
    disk without the other, and a failed batch undoes both."""

    def __init__(self, engine: Engine, trail: FileTrail) -> None:
        self._engine = engine
        self.tables: dict[str, MemoryTable[Any]] = {}
        self.trail = trail

    def check_writable(self) -> None:
        try:
            self._engine.check_writable()
        except DiskError as exc:
            raise Unavailable(f"state cannot be saved: {exc}") from None

    async def room(self) -> None:
        await self.trail.room()

    async def changed(
        self,
        kind: str,
        key: str,
        record: Record | None,
        previous: Record | None,
        event: AuditEvent | None = None,
    ) -> None:
        table = self.tables[kind]

        def undo() -> None:
            table.restore(key, previous)

        if event is not None and self.trail.enabled:
            frame = self.trail.stage(
                event, lambda line: (codec.encode_change(kind, key, record, line), undo)
            )
        else:
            frame = self._engine.append(codec.encode_change(kind, key, record), undo)
        try:
            await frame
        except DiskError as exc:
            raise Unavailable(f"state cannot be saved: {exc}") from None
        if event is not None and not self.trail.enabled:
            log_durable(event)


def decode_document(chunks: Iterable[tuple[str, list[Any]]], now: float = -math.inf) -> Decoded:
    """The records of a snapshot live at `now`, by kind and key, decoded chunk by chunk
    into the rows the tables keep; ValueError if any is damaged."""
    decoded: Decoded = {kind: {} for kind in codec.KINDS}
    for kind, items in chunks:
        if kind not in decoded:
            raise codec.DecodeError(f"unknown record kind {kind!r}")
        pack, rows = LAYOUTS[kind].pack, decoded[kind]
        for record in codec.decode_many(kind, items):
            if record.expires_at is None or record.expires_at > now:
                rows[record.key] = pack(record)
    return decoded


class FileStore(MemoryStore):
    audit: FileTrail

    def __init__(self, engine: Engine, clock: Clock, trail: FileTrail) -> None:
        self.engine = engine
        sink = EngineSink(engine, trail)
        super().__init__(clock, sink, trail)
        sink.tables = self.by_kind

    @classmethod
    async def open(
        cls,
        engine: Engine,
        clock: Clock,
        *,
        accept_empty: bool = False,
        recover: bool = False,
        audit: AuditConfig | None = None,
    ) -> FileStore:
        try:
            with young_collections_only():
                decode = partial(decode_document, now=clock.now())
                recovered = engine.open(decode, accept_empty=accept_empty, recover=recover)
            try:
                files = AuditFiles(engine.state.path / AUDIT_DIR)
                name = (audit.chain if audit else "") or default_chain_name()
                trail = FileTrail(
                    engine,
                    files,
                    clock,
                    recover_chain(files, engine.state, name),
                    enabled=audit.enabled if audit else True,
                    retention=audit.retention if audit else 0.0,
                )
                store = cls(engine, clock, trail)
                store._apply(recovered)
            except BaseException:
                engine.state.unlock()
                raise
        finally:
            # What start-up made (the tables' dicts above all) never needs scanning for
            # cycles; the rows themselves are untracked by the collections of the load.
            gc.freeze()
        await engine.start(store, recovered)
        trail.start()
        engine.before_delete = trail.sync
        engine.before_unlock = trail.close  # the anchor is written under the lock
        return store

    def _apply(self, recovered: Recovered) -> None:
        now = self.clock.now()
        for kind, rows in recovered.document.items():
            self.by_kind[kind].records.load_packed(rows)  # live ones: see `decode_document`
        recovered.document = None  # let the decoded lists go
        for seq, payload in recovered.entries:
            if codec.is_audit_frame(payload):
                continue  # the trail's (`recover_chain`)
            try:
                kind, key, record = codec.decode_change(payload)
                target = self.by_kind[kind].records
            except (codec.DecodeError, KeyError) as exc:
                raise RecoveryError(f"journal record {seq} does not decode: {exc}") from None
            if record is None or not is_live(record, now):
                target.pop(key)
            else:
                target.set(key, record)

    # -- SnapshotSource -----------------------------------------------------------------

    async def prepare_scan(self) -> None:
        acquired = []
        try:
            for table in self.memory_tables():
                await table.records.acquire_scan()
                acquired.append(table)
        except BaseException:  # cancelled while waiting: hold no lock
            for table in acquired:
                table.records.release_scan()
            raise

    def freeze(self) -> Sequence[tuple[str, AsyncIterator[bytes]]]:
        now = self.clock.now()
        return [(t.kind, self._chunks(t.records.freeze(), now)) for t in self.memory_tables()]

    async def thaw(self) -> None:
        for table in self.memory_tables():
            await table.records.thaw()

    async def _chunks(self, values: Iterator[Record], now: float) -> AsyncIterator[bytes]:
        """Live records as JSON arrays of up to SNAPSHOT_CHUNK, one per event-loop turn."""
        while batch := list(itertools.islice(values, SNAPSHOT_CHUNK)):
            live = [r for r in batch if is_live(r, now)]
            yield codec.encode(live)
            await asyncio.sleep(0)

    # -- Store --------------------------------------------------------------------------

    async def ping(self) -> None:
        health = self.engine.health()
        if not health.healthy:
            raise Unavailable(health.journal_error or health.snapshot_error or "not loaded")

    def status(self) -> StoreStatus:
        health = self.engine.health()
        problem = health.journal_error or health.snapshot_error
        return StoreStatus(backend="file", healthy=health.healthy, detail=problem)

    async def close(self) -> None:
        self.audit.flush()  # this turn's records: their frame, before the journal closes
        if self.engine.health().loaded:
            # its last snapshot syncs the trail (`before_delete`); the trail closes before
            # the state dir is unlocked (`before_unlock`)
            await self.engine.close()
        await self.audit.close()  # idempotent: for an engine that never loaded


def make_engine(
    path: Any,
    *,
    journaled: bool,
    interval: float,
    debounce: float,
    max_wait: float,
    observer: EngineObserver | None = None,
) -> Engine:
    return Engine(
        path,
        journaled=journaled,
        schedule=SaveSchedule(interval=interval, debounce=debounce, max_wait=max_wait),
        version=CURRENT_VERSION,
        migrations=MIGRATIONS,
        observer=observer,
    )
