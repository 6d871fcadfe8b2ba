"""Start-up recovery: the loader policy of durability rule R4.

Never start empty and then overwrite. Damaged snapshots are quarantined byte-identical and
the previous generation is used; a torn journal tail is copied aside and truncated; damage
anywhere else stops the start with a message naming the file, unless the operator chose
`--recover`. Reading (`examine_*`) is kept apart from repairing so that `state inspect`
and `state verify` can use it without touching anything.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from oauthd.persist.errors import CorruptFile, RecoveryError
from oauthd.persist.journal import SegmentScan, list_segments, scan_segment
from oauthd.persist.migrate import Migration, migrate
from oauthd.persist.snapshot import ENVELOPE, Chunk, Snapshot, open_snapshot
from oauthd.persist.statedir import FILE_MODE, MARKER, PREVIOUS, SNAPSHOT, StateDir, utc_stamp

log = logging.getLogger("oauthd.persist")

RECOVER_HINT = (
    "to start from what is intact (damaged files are moved aside, never deleted), "
    "run `oauthd serve --recover`; `oauthd state verify` shows the damage"
)


@dataclass(slots=True)
class Recovered:
    """What start-up found: a (migrated) snapshot document and the journal after it."""

    document: Any  # what the loader's `decode` made of the snapshot
    base_seq: int
    entries: list[tuple[int, bytes]] = field(default_factory=list)
    needs_save: bool = False
    first_boot: bool = False
    events: list[str] = field(default_factory=list)

    @property
    def last_seq(self) -> int:
        return self.entries[-1][0] if self.entries else self.base_seq


class Loader:
    def __init__(
        self,
        state: StateDir,
        version: int,
        migrations: Mapping[int, Migration],
        decode: Callable[[Iterable[Chunk]], Any],
    ) -> None:
        """`decode` turns a snapshot's records, (kind, records) chunk by chunk, into what
        the caller keeps; a ValueError (or `CorruptFile` from the reader) marks the file as
        damaged, like a parse error."""
        self.state = state
        self.version = version
        self.migrations = migrations
        self.decode = decode

    def recover(self, *, accept_empty: bool = False, recover_damage: bool = False) -> Recovered:
        names = set(self.state.names())
        snapshots = [n for n in (SNAPSHOT, PREVIOUS) if n in names]
        segments = list_segments(self.state)
        if not snapshots and not segments:
            return self._empty_start(MARKER in names, accept_empty)
        result = self._load_snapshot(snapshots, segments, recover_damage)
        self._replay_journal(result, segments, recover_damage)
        if MARKER not in names:
            self.state.write_marker()
        return result

    def _empty_start(self, has_marker: bool, accept_empty: bool) -> Recovered:
        if has_marker and not accept_empty:
            raise RecoveryError(
                f"{self.state.path} was initialised before, but its snapshot and journal are "
                "missing: refusing to start empty. Restore them from a backup, or start with "
                "--accept-empty-state if losing every login is intended"
            )
        result = Recovered(self.decode(()), 0, needs_save=True)
        result.first_boot = not has_marker
        result.events.append(
            "first boot: empty state" if not has_marker else "empty state accepted"
        )
        # The engine writes the marker once the first snapshot is installed: a crash before
        # that must leave a dir that still starts as a first boot, not one that refuses.
        return result

    def _load_snapshot(
        self, snapshots: list[str], segments: list[tuple[int, str]], recover_damage: bool
    ) -> Recovered:
        for name in snapshots:
            snapshot = self._open(name)
            if snapshot is None:
                continue
            result = Recovered(None, snapshot.header["seq"])
            try:
                result.document = self.decode(self._chunks(name, snapshot, result))
            except (CorruptFile, ValueError) as exc:
                self._quarantine(name, f"records do not decode: {exc}")
                continue
            if name != SNAPSHOT:
                result.events.append(f"loaded the previous generation {name}")
                result.needs_save = True
            return result
        journal_complete = bool(segments) and segments[0][0] == 1
        if snapshots and not journal_complete and not recover_damage:
            raise RecoveryError(
                f"no valid snapshot in {self.state.path} (damaged files were quarantined) and "
                f"the journal does not reach back to the beginning; {RECOVER_HINT}"
            )
        result = Recovered(self.decode(()), 0, needs_save=True)
        result.events.append("no snapshot: state rebuilt from the journal alone")
        return result

    def _open(self, name: str) -> Snapshot | None:
        """The snapshot's envelope, or None once a damaged file was quarantined."""
        path = self.state.file(name)
        try:
            snapshot = open_snapshot(path)
        except CorruptFile as exc:
            self._quarantine(name, str(exc))
            return None
        except OSError as exc:
            raise RecoveryError(
                f"{path}: cannot read ({exc.strerror or exc}); refusing to start, nothing was "
                "changed"
            ) from None
        version = snapshot.header["version"]
        if version > self.version:
            raise RecoveryError(
                f"{path} has snapshot format version {version}, newer than this "
                f"oauthd's {self.version}: refusing to start (upgrade oauthd, or restore a "
                "backup made by this version); the file was not modified"
            )
        return snapshot

    def _quarantine(self, name: str, reason: str) -> str:
        digest = hashlib.sha256(self.state.file(name).read_bytes()).hexdigest()
        moved = self.state.quarantine(name)
        log.error(
            "damaged state file quarantined",
            extra={
                "event": "quarantine",
                "file": name,
                "moved_to": moved,
                "sha256": digest,
                "reason": reason,
            },
        )
        return moved

    def _chunks(self, name: str, snapshot: Snapshot, result: Recovered) -> Iterable[Chunk]:
        """The records to decode: streamed from a current file; an older format version is
        read whole and migrated in memory (the original kept as `snapshot.v<N>.bak`)."""
        old = snapshot.header["version"]
        if old == self.version:
            return snapshot.chunks()
        self._check_migrations(name, old)  # before anything is written
        backup = f"snapshot.v{old}.bak"
        if not self.state.file(backup).exists():
            os.link(self.state.file(name), self.state.file(backup))
            self.state.fsync_dir()
        document = migrate(snapshot.document(), self.version, self.migrations)
        result.needs_save = True
        result.events.append(
            f"migrated {name} from format version {old} (original kept as {backup})"
        )
        return [(k, v) for k, v in document.items() if k not in ENVELOPE]

    def _check_migrations(self, name: str, old: int) -> None:
        missing = [v for v in range(old, self.version) if v not in self.migrations]
        if missing:
            raise RecoveryError(
                f"{self.state.file(name)} has snapshot format version {old}, and this oauthd "
                f"(format {self.version}) cannot migrate from version {missing[0]}: refusing "
                "to start, nothing was changed. Start once with an oauthd release that reads "
                f"format {old} and writes a newer one (it migrates the file), or restore a "
                f"backup made by this version"
            )

    def _replay_journal(
        self, result: Recovered, segments: list[tuple[int, str]], recover_damage: bool
    ) -> None:
        expected = result.base_seq + 1
        previous_torn = False
        for index, (first, name) in enumerate(segments):
            following = segments[index + 1][0] if index + 1 < len(segments) else None
            if following is not None and following <= result.base_seq + 1:
                continue  # wholly covered by the snapshot
            if first > expected and not previous_torn and not recover_damage:
                raise RecoveryError(
                    f"journal records {expected}..{first - 1} are missing before {name}: "
                    f"refusing to start; {RECOVER_HINT}"
                )
            scan = self._scan(name)
            result.entries.extend(e for e in scan.entries if e[0] >= expected)
            expected = max(expected, scan.last_seq + 1)
            previous_torn = False
            if scan.damage is None:
                continue
            if scan.torn and (following is None or following > scan.last_seq + 1):
                self._cut_tail(scan, "torn", result)
                previous_torn = True
                continue
            if not recover_damage:
                raise RecoveryError(
                    f"{self.state.file(name)} is damaged at byte {scan.damage_offset} "
                    f"({scan.damage}) and is not just a torn tail: refusing to start; "
                    f"{RECOVER_HINT}"
                )
            self._cut_tail(scan, "corrupt", result)
            for _, later in segments[index + 1 :]:
                result.events.append(f"moved aside {self._quarantine_later(later)}")
            result.needs_save = True
            return

    def _scan(self, name: str) -> SegmentScan:
        try:
            return scan_segment(self.state.file(name))
        except OSError as exc:
            raise RecoveryError(
                f"{self.state.file(name)}: cannot read ({exc.strerror or exc}); refusing to "
                "start, nothing was changed"
            ) from None

    def _cut_tail(self, scan: SegmentScan, label: str, result: Recovered) -> None:
        """Copy the bytes after the last good frame aside, then truncate them away."""
        path = self.state.file(scan.name)
        with open(path, "rb") as src:
            src.seek(scan.good_end)
            tail = src.read()
        aside = f"{scan.name}.{label}-{utc_stamp()}"
        try:
            self.state.write_durably(aside, tail)
        except OSError as exc:  # named for the operator: what could not be written
            why = f"{exc.strerror}; the {label} tail of {scan.name} is copied aside first"
            raise OSError(exc.errno, why, str(self.state.file(aside))) from None
        os.chmod(self.state.file(aside), FILE_MODE)
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, scan.good_end)
            os.fsync(fd)
        finally:
            os.close(fd)
        message = (
            f"{label} journal tail of {scan.name}: {len(tail)} bytes after byte "
            f"{scan.good_end} discarded (copy kept as {aside})"
        )
        (log.warning if label == "torn" else log.error)(
            message, extra={"event": f"journal_{label}_tail", "discarded_bytes": len(tail)}
        )
        result.events.append(message)

    def _quarantine_later(self, name: str) -> str:
        return self._quarantine(name, "follows a damaged journal segment (--recover)")
