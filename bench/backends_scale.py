"""Shared backends at a million grants: `oauthd state copy` of a generated file state dir
(bench/scale_state.py: N grants whose tokens the benchmark can recompute) into Redis and
into PostgreSQL, timed; then, per backend, `/mcp` and refresh-grant throughput of one
`oauthd serve` on it, with a cold and with a warm read cache (`storage.cache_size`,
10000 by default); Redis memory per grant (`INFO memory` used_memory before and after the
copy) and PostgreSQL table size per grant (`pg_total_relation_size` of the bench
schema's `oauthd_records`). With `file` in `--backends`, the file backend on the same state
dir is measured as the comparator.

- `/mcp` cold: the instance just started, wrk presents the access tokens of
  `--cold-grants` distinct grants in turn (each request the first for its grant: every
  token check misses the cache and reads the backend);
- `/mcp` warm: the tokens of `--warm-grants` grants (fewer than cache_size), each used
  twice before (a grant's first use writes it, which drops it from the cache);
- refresh cold: `--refresh-clients` clients each refresh grants never touched before,
  one refresh each (a read that misses the cache, then the rotation's write);
- refresh warm: each client refreshes its own grant again and again (bench/proxy.py's
  `refresh_load`: every answer's refresh token is the next request's).

Redis: a redis-server of its own (no persistence; exact memory) unless `--redis-url`; its
keys are under a unique prefix, deleted at the end. PostgreSQL: a unique schema in the
database of `--postgres-dsn`, made by `oauthd migrate`, dropped at the end.

    .venv/bin/python bench/backends_scale.py                      # 1M grants
    .venv/bin/python bench/backends_scale.py --grants 20000 --duration 5 --backends redis
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from backends import (
    cpu_pressure,
    prepare_backend,
    private_redis,
    remove_backend_state,
    storage_section,
)
from proxy import (
    BENCH,
    FILE_STORAGE,
    RPC_BODY,
    Grant,
    Processes,
    free_port,
    machine,
    pct,
    refresh_load,
    temp_dir,
    wait_ready,
    write_config,
)
from scale_state import access_token, client_id, refresh_token

WRK_TOKENS = """\
local tokens, n, i, step = {}, 0, 0, 1
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  thread:set("threads", %(threads)d)
end
function init(args)
  for line in io.lines("%(file)s") do n = n + 1; tokens[n] = line end
  i, step = id, threads
end
function request()
  i = i + step
  if i > n then i = ((i - 1) %% n) + 1 end
  return wrk.format("POST", nil, {
    ["Authorization"] = "Bearer " .. tokens[i],
    ["Content-Type"] = "application/json",
    ["Accept"] = "application/json, text/event-stream"}, '%(body)s')
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\\"requests\\":%%d,\\"duration_us\\":%%d,\\"p50_us\\":%%d,\\"p99_us\\":%%d," ..
    "\\"errors\\":%%d}\\n", summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), e.connect + e.read + e.write + e.status + e.timeout))
