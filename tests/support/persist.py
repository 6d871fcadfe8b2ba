"""Helpers for the file backend's durability tests: open a `FileStore` on a state dir, read
back everything it holds, and take the on-disk state a `kill -9` would leave behind."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from oauthd.clock import Clock, FakeClock, SystemClock
from oauthd.model import Record
from oauthd.persist import Engine, SaveSchedule
from oauthd.persist.journal import list_segments, scan_segment
from oauthd.persist.migrate import Migration
from oauthd.persist.statedir import LOCK, SNAPSHOT, StateDir
from oauthd.store.codec import KINDS
from oauthd.store.file import FileStore
from oauthd.store.migrations import CURRENT_VERSION, MIGRATIONS
from tests.support.records import make_grant

NEVER = 3600.0  # a schedule that never fires on its own during a test
Contents = dict[str, dict[str, Record]]


def engine_for(
    path: Path,
    *,
    journaled: bool = True,
    interval: float = NEVER,
    debounce: float = NEVER,
    max_wait: float = NEVER,
    version: int = CURRENT_VERSION,
    migrations: Mapping[int, Migration] = MIGRATIONS,
) -> Engine:
    return Engine(
        path,
        journaled=journaled,
        schedule=SaveSchedule(interval=interval, debounce=debounce, max_wait=max_wait),
        version=version,
        migrations=migrations,
    )


async def open_store(
    path: Path,
    clock: Clock | None = None,
    *,
    accept_empty: bool = False,
    recover: bool = False,
    **engine: Any,
) -> FileStore:
    return await FileStore.open(
        engine_for(path, **engine),
        clock or FakeClock(),
        accept_empty=accept_empty,
        recover=recover,
    )


async def contents(store: FileStore) -> Contents:
    """Every record the store holds in memory (expired ones too), by kind and key."""
    found: Contents = {}
    for table in store.memory_tables():
        async with table.records.frozen() as values:
            found[table.kind] = {r.key: r for r in values}
    return found


def as_contents(records: Iterable[Record]) -> Contents:
    found: Contents = {kind: {} for kind in KINDS}
    for record in records:
        found[record.KIND][record.key] = record
    return found


async def put_all(store: FileStore, records: Iterable[Record]) -> None:
    for record in records:
        await store.by_kind[record.KIND].put(record)


def crash_copy(src: Path, dst: Path) -> Path:
    """What a kill -9 of the daemon using `src` would leave on disk now (every write that
    returned is in the page cache, which survives a process kill): a copy without the lock
    (and without a daemon's admin socket)."""
    dst.mkdir(mode=0o700)
    for item in sorted(src.iterdir()):
        if item.name != LOCK and item.is_file():
            shutil.copy2(item, dst / item.name)
    return dst


def snapshot_doc(path: Path, name: str = SNAPSHOT) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads((path / name).read_bytes())
    return doc


def segments(path: Path) -> list[str]:
    return [name for _, name in list_segments(StateDir(path))]


def journal_seqs(path: Path) -> list[int]:
    return [seq for name in segments(path) for seq, _ in scan_segment(path / name).entries]


def files(path: Path) -> dict[str, bytes]:
    """Every file's bytes (not the lock: opening a store rewrites its holder line)."""
    return {
        p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file() and p.name != LOCK
    }


BIG_STATE = 30_000  # grants: loading takes a visible moment


async def make_big_state(path: Path) -> None:
    """A state dir with BIG_STATE grants in its snapshot (built in memory, saved once)."""
    store = await open_store(path, SystemClock())  # saved only when told
    far = time.time() + 86400
    for i in range(BIG_STATE):
        key = f"grant-{i:06d}"
        store.grants.records.set(key, make_grant(id=key, expires_at=far))
    assert await store.engine.save()
    await store.close()
