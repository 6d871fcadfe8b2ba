"""Human-readable rendering of `oauthd state inspect|verify`."""

from __future__ import annotations

import time
from typing import TextIO

from oauthd.store.offline import StateReport


def _when(ts: float | None) -> str:
    return "-" if not ts else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def render_inspect(report: StateReport, out: TextIO) -> None:
    out.write(f"state dir    {report.path}\n")
    out.write(f"initialized  {'yes' if report.initialized else 'no'}\n")
    out.write(f"in use by    {report.lock_holder or '- (no daemon holds the lock)'}\n")
    for snap in report.snapshots:
        status = snap.error or (
            f"format oauthd-state v{snap.version}, seq {snap.seq}, saved {_when(snap.saved_at)}"
        )
        out.write(f"{snap.name:<12} {_size(snap.size)}, {status}\n")
    records = sum(s.records for s in report.segments)
    size = sum(s.size for s in report.segments)
    out.write(
        f"journal      {len(report.segments)} segments, {records} records, {_size(size)}; "
        f"{report.journal_records_after_snapshot} after the snapshot "
        f"(seq {report.base_seq} -> {report.last_seq})\n\n"
    )
    out.write(f"{'kind':<14}{'live':>10}{'expired':>10}\n")
    for kind, count in report.counts.items():
        out.write(f"{kind:<14}{count:>10}{report.expired.get(kind, 0):>10}\n")
    if report.damage:
        out.write(f"\n{len(report.damage)} problems (see `oauthd state verify`)\n")


def render_verify(report: StateReport, out: TextIO) -> None:
    if not report.damage:
        files = len(report.snapshots) + len(report.segments)
        out.write(f"OK: {report.path}: {files} files verified, seq {report.last_seq}\n")
        return
    for problem in report.damage:
        out.write(f"DAMAGE: {problem}\n")