end
"""


@dataclass
class Throughput:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cache: str = "-"  # the read cache's hit / miss / stale_skip counts during the row


@dataclass
class Result:
    backend: str
    copy_s: float | None = None
    bytes_per_grant: float | None = None
    ready_s: float | None = None  # from `oauthd serve` to /readyz answering 200
    rows: dict[str, Throughput] = field(default_factory=dict)


def run_wrk_tokens(
    tmp: Path, url: str, tokens: list[str], args: argparse.Namespace, duration: float
) -> Throughput:
    listing = tmp / "tokens.txt"
    listing.write_text("\n".join(tokens) + "\n")
    script = tmp / "tokens.lua"
    script.write_text(WRK_TOKENS % {"threads": args.threads, "file": listing, "body": RPC_BODY})
    argv = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration:g}s"]
    argv += ["--timeout", "5s", "--latency", "-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 120)
    line = next((x for x in out.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    r = json.loads(line.removeprefix("WRKJSON "))
    return Throughput(
        r["requests"] / (r["duration_us"] / 1e6), r["p50_us"] / 1e3, r["p99_us"] / 1e3, r["errors"]
    )


async def refresh_cold(
    base: str, first: int, last: int, clients: int, duration: float
) -> Throughput:
    """`clients` loops, each refreshing the next never-touched grant (one refresh each)."""
    latencies: list[float] = []
    errors = 0
    nxt = first
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as http:
        started = time.perf_counter()
        end = started + duration

        async def client() -> None:
            nonlocal errors, nxt
            while (t := time.perf_counter()) < end and nxt < last:
                i, nxt = nxt, nxt + 1
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": refresh_token(i),
                    "client_id": client_id(i),
                }
                async with http.post(f"{base}/token", data=form) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - t)

        await asyncio.wait_for(asyncio.gather(*(client() for _ in range(clients))), duration + 60)
        elapsed = time.perf_counter() - started
    return Throughput(
        len(latencies) / elapsed, pct(latencies, 0.5) * 1e3, pct(latencies, 0.99) * 1e3, errors
    )


async def touch(url: str, tokens: list[str], rounds: int, clients: int = 8) -> None:
    """Use each token `rounds` times: the first use of a grant writes it (marked used,
    which drops it from the cache), the next one leaves it cached."""
    queue = [t for _ in range(rounds) for t in tokens]
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    async with aiohttp.ClientSession() as http:

        async def client() -> None:
            while queue:
                auth = {"Authorization": f"Bearer {queue.pop()}"}
                async with http.post(url, data=RPC_BODY, headers=headers | auth) as response:
                    await response.read()

        await asyncio.gather(*(client() for _ in range(clients)))


async def cache_counts(base: str) -> dict[str, int]:
    """`oauthd_store_cache_requests_total` by result (empty without a read cache)."""
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as response:
        text = await response.text()
    found = re.findall(
        r'^oauthd_store_cache_requests_total\{result="(\w+)"\} ([0-9.e+]+)$', text, re.M
    )
    return {result: int(float(value)) for result, value in found}


async def counted(base: str, row: Any, counts: bool) -> Throughput:
    """Run `row()` (a Throughput), with the cache's counts during it if `counts`, from
    /metrics, and how long the slower of the two scrapes took (at 1M grants on Redis one
    took 165 s while the record counts were a SCAN per kind; now one census, waited for at
    most 1 s)."""
    if not counts:
        result: Throughput = await row()
        return result
    started = time.perf_counter()
    before = await cache_counts(base)
    first = time.perf_counter() - started
    result = await row()
    started = time.perf_counter()
    after = await cache_counts(base)
    slower = max(first, time.perf_counter() - started)
    if after:
        result.cache = " / ".join(str(after[k] - before.get(k, 0)) for k in after)
    result.cache += f" (scrape {slower:.2f} s)"
    return result


async def measure(
    tmp: Path, base: str, pid: int, args: argparse.Namespace
) -> dict[str, Throughput]:
    """The four rows, on a freshly started instance: cold ones first. Grant index ranges:
    [0, warm) warm /mcp, [warm, warm + cold) cold /mcp, from there on cold refreshes, the
    last `refresh_clients` grants warm refreshes (each backend its own copy of them all)."""
    warm, cold, c = args.warm_grants, args.cold_grants, args.cache_counts
    url = f"{base}/mcp"
    rows = {}
    cold_tokens = [access_token(i) for i in range(warm, warm + cold)]
    warm_tokens = [access_token(i) for i in range(warm)]

    async def wrk(tokens: list[str], duration: float) -> Throughput:
        return await asyncio.to_thread(run_wrk_tokens, tmp, url, tokens, args, duration)

    rows["/mcp, cold cache"] = await counted(base, lambda: wrk(cold_tokens, args.duration), c)
    await touch(url, warm_tokens, rounds=2)
    rows["/mcp, warm cache"] = await counted(base, lambda: wrk(warm_tokens, args.duration), c)
    first, last = warm + cold, args.grants - args.refresh_clients
    rows["refresh, cold cache"] = await counted(
        base, lambda: refresh_cold(base, first, last, args.refresh_clients, args.duration), c
    )
    own = [Grant(client_id(i), "", refresh_token(i)) for i in range(last, args.grants)]

    async def warm_refresh() -> Throughput:
        r = await refresh_load(base, own, args.duration, max(1.0, args.duration / 5), pid)
        return Throughput(r.rps, r.p50_ms, r.p99_ms, r.errors)

    rows["refresh, warm cache"] = await counted(base, warm_refresh, c)
    return rows


# -- the backends ------------------------------------------------------------------------------


def run_oauthd(argv: list[str], timeout: float) -> tuple[float, str]:
    """An `oauthd` command to its end: (wall seconds, its output's tail)."""
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "oauthd", *argv], capture_output=True, text=True, timeout=timeout
    )
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(f"oauthd {argv[0]}: {out.returncode}\n{out.stdout}\n{out.stderr}")
    return wall, (out.stdout + out.stderr)[-400:]


