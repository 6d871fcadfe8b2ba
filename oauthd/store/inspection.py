"""Offline examination of a file backend's state dir, for `oauthd state inspect|verify`.

Read-only: it takes no lock, truncates nothing and quarantines nothing, so it is safe on
the state dir of a running daemon and on a damaged one."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oauthd.persist.errors import CorruptFile
from oauthd.persist.journal import list_segments, scan_segment
from oauthd.persist.snapshot import read_snapshot
from oauthd.persist.statedir import LOCK, MARKER, PREVIOUS, SNAPSHOT, StateDir
from oauthd.store import codec
from oauthd.store.base import is_live
from oauthd.store.migrations import CURRENT_VERSION


@dataclass(slots=True)
class SnapshotReport:
    name: str
    size: int
    version: int | None = None
    seq: int | None = None
    saved_at: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None


@dataclass(slots=True)
class SegmentReport:
    name: str
    first_seq: int
    size: int
    records: int
    last_seq: int
    damage: str | None = None
    torn: bool = False


@dataclass(slots=True)
class StateReport:
    path: str
    initialized: bool
    lock_holder: str | None
    files: dict[str, int]
    snapshots: list[SnapshotReport]
    segments: list[SegmentReport]
    base_seq: int = 0
    last_seq: int = 0
    journal_records_after_snapshot: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # live records a start would load
    expired: dict[str, int] = field(default_factory=dict)  # dropped by expiry filtering
    damage: list[str] = field(default_factory=list)


def _lock_holder(state: StateDir) -> str | None:
    """Who holds the daemon's flock, from /proc/locks (taking the lock could race a start)."""
    try:
        inode = os.stat(state.file(LOCK)).st_ino
        with open("/proc/locks") as locks:
            held = any(line.split()[5].endswith(f":{inode}") for line in locks if "FLOCK" in line)
    except (OSError, IndexError):
        return None
    return state.file(LOCK).read_text().strip() or "unknown" if held else None


def _read_snapshot(state: StateDir, name: str, report: StateReport) -> dict[str, Any] | None:
    path = state.file(name)
    snap = SnapshotReport(name=name, size=path.stat().st_size)
    report.snapshots.append(snap)
    try:
        doc = read_snapshot(path)
        snap.version, snap.seq, snap.saved_at = doc["version"], doc["seq"], doc["saved_at"]
        if doc["version"] != CURRENT_VERSION:
            raise CorruptFile(
                str(path),
                f"format version {doc['version']} (this oauthd: "
                f"{CURRENT_VERSION}); a start would migrate or refuse it",
            )
        records = {
            k: [codec.decode(k, r) for r in v] for k, v in doc.items() if isinstance(v, list)
        }
        snap.counts = {k: len(v) for k, v in records.items()}
    except (OSError, CorruptFile, codec.DecodeError) as exc:
        snap.error = str(exc)
        report.damage.append(f"{path}: {exc}" if not isinstance(exc, CorruptFile) else str(exc))
        return None
    return records


def _replay(state: StateDir, report: StateReport, live: dict[str, dict[str, Any]]) -> None:
    expected = report.base_seq + 1
    for first, name in list_segments(state):
        try:
            scan = scan_segment(state.file(name))
        except FileNotFoundError:  # a running daemon deleted it: its records are in both
            continue  # snapshot generations, so in the one read above
        seg = SegmentReport(
            name, first, scan.size, len(scan.entries), scan.last_seq, scan.damage, scan.torn
        )
        report.segments.append(seg)
        if scan.damage:
            kind = "torn tail (dropped on start)" if scan.torn else "damage"
            report.damage.append(
                f"{state.file(name)}: {kind} at byte {scan.damage_offset}: {scan.damage}"
            )
        for seq, payload in scan.entries:
            if seq < expected:
                continue
            if seq > expected:
                report.damage.append(f"{state.file(name)}: records {expected}..{seq - 1} missing")
            expected = seq + 1
            report.journal_records_after_snapshot += 1
            if codec.is_audit_frame(payload):
                continue  # an audit record, not a change of the state
            try:
                kind, key, record = codec.decode_change(payload)
            except codec.DecodeError as exc:
                report.damage.append(f"{state.file(name)}: record {seq}: {exc}")
                continue
            live.setdefault(kind, {})[key] = record
    report.last_seq = expected - 1


def _stat(path: Path) -> os.stat_result | None:
    """None for a file a running daemon removed since the dir was listed."""
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def examine(path: Path, now: float) -> StateReport:
    state = StateDir(path)
    names = state.names()
    report = StateReport(
        path=str(path),
        initialized=MARKER in names,
        lock_holder=_lock_holder(state),
        files={n: st.st_size for n in names if (st := _stat(state.file(n))) is not None},
        snapshots=[],
        segments=[],
    )
    live: dict[str, dict[str, Any]] = {kind: {} for kind in codec.KINDS}
    loaded = False
    for name in (SNAPSHOT, PREVIOUS):
        if name not in names:
            continue
        records = _read_snapshot(state, name, report)
        if records is not None and not loaded:
            loaded = True
            report.base_seq = report.snapshots[-1].seq or 0
            for kind, items in records.items():
                live[kind] = {r.key: r for r in items}
    _replay(state, report, live)
    for kind, items in live.items():
        alive = [r for r in items.values() if r is not None]
        fresh = sum(1 for r in alive if is_live(r, now))
        report.counts[kind], report.expired[kind] = fresh, len(alive) - fresh
    return report
