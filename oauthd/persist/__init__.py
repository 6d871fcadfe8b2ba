"""The durability engine: state dir and lock, journal, snapshot, recovery, save schedule.

It knows bytes, files and sequence numbers, not OAuth: the store hands it opaque journal
payloads and snapshot chunks."""

from oauthd.persist.contracts import EngineObserver, SaveSchedule, SnapshotSource
from oauthd.persist.engine import Engine
from oauthd.persist.errors import DiskError, PersistError, RecoveryError
from oauthd.persist.health import Health

__all__ = [
    "DiskError",
    "Engine",
    "EngineObserver",
    "Health",
    "PersistError",
    "RecoveryError",
    "SaveSchedule",
    "SnapshotSource",
]
