"""Soak run: oauthd (file backend, `durability = "journal"`, the defaults of
config.example.toml) in front of the demo MCP server (examples/demo_server.py; or
`--upstream stub`: bench/upstream_stub.py, without GET streams) under a steady mixed load
for `--duration` seconds (bench/soak_load.py says what the load does). Snapshots happen
on their own schedule (a change waits at most storage.save_max_wait, 5 s).

Every `--interval` seconds (10) it samples oauthd's RSS and open file descriptors
(/proc), the established connections to oauthd and to the upstream (/proc/net/tcp),
`/metrics` (records per kind, `oauthd_event_loop_lag_seconds`, snapshots and fsyncs so
far) and the p99 latency of each endpoint in that interval, into `soak.csv` and
`soak.png` in `--out`. It prints a Markdown table and exits 1 on any 5xx, on a
transport error, or when the growth test of bench/soak_report.py fails (RSS or fds rising
after the warm-up while the record count is steady).

    .venv/bin/python bench/soak.py --duration 60                # a short check
    nice .venv/bin/python bench/soak.py --duration 3600 --out docs/soak
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proxy import ROOT, Processes, free_port, machine, pct, wait_ready, write_config
from soak_load import DEVICE_GRANT, ENDPOINTS, REDIRECT_URI, Load, Rates
from soak_report import Sample, Verdict, judge, plot, write_csv

METRIC = re.compile(r'^(\w+)(?:\{kind="(\w+)"\})? ([0-9.e+-]+)$', re.M)


def proc_sample(pid: int) -> tuple[float, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return rss_kib / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def established(port: int, local: bool) -> int:
    """Established TCP connections whose local (or remote) port is `port`."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if f[3] == "01" and int(f[1 if local else 2].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


async def scrape(api: aiohttp.ClientSession, base: str) -> tuple[dict[str, int], dict[str, float]]:
    async with api.get(f"{base}/metrics") as response:
        text = await response.text()
    records: dict[str, int] = {}
    values: dict[str, float] = {}
    for name, kind, value in METRIC.findall(text):
        if name == "oauthd_records" and kind:
            records[kind] = int(float(value))
        elif not kind:
            values[name] = float(value)
    return records, values


async def take_sample(
    load: Load, pid: int, ports: tuple[int, int], t: float
) -> tuple[Sample, dict[str, list[float]]]:
    records, values = await scrape(load.api, load.base)
    rss, fds = proc_sample(pid)
    window = load.rec.take()
    sample = Sample(
        t=t,
        rss_mib=rss,
        fds=fds,
        conn_in=established(ports[0], local=True),
        conn_up=established(ports[1], local=False),
        lag_ms=values.get("oauthd_event_loop_lag_seconds", float("nan")) * 1e3,
        snapshots=int(values.get("oauthd_snapshot_duration_seconds_count", 0)),
        fsyncs=int(values.get("oauthd_journal_fsync_seconds_count", 0)),
        requests=load.rec.requests,
        server_errors=load.rec.server_errors,
        records=records,
        p99_ms={e: pct(v, 0.99) * 1e3 for e, v in window.items()},
    )
    return sample, window


async def register_clients(load: Load, count: int) -> list[str]:
    ids = []
    for i in range(count):
        metadata = {
            "redirect_uris": [REDIRECT_URI],
            "token_endpoint_auth_method": "none",
            "client_name": f"soak-{i}",
            "grant_types": ["authorization_code", "refresh_token", DEVICE_GRANT],
        }
        async with load.api.post(f"{load.base}/register", json=metadata) as response:
            body = await response.json()
            if response.status != 201:
                raise RuntimeError(f"register: {response.status} {body}")
            ids.append(body["client_id"])
    return ids


async def soak(
    args: argparse.Namespace, procs: Processes, tmp: Path
) -> tuple[list[Sample], dict[str, list[float]], Load]:
    port, up_port = free_port(), free_port()
    if args.upstream == "demo":
        upstream = [sys.executable, str(ROOT / "examples/demo_server.py"), "--port", str(up_port)]
    else:
        upstream = [
            sys.executable,
            str(ROOT / "bench/upstream_stub.py"),
            "--port",
            str(up_port),
            "--sessions",
        ]
    up = procs.start("upstream", upstream)
    await wait_ready(f"http://127.0.0.1:{up_port}/mcp", up, method="POST")
    config = write_config(tmp, port, f"http://127.0.0.1:{up_port}/mcp")
    daemon = procs.start(
        "oauthd", [sys.executable, "-m", "oauthd", "serve", "--config", str(config)]
    )
    base = f"http://127.0.0.1:{port}"
    await wait_ready(f"{base}/readyz", daemon)
    load = Load(base, [], args.pool, args.sse_hold if args.upstream == "demo" else 0.0)
    load.clients = await register_clients(load, args.clients)
    await load.fill()
    rates = Rates().scaled(args.scale)
    if args.upstream != "demo":
        rates.sse = 0.0
    started = time.monotonic()
    end = started + args.duration
    runner = asyncio.create_task(load.run(rates, end))
    samples: list[Sample] = []
    overall: dict[str, list[float]] = {}
    while (now := time.monotonic()) < end:
        await asyncio.sleep(min(args.interval, end - now))
        if daemon.poll() is not None:
            raise RuntimeError(
                f"oauthd exited with {daemon.returncode}:\n{procs.log_tail('oauthd')}"
            )
        sample, window = await take_sample(
            load, daemon.pid, (port, up_port), time.monotonic() - started
        )
        samples.append(sample)
        print(
            f"{sample.t:7.0f} s  rss {sample.rss_mib:6.1f} MiB  fds {sample.fds:4d}  "
            f"records {sum(sample.records.values()):5d}  lag {sample.lag_ms:6.1f} ms  "
            f"requests {sample.requests}",
            file=sys.stderr,
        )
        if sample.t >= args.warmup:
            for e, v in window.items():
                overall.setdefault(e, []).extend(v)
    await runner
    return samples, overall, load


