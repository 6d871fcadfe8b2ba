"""What the engine is given: its save schedule, the store's snapshot source, and the
observer (the metrics) it tells of every fsync and snapshot."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True, frozen=True)
class SaveSchedule:
    """When to write a snapshot: `debounce` after the last change, but no later than
    `max_wait` after the first unsaved change (steady traffic cannot starve saves), and at
    most `interval` after the previous save. Nothing changed -> nothing written."""

    interval: float
    debounce: float
    max_wait: float


class SnapshotSource(Protocol):
    """What the store gives the engine to snapshot."""

    async def prepare_scan(self) -> None:
        """Wait until a consistent scan can start (may wait for an earlier scan)."""

    def freeze(self) -> Sequence[tuple[str, AsyncIterator[bytes]]]:
        """Synchronously fix the state and return each kind's records as chunked JSON arrays."""

    async def thaw(self) -> None:
        """The scan is over (written or failed)."""


class EngineObserver(Protocol):
    """Told of every journal fsync and snapshot write (the metrics); must not raise."""

    def journal_fsynced(self, seconds: float, records: int) -> None: ...

    def snapshot_written(self, saved_at: float, seconds: float, size: int) -> None: ...

    def snapshot_failed(self) -> None: ...
