"""`RecordMap`: the in-memory dict behind every memory table, freezable for long scans.

While frozen, the base dict is not mutated: writes land in an overlay that reads consult
first. A scan (the snapshot writer, the expiry purge) can then walk the base in small
chunks between event-loop turns and see exactly the state of the moment it froze, without
copying a million entries in one turn. Thawing merges the overlay back in chunks.

Values are kept packed (`pack`, `unpack`: the memory tables keep records as rows, see
`rows.py`; the last `RECENT` values read are kept unpacked too, a bounded number of objects
for the collector) in a dict that is tracked by the collector from the start, so that the
`gc.freeze()` after a load takes it out of every later collection even when it was empty:
a tracked million-entry dict costs a full collection about 0.3 s, whatever it holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

V = TypeVar("V")
MERGE_CHUNK = 5000
RECENT = 1024  # values kept unpacked, the last read: a grant is read on every /mcp call


class _Tombstone:
    __slots__ = ()


_DELETED = _Tombstone()


def _same(value: Any) -> Any:
    return value


class RecordMap(Generic[V]):
    def __init__(
        self, pack: Callable[[V], Any] = _same, unpack: Callable[[Any], V] = _same
    ) -> None:
        self._pack = pack
        self._unpack = unpack
        self._base: dict[str, Any] = {"": []}  # a list value makes the dict tracked ...
        del self._base[""]  # ... for good (see the module's docstring)
        self._overlay: dict[str, Any] | None = None
        self._scan_lock = asyncio.Lock()
        self._size = 0
        self._recent: dict[str, V] = {}

    def __len__(self) -> int:
        return self._size

    def _packed(self, key: str) -> Any:
        overlay = self._overlay
        if overlay is not None and key in overlay:
            value = overlay[key]
            return None if value is _DELETED else value
        return self._base.get(key)

    def get(self, key: str) -> V | None:
        value = self._recent.get(key)
        if value is not None:
            return value
        packed = self._packed(key)
        if packed is None:
            return None
        value = self._unpack(packed)
        if len(self._recent) >= RECENT:
            del self._recent[next(iter(self._recent))]  # the oldest
        self._recent[key] = value
        return value

    def set(self, key: str, value: V) -> None:
        self._recent.pop(key, None)
        if self._packed(key) is None:
            self._size += 1
        if self._overlay is not None:
            self._overlay[key] = self._pack(value)
        else:
            self._base[key] = self._pack(value)

    def pop(self, key: str) -> V | None:
        self._recent.pop(key, None)
        packed = self._packed(key)
        if packed is None:
            return None
        self._size -= 1
        if self._overlay is not None:
            self._overlay[key] = _DELETED
        else:
            del self._base[key]
        return self._unpack(packed)

    def load(self, key: str, value: V) -> None:
        """`set` for bulk loading at start-up, before any scan: straight into the base."""
        self.load_packed({key: self._pack(value)})

    def load_packed(self, packed: dict[str, Any]) -> None:
        """`load` of many values already packed (rows decoded from a snapshot)."""
        assert self._overlay is None
        self._recent.clear()
        self._base.update(packed)
        self._size = len(self._base)

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
        return map(self._unpack, self._base.values())

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

    def _merge(self, overlay: dict[str, Any], count: int) -> None:
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
