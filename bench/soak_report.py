"""The samples of `bench/soak.py`, the growth test, the CSV, the plot and the table.

The growth test, over the samples taken after the warm-up (at least 6 of them):
- the record count must be steady: the least-squares line through the total of
  `oauthd_records` may change by at most `records_tolerance` (10 %) of its mean over the
  measured span; otherwise the load, not oauthd, is what grew and the run fails as such;
- RSS (MiB) and open file descriptors are fitted the same way (least squares against
  time); the run fails if the line rises by more than `rss_limit` MiB (default 8) or
  `fds_limit` descriptors (default 8) over the measured span. A slope rather than last
  minus first, so that one late spike (a snapshot's buffers, a burst of connections)
  neither fails a run nor hides a leak.
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

MIN_SAMPLES = 6


@dataclass(slots=True)
class Sample:
    t: float  # seconds since the load started
    rss_mib: float
    fds: int
    conn_in: int  # established connections to oauthd
    conn_up: int  # established connections to the upstream
    lag_ms: float  # oauthd_event_loop_lag_seconds: the worst of its last 10 s window
    snapshots: int
    fsyncs: int
    requests: int
    server_errors: int
    records: dict[str, int] = field(default_factory=dict)
    p99_ms: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Trend:
    name: str
    slope_per_h: float
    rise: float  # slope x measured span
    limit: float

    @property
    def ok(self) -> bool:
        return self.rise <= self.limit


@dataclass(slots=True)
class Verdict:
    trends: list[Trend]
    records_ok: bool
    records_mean: float
    records_rise: float
    enough: bool

    @property
    def ok(self) -> bool:
        return self.enough and self.records_ok and all(t.ok for t in self.trends)


def slope(ts: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys against ts (per unit of t)."""
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    den = sum((t - mt) ** 2 for t in ts)
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / den if den else 0.0


def judge(
    samples: list[Sample],
    warmup: float,
    rss_limit: float,
    fds_limit: float,
    records_tolerance: float = 0.10,
) -> Verdict:
    after = [s for s in samples if s.t >= warmup]
    if len(after) < MIN_SAMPLES:
        return Verdict([], False, 0.0, 0.0, enough=False)
    ts = [s.t for s in after]
    span = ts[-1] - ts[0]
    totals = [float(sum(s.records.values())) for s in after]
    mean = statistics.fmean(totals)
    records_rise = slope(ts, totals) * span
    trends = []
    for name, ys, limit in (
        ("rss_mib", [s.rss_mib for s in after], rss_limit),
        ("fds", [float(s.fds) for s in after], fds_limit),
    ):
        b = slope(ts, ys)
        trends.append(Trend(name, b * 3600, b * span, limit))
    steady = abs(records_rise) <= records_tolerance * max(mean, 1.0)
    return Verdict(trends, steady, mean, records_rise, enough=True)


def write_csv(path: Path, samples: list[Sample], kinds: list[str], endpoints: list[str]) -> None:
    head = ["t_s", "rss_mib", "fds", "conn_in", "conn_up", "lag_ms", "snapshots", "fsyncs"]
    head += ["requests", "server_errors"]
    with path.open("w", newline="") as out:
        w = csv.writer(out)
        w.writerow(head + [f"records_{k}" for k in kinds] + [f"p99_ms_{e}" for e in endpoints])
        for s in samples:
            row: list[object] = [f"{s.t:.1f}", f"{s.rss_mib:.2f}", s.fds, s.conn_in, s.conn_up]
            row += [f"{s.lag_ms:.2f}", s.snapshots, s.fsyncs, s.requests, s.server_errors]
            row += [s.records.get(k, "") for k in kinds]
            row += [_num(s.p99_ms.get(e)) for e in endpoints]
            w.writerow(row)


def _num(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.2f}"


def plot(
    path: Path,
    samples: list[Sample],
    kinds: list[str],
    endpoints: list[str],
    title: str,
    warmup: float,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s.t / 60 for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(10, 13), sharex=True)
    ax = axes[0]
    ax.plot(minutes, [s.rss_mib for s in samples], label="RSS (MiB)", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(minutes, [s.fds for s in samples], label="open fds", color="tab:orange")
    ax2.plot(
        minutes, [s.conn_in for s in samples], label="connections in", color="tab:green", lw=0.8
    )
    ax.set_ylabel("RSS (MiB)")
    ax2.set_ylabel("fds, connections")
    ax.legend(loc="upper left")
    ax2.legend(loc="upper right")
    for kind in kinds:
        axes[1].plot(minutes, [s.records.get(kind, 0) for s in samples], label=kind)
    axes[1].set_ylabel("records")
    axes[1].legend(loc="upper left", ncol=4, fontsize="small")
    axes[2].plot(minutes, [s.lag_ms for s in samples], color="tab:red")
    axes[2].set_ylabel("loop lag, worst per 10 s (ms)")
    for e in endpoints:
        axes[3].plot(
            minutes, [s.p99_ms.get(e, math.nan) for s in samples], label=e, lw=0.8, marker=".", ms=3
        )
    axes[3].set_yscale("log")
    axes[3].set_ylabel("p99 per 10 s (ms)")
    axes[3].set_xlabel("minutes")
    axes[3].legend(loc="upper left", ncol=3, fontsize="x-small")
    for a in axes:
        a.axvline(warmup / 60, color="grey", ls="--", lw=0.8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
