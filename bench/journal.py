"""Journal benchmark for the file backend: acknowledged writes per second with group commit.

Each of W concurrent writer tasks loops `await store.grants.put(grant)` (a fresh grant each
time, as at a login) for a fixed time. With `durability = "journal"` a put returns only
after the record is framed, written and fdatasync'ed (one fdatasync covers every record that
arrived while the previous one ran). With `durability = "snapshot"` a put returns at once
and only marks the state dirty. A raw `write + fdatasync` loop on the same disk gives the
ceiling for one writer.

Usage:
    .venv/bin/python bench/journal.py                        # 1, 8, 64 writers, 3 s each
    .venv/bin/python bench/journal.py --writers 1,64 --duration 5 --dir /var/tmp

Prints a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_WRITES = 5000


def machine_state() -> str:
    """CPU count, load average and CPU pressure: other work on the machine skews stalls."""
    load = Path("/proc/loadavg").read_text().split()[:3]
    try:
        pressure = Path("/proc/pressure/cpu").read_text().split()[1:3]  # some avg10, avg60
    except OSError:
        pressure = ["n/a"]
    return (
        f"{os.cpu_count()} CPUs, load average {' '.join(load)}, CPU pressure {' '.join(pressure)}"
    )


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class GrantFactory:
    """Fresh realistic grants, cheap enough not to dominate the measurement: ids like
    `oauthd.crypto.new_key()` (16 random bytes, URL-safe base64, 22 chars) cut from one
    large urandom buffer instead of a syscall per grant."""

    def __init__(self) -> None:
        from oauthd.crypto import new_key
        from oauthd.model import Grant

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from snapshot import GRANT_FIELDS_SET, missing_field_defaults

        self._extra = missing_field_defaults(Grant, GRANT_FIELDS_SET)
        self._new_key = new_key
        self._digests = [os.urandom(32) for _ in range(4096)]
        self._users = [f"user{i:02d}@example.com" for i in range(40)]
        self._clients = [new_key() for _ in range(30)]
        self._i = 0
        self._ids: list[str] = []
        self._Grant = Grant

    def _new_id(self) -> str:
        if not self._ids:
            raw = os.urandom(16 * 8192)
            self._ids = [
                base64.urlsafe_b64encode(raw[o : o + 16]).rstrip(b"=").decode("ascii")
                for o in range(0, len(raw), 16)
            ]
        return self._ids.pop()

    def __call__(self) -> Any:
        i = self._i = self._i + 1
        d = self._digests
        now = time.time()
        return self._Grant(
            id=self._new_id(),
            user=self._users[i % 40],
            client_id=self._clients[i % 30],
            scopes=("mcp", "offline_access"),
            resource="https://mcp.example.com/mcp",
            access_hash=d[i % 4096],
            access_expires_at=now + 3600.0,
            refresh_hash=d[(i * 7) % 4096],
            previous_refresh_hash=None,
            rotated_at=None,
            successor_used=False,
            upstream_tokens=None,
            created_at=now,
            last_used_at=now,
            expires_at=now + 30 * 86400.0,
            **self._extra,
        )


async def run_case(base: Path, durability: str, writers: int, duration: float) -> dict[str, Any]:
    from oauthd.clock import SystemClock
    from oauthd.store.file import FileStore, make_engine

    state = base / f"{durability}-{writers}"
    # The configuration defaults: save after 1 s quiet, at the latest 5 s after a change.
    engine = make_engine(
        state, journaled=durability == "journal", interval=30.0, debounce=1.0, max_wait=5.0
    )
    store = await FileStore.open(engine, SystemClock())
    make = GrantFactory()
    latencies: list[list[float]] = [[] for _ in range(writers)]
    stats = engine.fsync_stats
    count0, records0, fsync_s0 = stats.count, stats.records, stats.total_seconds
    deadline = 0.0

    async def writer(lat: list[float]) -> None:
        put = store.grants.put
        while time.perf_counter() < deadline:
            grant = make()
            t = time.perf_counter()
            await put(grant)
            lat.append(time.perf_counter() - t)

    gc.collect()
    cpu0 = cpu_seconds()
    started = time.perf_counter()
    deadline = started + duration
    await asyncio.gather(*(writer(lat) for lat in latencies))
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds() - cpu0
    await store.close()
    shutil.rmtree(state, ignore_errors=True)

    all_lat = [x for lat in latencies for x in lat]
    fsyncs = stats.count - count0
    records = stats.records - records0
    return {
        "durability": durability,
        "writers": writers,
        "writes": len(all_lat),
        "writes_per_s": len(all_lat) / elapsed,
        "p50_ms": pct(all_lat, 0.50) * 1e3,
        "p99_ms": pct(all_lat, 0.99) * 1e3,
        "fsyncs": fsyncs,
        "batch": records / fsyncs if fsyncs else None,
        "fsync_ms": (stats.total_seconds - fsync_s0) / fsyncs * 1e3 if fsyncs else None,
        "cpu_us_per_write": cpu / len(all_lat) * 1e6 if all_lat else None,
        "saves": engine.health().last_save_at is not None,
    }


def raw_fdatasync(base: Path, duration: float, size: int = 400) -> dict[str, float]:
    """write(size bytes) + fdatasync in a loop: the disk's ceiling for one writer."""
    path = base / "raw.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    lat = []
    payload = b"x" * size
    try:
        end = time.perf_counter() + duration
        while time.perf_counter() < end:
            t = time.perf_counter()
            os.write(fd, payload)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        path.unlink()
    return {
        "per_s": len(lat) / duration,
        "p50_ms": pct(lat, 0.5) * 1e3,
        "p99_ms": pct(lat, 0.99) * 1e3,
    }


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


