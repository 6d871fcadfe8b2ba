"""What the engine reports of itself: its health (for /readyz and `state` commands) and
its journal fsync statistics."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Health:
    loaded: bool
    journaled: bool
    journal_error: str | None
    snapshot_error: str | None
    seq: int
    snapshot_seq: int
    last_save_at: float | None  # wall clock
    last_save_seconds: float | None
    last_save_bytes: int | None

    @property
    def healthy(self) -> bool:
        """Ready: a change accepted now is made durable. With the journal, a failing
        snapshot only degrades (every acknowledged change is still in the journal)."""
        if not self.loaded or self.journal_error is not None:
            return False
        return self.journaled or self.snapshot_error is None

    @property
    def degraded(self) -> bool:
        return self.healthy and self.snapshot_error is not None


@dataclass(slots=True)
class FsyncStats:
    count: int = 0
    records: int = 0
    total_seconds: float = 0.0
    max_seconds: float = 0.0

    def add(self, seconds: float, records: int) -> None:
        self.count += 1
        self.records += records
        self.total_seconds += seconds
        self.max_seconds = max(self.max_seconds, seconds)