def backend_bytes(backend: str, handle: Any, tag: str) -> float:
    """Redis: used_memory of the whole server; PostgreSQL: the bench schema's table."""
    if backend == "redis":
        return float(handle.info("memory")["used_memory"])
    row = handle.execute(
        "SELECT pg_total_relation_size(%s)", (f'"{tag}".oauthd_records',)
    ).fetchone()
    return float(row[0])


@dataclass
class Copied:
    """A shared backend holding the copied state, until `clean()`."""

    result: Result
    config: Path
    clean: Any


async def copy_into(
    tmp: Path, args: argparse.Namespace, backend: str, ports: tuple[int, str]
) -> Copied:
    """The state copied into `backend` (the copies of several backends run at once)."""
    port, upstream = ports
    here = tmp / backend
    (here / "state").mkdir(mode=0o700, parents=True)
    login = f'encryption_key = "file:{tmp / "encryption.key"}"\n'
    tag = f"oauthd_scale_{os.urandom(6).hex()}"
    config = write_config(here, port, upstream, storage_section(backend, args, tag), login)
    _, handle = prepare_backend(backend, args, tag)
    copied = Copied(Result(backend), config, lambda: remove_backend_state(backend, handle, tag))
    if backend == "postgres":
        await asyncio.to_thread(run_oauthd, ["migrate", "--config", str(config)], 120)
    before = backend_bytes(backend, handle, tag)
    print(f"# {backend}: copying {args.grants:,} grants", file=sys.stderr, flush=True)
    # each copy holds its source's lock: copies at once need a source each
    source = tmp / f"source-{backend}"
    await asyncio.to_thread(shutil.copytree, tmp / "source", source)
    argv = ["state", "copy", "--from", str(source / "oauthd.toml"), "--to", str(config)]
    copied.result.copy_s, tail = await asyncio.to_thread(run_oauthd, argv, args.copy_timeout)
    print(
        f"# {backend}: copied in {copied.result.copy_s:.1f} s: {tail.strip()[-200:]}",
        file=sys.stderr,
    )
    copied.result.bytes_per_grant = (backend_bytes(backend, handle, tag) - before) / args.grants
    return copied


async def wait_ready_long(url: str, child: Any, limit: float) -> float:
    """Seconds until `url` answers 200 (`limit` at most)."""
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        while time.monotonic() - started < limit:
            if child.poll() is not None:
                raise RuntimeError(f"{url}: the process exited with {child.returncode}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(url) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url}: not ready within {limit:g} s")


async def serve_and_measure(
    tmp: Path,
    procs: Processes,
    args: argparse.Namespace,
    config: Path,
    result: Result,
    port: int,
) -> Result:
    name = f"oauthd-{result.backend}"
    child = procs.start(name, [sys.executable, "-m", "oauthd", "serve", "--config", str(config)])
    try:
        base = f"http://127.0.0.1:{port}"
        result.ready_s = await wait_ready_long(f"{base}/readyz", child, args.copy_timeout)
        print(f"# {result.backend}: ready after {result.ready_s:.1f} s", file=sys.stderr)
        print(f"# {result.backend}: serving, measuring", file=sys.stderr, flush=True)
        result.rows = await measure(tmp, base, child.pid, args)
        for row, t in result.rows.items():
            print(
                f"#   {row}: {t.rps:,.0f}/s, p99 {t.p99_ms:.1f} ms, errors {t.errors}",
                file=sys.stderr,
            )
    finally:
        procs.stop(name)
    return result


# -- the run ------------------------------------------------------------------------------------


def generate(tmp: Path, args: argparse.Namespace, port: int, upstream: str) -> dict[str, Any]:
    """The source: a file backend config whose state dir holds the generated grants."""
    source = tmp / "source"
    source.mkdir()
    write_config(
        source, port, upstream, FILE_STORAGE, f'encryption_key = "file:{tmp}/encryption.key"\n'
    )
    if args.state:
        shutil.copytree(args.state, source / "state")
        return {"reused": str(args.state)}
    resource = f"http://127.0.0.1:{port}/mcp"
    argv = [sys.executable, str(BENCH / "scale_state.py"), str(source / "state")]
    argv += ["--grants", str(args.grants), "--resource", resource]
    t = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=args.copy_timeout)
    if out.returncode != 0:
        raise RuntimeError(f"scale_state.py: {out.returncode}\n{out.stderr[-2000:]}")
    made: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    made["wall_s"] = time.perf_counter() - t
    return made