def table(
    args: argparse.Namespace,
    samples: list[Sample],
    overall: dict[str, list[float]],
    load: Load,
    v: Verdict,
    about: str,
) -> str:
    after = [s for s in samples if s.t >= args.warmup] or samples
    rows = [
        ("machine", about),
        (
            "duration / warm-up / interval",
            f"{args.duration:g} s / {args.warmup:g} s / {args.interval:g} s",
        ),
        ("upstream", args.upstream),
        ("requests (all)", f"{load.rec.requests} ({load.rec.requests / args.duration:.1f}/s)"),
        ("5xx / transport errors", f"{load.rec.server_errors} / {load.rec.transport_errors}"),
        (
            "other unexpected answers",
            ", ".join(f"{k}: {n}" for k, n in load.rec.unexpected.items()) or "0",
        ),
        (
            "snapshots / fsyncs",
            f"{samples[-1].snapshots} / {samples[-1].fsyncs}" if samples else "-",
        ),
        (
            "records after warm-up (mean; line's change)",
            f"{v.records_mean:.0f}; {v.records_rise:+.1f}",
        ),
    ]
    for t in v.trends:
        first, last = getattr(after[0], t.name), getattr(after[-1], t.name)
        rows.append(
            (
                f"{t.name} after warm-up: first, last; slope; line's rise (limit)",
                f"{first:.1f}, {last:.1f}; {t.slope_per_h:+.2f}/h; {t.rise:+.2f} ({t.limit:g}) "
                + ("ok" if t.ok else "GROWS"),
            )
        )
    lags = [s.lag_ms for s in after]
    rows.append(
        (
            "loop lag after warm-up: median, max (ms)",
            f"{pct(lags, 0.5):.1f}, {max(lags, default=float('nan')):.1f}",
        )
    )
    for e in ENDPOINTS:
        if overall.get(e):
            rows.append(
                (
                    f"{e}: count, p50, p99 (ms)",
                    f"{len(overall[e])}, {pct(overall[e], 0.5) * 1e3:.1f}, "
                    f"{pct(overall[e], 0.99) * 1e3:.1f}",
                )
            )
    rows.append(
        (
            "verdict",
            "pass"
            if v.ok and not (load.rec.server_errors or load.rec.transport_errors)
            else "FAIL",
        )
    )
    return "\n".join(["| soak | |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)])


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load (600)")
    p.add_argument("--warmup", type=float, help="seconds not judged (max(30, duration/6))")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--out", type=Path, help="where soak.csv and soak.png go (a temp dir)")
    p.add_argument("--upstream", choices=("demo", "stub"), default="demo")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies every rate")
    p.add_argument("--pool", type=int, default=40, help="live grants kept")
    p.add_argument("--clients", type=int, default=4, help="registered apps that log in")
    p.add_argument("--sse-hold", type=float, default=3.0, help="seconds a GET stream stays")
    p.add_argument("--rss-limit", type=float, default=8.0, help="MiB the RSS line may rise")
    p.add_argument("--fds-limit", type=float, default=8.0, help="fds the fd line may rise")
    args = p.parse_args()
    if args.warmup is None:
        args.warmup = max(30.0, args.duration / 6)
    if args.interval * 8 > args.duration - args.warmup:
        args.interval = max(1.0, (args.duration - args.warmup) / 8)
    return args


async def main_async(args: argparse.Namespace) -> int:
    about = machine()
    out = args.out or Path(tempfile.mkdtemp(prefix="oauthd-soak-"))
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="oauthd-soak-state-") as tmp:
        procs = Processes(Path(tmp), pin=False)
        try:
            samples, overall, load = await soak(args, procs, Path(tmp))
        finally:
            procs.stop_all()
    await load.close()
    kinds = sorted({k for s in samples for k in s.records})
    write_csv(out / "soak.csv", samples, kinds, list(ENDPOINTS))
    verdict = judge(samples, args.warmup, args.rss_limit, args.fds_limit)
    title = f"oauthd soak, {args.duration / 60:.0f} min, {time.strftime('%Y-%m-%d', time.gmtime())}"
    plot(out / "soak.png", samples, kinds, list(ENDPOINTS), title, args.warmup)
    print(table(args, samples, overall, load, verdict, about))
    for key, body in load.rec.examples.items():
        print(f"first {key}: {body}", file=sys.stderr)
    print(f"\nCSV and plot: {out}/soak.csv, {out}/soak.png", file=sys.stderr)
    failed = load.rec.server_errors or load.rec.transport_errors or not verdict.ok
    return 1 if failed else 0


def main() -> None:
    sys.exit(asyncio.run(main_async(parse_args())))


if __name__ == "__main__":
    main()