async def main_async(args: argparse.Namespace) -> None:
    writers = [int(w) for w in args.writers.split(",")]
    state_before = machine_state()
    base = Path(tempfile.mkdtemp(prefix="oauthd-journal-bench-", dir=args.dir))
    try:
        raw = raw_fdatasync(base, min(args.duration, 2.0))
        results = []
        for durability in ("journal", "snapshot"):
            for w in writers:
                print(f"# {durability}, {w} writers ...", file=sys.stderr, flush=True)
                results.append(await run_case(base, durability, w, args.duration))
    finally:
        shutil.rmtree(base, ignore_errors=True)

    print(
        "| durability | writers | acked writes/s | p50 latency (ms) | p99 latency (ms) "
        "| records per fdatasync | fdatasync mean (ms) | CPU per write (us) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        miss = r["durability"] == "journal" and r["writes_per_s"] < TARGET_WRITES
        print(
            f"| {r['durability']} | {r['writers']} | {r['writes_per_s']:,.0f}"
            f"{' (miss)' if miss else ''} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} "
            f"| {fmt(r['batch'], '.1f')} | {fmt(r['fsync_ms'], '.3f')} "
            f"| {fmt(r['cpu_us_per_write'], '.0f')} |"
        )
    print(
        f"| raw write+fdatasync | 1 (thread, no asyncio) | {raw['per_s']:,.0f} "
        f"| {raw['p50_ms']:.3f} | {raw['p99_ms']:.3f} | 1 | {raw['p50_ms']:.3f} | - |"
    )
    print(
        f"\nTarget: >= {TARGET_WRITES:,} acknowledged writes/s (journal durability); "
        f'"(miss)" marks a journal row below it. {args.duration:g} s per row. '
        "CPU per write is the process's user+system time (loop and journal thread) divided by "
        "the writes."
    )
    print(f"\nMachine before: {state_before}; after: {machine_state()}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writers", default="1,8,64")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per row")
    parser.add_argument("--dir", default=None, help="where the temp state dirs go (local disk)")
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