async def main_async(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        print("bench/backends_scale.py: wrk not found", file=sys.stderr)
        return 2
    about = f"{machine()}, CPU pressure {cpu_pressure()}"
    results: list[Result] = []
    with temp_dir(args.dir) as tmp:
        procs = Processes(tmp, pin=False)
        key = tmp / "encryption.key"
        key.write_text(os.urandom(32).hex())
        key.chmod(0o600)
        try:
            port, stub_port = free_port(), free_port()
            upstream = f"http://127.0.0.1:{stub_port}/mcp"
            stub = [sys.executable, str(BENCH / "upstream_stub.py"), "--port", str(stub_port)]
            await wait_ready(upstream, procs.start("stub", stub), "POST")
            if "redis" in args.backends and not args.redis_url:
                args.redis_url = private_redis(procs)
            made = generate(tmp, args, port, upstream)
            print(f"# state: {made}", file=sys.stderr, flush=True)
            shared = [b for b in args.backends if b != "file"]
            copies = await asyncio.gather(
                *(copy_into(tmp, args, b, (port, upstream)) for b in shared), return_exceptions=True
            )
            try:
                for c in copies:
                    if isinstance(c, BaseException):
                        raise c
                for c in copies:
                    results.append(
                        await serve_and_measure(tmp, procs, args, c.config, c.result, port)
                    )
            finally:
                for c in copies:
                    if not isinstance(c, BaseException):
                        c.clean()
            if "file" in args.backends:
                source = tmp / "source" / "oauthd.toml"
                results.append(
                    await serve_and_measure(tmp, procs, args, source, Result("file"), port)
                )
        except BaseException:
            procs.print_logs()
            raise
        finally:
            procs.stop_all()
    report(args, about, made, results)
    return 0


def report(
    args: argparse.Namespace, about: str, made: dict[str, Any], results: list[Result]
) -> None:
    print(f"Machine: {about}; {args.grants:,} grants; wrk {args.connections} connections,")
    print(f"{args.threads} threads; {args.refresh_clients} refresh clients;")
    print(f"{args.duration:g} s per row; cold /mcp over {args.cold_grants:,} grants,")
    print(f"warm over {args.warm_grants:,}; state {made}\n")
    print(
        "| backend | copy (s) | copy (grants/s) | bytes per grant | ready (s) | row | req/s "
        "| p50 (ms) | p99 (ms) | errors | cache hit / miss / stale_skip |"
    )
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|")
    for r in results:
        copy = f"{r.copy_s:.1f}" if r.copy_s is not None else "-"
        rate = f"{args.grants / r.copy_s:,.0f}" if r.copy_s else "-"
        size = f"{r.bytes_per_grant:,.0f}" if r.bytes_per_grant is not None else "-"
        for i, (row, t) in enumerate(r.rows.items()):
            ready = f"{r.ready_s:.1f}" if r.ready_s is not None else "-"
            head = (r.backend, copy, rate, size, ready) if i == 0 else ("",) * 5
            cells = f"{t.rps:,.0f} | {t.p50_ms:.2f} | {t.p99_ms:.2f} | {t.errors} | {t.cache}"
            print(f"| {' | '.join(head)} | {row} | {cells} |")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--grants", type=int, default=1_000_000)
    p.add_argument("--backends", default="redis,postgres", help="of file, redis, postgres")
    p.add_argument("--state", type=Path, help="a state dir made by scale_state.py (same port!)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per row")
    p.add_argument("--connections", type=int, default=8, help="wrk connections")
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--refresh-clients", type=int, default=8)
    p.add_argument("--cold-grants", type=int, default=100_000)
    p.add_argument("--warm-grants", type=int, default=1_000)
    p.add_argument(
        "--cache-counts", action="store_true", help="read cache hits per row (slow at 1M)"
    )
    p.add_argument("--redis-url", default="", help="default: a redis-server of its own")
    p.add_argument("--postgres-dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--copy-timeout", type=float, default=3600.0, help="seconds per copy")
    p.add_argument("--dir", help="where the temp dir goes")
    args = p.parse_args()
    args.backends = [b for b in ("redis", "postgres", "file") if b in args.backends.split(",")]
    if args.warm_grants + args.cold_grants + 2 * args.refresh_clients > args.grants:
        p.error("--grants must exceed --warm-grants + --cold-grants + the refresh grants")
    return args


def main() -> None:
    sys.exit(asyncio.run(main_async(parse_args())))


if __name__ == "__main__":
    main()
