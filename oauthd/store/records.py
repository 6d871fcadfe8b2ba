"""`RecordMap`: the in-memory dict behind every memory table, freezable for long scans.

While frozen, the base dict is not mutated: writes land in an overlay that reads consult
first. A scan (the snapshot writer, the expiry purge) can then walk the base in small
chunks between event-loop turns and see exactly the state of the moment it froze, without
copying a million entries in one turn. Thawing merges the overlay back in chunks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

V = TypeVar("V")
MERGE_CHUNK = 5000


class _Tombstone:
    __slots__ = ()


_DELETED = _Tombstone()


class RecordMap(Generic[V]):
    def __init__(self) -> None:
        self._base: dict[str, V] = {}
        self._overlay: dict[str, V | _Tombstone] | None = None
        self._scan_lock = asyncio.Lock()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def get(self, key: str) -> V | None:
        overlay = self._overlay
        if overlay is not None and key in overlay:
            value = overlay[key]
            return None if isinstance(value, _Tombstone) else value
        return self._base.get(key)

    def set(self, key: str, value: V) -> None:
        if self.get(key) is None:
            self._size += 1
        if self._overlay is not None:
            self._overlay[key] = value
        else:
            self._base[key] = value

    def pop(self, key: str) -> V | None:
        value = self.get(key)
        if value is None:
            return None
        self._size -= 1
        if self._overlay is not None:
            self._overlay[key] = _DELETED
        else:
            del self._base[key]
        return value

    def load(self, key: str, value: V) -> None:
        """`set` for bulk loading at start-up, before any scan: straight into the base."""
        assert self._overlay is None
        if key not in self._base:
            self._size += 1
        self._base[key] = value

    async def acquire_scan(self) -> None:
        await self._scan_lock.acquire()

    def release_scan(self) -> None:
        """Give up a scan that was acquired but never frozen."""
        assert self._overlay is None
        self._scan_lock.release()

    def freeze(self) -> Iterator[V]:
        """Start the overlay; return an iterator over the frozen values (call after
        `acquire_scan`, in the same turn for every map that must be consistent)."""
        assert self._scan_lock.locked() and self._overlay is None
        self._overlay = {}
        return iter(self._base.values())

    async def thaw(self) -> None:
        """Merge the overlay back into the base in chunks, then release the scan lock."""
        overlay = self._overlay
        assert overlay is not None
        try:
            while len(overlay) > MERGE_CHUNK:
                self._merge(overlay, MERGE_CHUNK)
                await asyncio.sleep(0)
        finally:  # cancelled or not, nothing in the overlay may be lost
            self._merge(overlay, len(overlay))
            self._overlay = None
            self._scan_lock.release()

    def _merge(self, overlay: dict[str, V | _Tombstone], count: int) -> None:
        for _ in range(count):
            key, value = overlay.popitem()
            if isinstance(value, _Tombstone):
                self._base.pop(key, None)
            else:
                self._base[key] = value

    @asynccontextmanager
    async def frozen(self) -> AsyncIterator[Iterator[V]]:
        await self.acquire_scan()
        try:
            values = self.freeze()
        except BaseException:
            self._scan_lock.release()
            raise
        try:
            yield values
        finally:
            await self.thaw()
