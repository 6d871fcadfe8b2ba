"""Backend benchmark: token-checked `/mcp` throughput of oauthd on the `file` backend
against `redis` and `postgres`, all in one run.

In one run, all on 127.0.0.1 with free ports picked at start:
- `bench/upstream_stub.py --sessions`: the upstream (a fixed JSON-RPC answer; an
  `initialize` also gets a fresh `Mcp-Session-Id`);
- a `redis-server` of its own (no persistence), unless `--redis-url` names one;
- three `oauthd serve`, one per backend, each on a temp config with `login.encryption_key`
  set (a 32-byte key in a temp file, `file:PATH`) and the stub as `upstream.url`:
  file (a temp state dir, `durability = "journal"`, as in bench/proxy.py), redis (a unique
  `storage.redis_prefix`, its keys deleted at the end) and postgres (a unique schema in the
  database of `--postgres-dsn`, made by `oauthd migrate`, dropped at the end).
On each, the script logs in over HTTP as a client would (bench/proxy.py's `login`) and
opens one MCP session (an `initialize` through oauthd, which binds the session id to the
grant). Then wrk POSTs a JSON-RPC `tools/call` with the bearer token, in two variants:
"token" (no session header: one grant read per request) and "token+session" (with the
`Mcp-Session-Id`: a session binding read as well). At each connection count, each round
runs every variant on every backend, back to back, the backends' order rotating from round
to round; each row after an unmeasured warm-up.

Reported per row: requests/s, p50/p99, the ratio to the file backend's requests/s in the
same round (median over rounds), CPU per request of the oauthd process and of the backend
server (from /proc: the redis-server process; the PostgreSQL backends of oauthd's pool,
found by their application_name, not the server's own processes such as the WAL writer;
only processes alive at both ends of the window count), and the store operations per request:
Redis GET / SET+GETDEL+EVALSHA calls from `INFO commandstats` (server-wide: exact only on
the private server), PostgreSQL scans / written rows of the bench schema's table from
`pg_stat_user_tables`.

Usage:
    .venv/bin/python bench/backends.py                    # 8 and 64 connections, 3 x 10 s
    .venv/bin/python bench/backends.py --rounds 2 --duration 8
    .venv/bin/python bench/backends.py --backends file,redis --variants token
    .venv/bin/python bench/backends.py --backends file,redis,redis-nocache,postgres,postgres-nocache
    .venv/bin/python bench/backends.py --profile /tmp/prof    # oauthd under cProfile
    .venv/bin/python bench/backends.py --py-spy /tmp/spy      # then one py-spy pass each

`redis-nocache` and `postgres-nocache` (not run by default) are the same backends with
`storage.cache_size = 0`: the read cache of grants and MCP session bindings off, to compare
with and without it in one run.

Needs `wrk` (Debian: apt-get install wrk), `redis-server` (it starts one of its own on a
free port, without persistence, unless `--redis-url` names one) and PostgreSQL
(`--postgres-dsn`; the role must be allowed to create a schema). Prints a
Markdown table on stdout, progress on stderr. Every step is bounded in time; the
processes it started are stopped, the keys and the schema it made removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from proxy import (
    BENCH,
    FILE_STORAGE,
    RPC_BODY,
    TICK,
    Processes,
    WrkResult,
    free_port,
    login,
    machine,
    register,
    run_wrk,
    temp_dir,
    wait_ready,
    write_config,
)

TARGET = 0.6  # requests/s of a shared backend vs the file backend
BACKENDS = ("file", "redis", "postgres")
KNOWN = ("file", "redis", "redis-nocache", "postgres", "postgres-nocache")
VARIANTS = ("token", "token+session")
INITIALIZE = (
    '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18",'
    '"capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}'
)


# -- the backend servers: CPU and operation counters ---------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def _ticks(pids: list[int]) -> dict[int, int]:
    """utime + stime of each process still there, in clock ticks."""
    out = {}
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            out[pid] = int(fields[11]) + int(fields[12])
    return out


@dataclass
class Server:
    """What a backend costs outside oauthd: its server processes and operation counts."""

    pids: Callable[[], list[int]] = list
    counters: Callable[[], dict[str, int]] = dict
    settle: float = 0.0  # seconds before reading the counters (stats flushed late)


def cpu_window(server: Server) -> Callable[[], float]:
    """Start measuring the server's CPU; the returned function gives the seconds used
    since, by the processes present at both ends."""
    before = _ticks(server.pids())

    def used() -> float:
        after = _ticks(list(before))
        return sum(after[p] - before[p] for p in after) / TICK

    return used


def redis_server(url: str) -> tuple[Server, Any]:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    pid = int(client.info("server")["process_id"])
    local = Path(f"/proc/{pid}/stat").exists()

    def counters() -> dict[str, int]:
        stats = client.info("commandstats")
        calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
        return {
            "reads": calls.get("get", 0),
            "writes": calls.get("set", 0) + calls.get("getdel", 0) + calls.get("evalsha", 0),
        }

    return Server(pids=(lambda: [pid]) if local else list, counters=counters), client


def private_redis(procs: Processes) -> str:
    """A redis-server of our own (no persistence), so that its CPU and command counts are
    this benchmark's alone; its URL."""
    import redis

    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    child = procs.start("redis-server", [*argv, "--appendonly", "no"])
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and child.poll() is None:
        with contextlib.suppress(redis.RedisError):
            redis.Redis.from_url(url, socket_timeout=1).ping()
            return url
        time.sleep(0.1)
    raise RuntimeError(f"redis-server on port {port} did not start")


def postgres_server(dsn: str, schema: str) -> tuple[Server, Any]:
    import psycopg

    conn = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    fields = _stat_fields(int(row[0])) if row else None
    local = fields is not None and Path(f"/proc/{fields[1]}/stat").exists()

    def pids() -> list[int]:
        """The server processes of oauthd's pooled connections (application_name = the
        schema's name). Not the server's own processes (WAL writer, checkpointer,
        autovacuum): on a shared server they mostly work for other clients."""
        if not local:
            return []
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (schema,)
        ).fetchall()
        return [int(r[0]) for r in rows]

    def counters() -> dict[str, int]:
        found = conn.execute(
            "SELECT coalesce(idx_scan, 0) + seq_scan, n_tup_ins + n_tup_upd + n_tup_del "
            "FROM pg_stat_user_tables WHERE schemaname = %s AND relname = 'oauthd_records'",
            (schema,),
        ).fetchone()
        return {"reads": int(found[0]), "writes": int(found[1])} if found else {}

    return Server(pids=pids, counters=counters, settle=1.1), conn


# -- one oauthd per backend ------------------------------------------------------------------


@dataclass
class Instance:
    backend: str
    pid: int
    base: str
    server: Server
    bearer: str = ""
    session_id: str = ""
    cleanup: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class Row:
    wrk: WrkResult
    server_cpu_us: float | None
    ops: dict[str, float]


def engine(backend: str) -> str:
    """The storage backend of a bench backend ("redis-nocache" -> "redis")."""
    return backend.removesuffix("-nocache")


def storage_section(backend: str, args: argparse.Namespace, tag: str) -> str:
    """The [storage] section; `path` (made by the caller) holds the admin socket only."""
    cache = "cache_size = 0\n" if backend.endswith("-nocache") else ""
    return _storage_section(engine(backend), args, tag) + cache


def _storage_section(backend: str, args: argparse.Namespace, tag: str) -> str:
    if backend == "redis":
        return (
            f'backend = "redis"\npath = "state"\nredis_url = {json.dumps(args.redis_url)}\n'
            f'redis_prefix = "{tag}:"\n'
        )
    if backend == "postgres":
        from psycopg.conninfo import make_conninfo

        dsn = make_conninfo(
            args.postgres_dsn, options=f"-c search_path={tag}", application_name=tag
        )
        return f'backend = "postgres"\npath = "state"\npostgres_dsn = {json.dumps(dsn)}\n'
    return FILE_STORAGE


def prepare_backend(backend: str, args: argparse.Namespace, tag: str) -> tuple[Server, Any]:
    """Reach the server (and make the PostgreSQL schema); the server's counters."""
    backend = engine(backend)
    if backend == "redis":
        return redis_server(args.redis_url)
    if backend == "postgres":
        server, conn = postgres_server(args.postgres_dsn, tag)
        conn.execute(f'CREATE SCHEMA "{tag}"')
        return server, conn
    return Server(), None


def remove_backend_state(backend: str, handle: Any, tag: str) -> None:
    backend = engine(backend)
    if backend == "redis":
        keys = list(handle.scan_iter(match=f"{tag}:*", count=500))
        for start in range(0, len(keys), 500):
            handle.delete(*keys[start : start + 500])
        print(f"# redis: deleted {len(keys)} keys under {tag}:", file=sys.stderr)
        handle.close()
    elif backend == "postgres":
        handle.execute(f'DROP SCHEMA IF EXISTS "{tag}" CASCADE')
        print(f"# postgres: dropped schema {tag}", file=sys.stderr)
        handle.close()


async def open_session(base: str, bearer: str) -> str:
    """An MCP `initialize` through oauthd: the upstream's session id, now bound."""
    headers = {
        "Authorization": f"Bearer {bearer}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base}/mcp", data=INITIALIZE, headers=headers) as response,
    ):
        await response.read()
        session_id = response.headers.get("Mcp-Session-Id")
        if response.status != 200 or not session_id:
            raise RuntimeError(f"initialize: {response.status}, session id {session_id!r}")
        return session_id


# -- measuring ---------------------------------------------------------------------------------


def measure(
    tmp: Path, inst: Instance, variant: str, connections: int, args: argparse.Namespace
) -> Row:
    name = f"{inst.backend}-{variant}"
    headers = {"Mcp-Session-Id": inst.session_id} if "session" in variant else None
    load = (tmp, name, f"{inst.base}/mcp", inst.pid, inst.bearer, connections, args.threads)
    if args.warmup > 0:
        run_wrk(*load, args.warmup, None, headers)
    time.sleep(inst.server.settle)
    ops0 = inst.server.counters()
    server_cpu = cpu_window(inst.server)
    r = run_wrk(*load, args.duration, None, headers)
    used = server_cpu()
    time.sleep(inst.server.settle)
    ops1 = inst.server.counters()
    per = max(1, r.requests)
    return Row(
        wrk=r,
        server_cpu_us=used / per * 1e6 if inst.server.pids() else None,
        ops={k: (ops1[k] - ops0[k]) / per for k in ops1 if k in ops0},
    )


def py_spy_pass(tmp: Path, inst: Instance, variant: str, args: argparse.Namespace) -> None:
    """One unmeasured wrk row with py-spy sampling oauthd (collapsed stacks to a file)."""
    out = Path(args.py_spy) / f"{inst.backend}-{variant}.txt"
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    argv = [spy, "record", "--nonblocking", "-r", "250", "--format", "raw", "-o", str(out)]
    argv += ["--duration", f"{max(1, int(args.duration))}", "--pid", str(inst.pid)]
    sampler = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        headers = {"Mcp-Session-Id": inst.session_id} if "session" in variant else None
        connections = int(args.connections.split(",")[0])
        load = (tmp, "spy", f"{inst.base}/mcp", inst.pid, inst.bearer, connections, args.threads)
        run_wrk(*load, args.duration, None, headers)
        sampler.wait(args.duration + 30)
    finally:
        if sampler.poll() is None:
            sampler.kill()
            sampler.wait(5)
    print(f"# py-spy: {out}", file=sys.stderr, flush=True)


def rotated(items: list[Instance], by: int) -> list[Instance]:
    by %= len(items)
    return items[by:] + items[:by]


async def start_instances(
    tmp: Path,
    procs: Processes,
    args: argparse.Namespace,
    backends: list[str],
    upstream: str,
    instances: list[Instance],
) -> None:
    """One logged-in oauthd per backend, appended to `instances` as soon as it has
    something to clean up (so that a failure half-way still cleans up)."""
    key = tmp / "encryption.key"
    key.write_text(os.urandom(32).hex())
    key.chmod(0o600)
    login_section = f'encryption_key = "file:{key}"\n'
    py = sys.executable
    for backend in backends:
        tag = f"oauthd_bench_{os.urandom(6).hex()}"
        here = tmp / backend
        here.mkdir()
        if backend != "file":
            (here / "state").mkdir(mode=0o700)
        port = free_port()
        config = write_config(
            here, port, upstream, storage_section(backend, args, tag), login_section
        )
        server, handle = prepare_backend(backend, args, tag)
        inst = Instance(backend, 0, f"http://127.0.0.1:{port}", server)
        inst.cleanup.append(lambda b=backend, h=handle, t=tag: remove_backend_state(b, h, t))
        instances.append(inst)
        if engine(backend) == "postgres":
            migrate = await asyncio.create_subprocess_exec(
                *[py, "-m", "oauthd", "migrate", "--config", str(config)],
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            try:
                output, _ = await asyncio.wait_for(migrate.communicate(), 60)
            except TimeoutError:
                migrate.kill()
                raise
            if migrate.returncode != 0:
                raise RuntimeError(f"oauthd migrate: {migrate.returncode} {output.decode()}")
        serve = ["-m", "oauthd", "serve", "--config", str(config)]
        if args.profile:
            serve = ["-m", "cProfile", "-o", f"{args.profile}/oauthd-{backend}.prof", *serve]
        child = procs.start(f"oauthd-{backend}", [py, *serve])
        inst.pid = child.pid
        await wait_ready(f"{inst.base}/readyz", child)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as api:
            client_id = await register(api, inst.base)
            inst.bearer = (await login(api, inst.base, client_id)).access
        inst.session_id = await open_session(inst.base, inst.bearer)
        print(f"# {backend}: oauthd pid {inst.pid}, logged in, session open", file=sys.stderr)


async def main_async(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        print("bench/backends.py: wrk not found (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    connections = [int(c) for c in args.connections.split(",")]
    backends = [b for b in KNOWN if b in args.backends.split(",")]
    variants = [v for v in VARIANTS if v in args.variants.split(",")]
    about = f"{machine()}, CPU pressure {cpu_pressure()}"
    results: dict[tuple[int, str, str], list[Row]] = {}
    instances: list[Instance] = []
    with temp_dir(args.dir) as tmp:
        procs = Processes(tmp, pin=False)
        try:
            stub_port = free_port()
            upstream = f"http://127.0.0.1:{stub_port}/mcp"
            stub_argv = [sys.executable, str(BENCH / "upstream_stub.py"), "--sessions"]
            stub = procs.start("stub", [*stub_argv, "--port", str(stub_port)])
            await wait_ready(upstream, stub, "POST")
            args.private_redis = False
            if "redis" in map(engine, backends) and not args.redis_url:
                if shutil.which("redis-server"):
                    args.redis_url = private_redis(procs)
                    args.private_redis = True
                else:
                    args.redis_url = "redis://127.0.0.1:6379/0"
            print(f"# redis at {args.redis_url}", file=sys.stderr, flush=True)
            await start_instances(tmp, procs, args, backends, upstream, instances)
            for c in connections:
                for rnd in range(args.rounds):
                    for variant in variants:
                        for inst in rotated(instances, rnd):
                            print(
                                f"# round {rnd + 1}, {c} connections, {variant}, {inst.backend}",
                                file=sys.stderr,
                                flush=True,
                            )
                            row = measure(tmp, inst, variant, c, args)
                            r = row.wrk
                            ops = ", ".join(
                                f"{k} {v:.3f}/request ({v * r.requests:.0f})"
                                for k, v in row.ops.items()
                            )
                            server = (
                                f", server {row.server_cpu_us:.0f} us"
                                if row.server_cpu_us is not None
                                else ""
                            )
                            print(
                                f"#   {r.rps:,.0f} req/s, p50 {r.p50_ms:.2f} ms, p99 "
                                f"{r.p99_ms:.2f} ms, CPU/request oauthd {r.cpu_us:.0f} us "
                                f"(user {r.user_us:.0f} + system {r.sys_us:.0f})"
                                f"{server}, store ops {ops}, errors {r.errors}",
                                file=sys.stderr,
                                flush=True,
                            )
                            results.setdefault((c, variant, inst.backend), []).append(row)
            if args.py_spy:
                for variant in variants:
                    for inst in instances:
                        py_spy_pass(tmp, inst, variant, args)
            for inst in instances:
                code = procs.stop(f"oauthd-{inst.backend}")
                if code != 0:
                    print(procs.log_tail(f"oauthd-{inst.backend}"), file=sys.stderr)
                    raise RuntimeError(f"oauthd ({inst.backend}) exited with {code}")
        except BaseException:
            procs.print_logs()
            raise
        finally:
            for inst in instances:  # first oauthd, then its state, then the servers
                procs.stop(f"oauthd-{inst.backend}")
                for clean in inst.cleanup:
                    try:
                        clean()
                    except Exception as exc:
                        print(f"# cleanup of {inst.backend} failed: {exc}", file=sys.stderr)
            procs.stop_all()

    report(args, about, connections, variants, backends, results)
    return 0


def cpu_pressure() -> str:
    """The share of time some task waited for a CPU, last 60 s (/proc/pressure/cpu)."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        fields = dict(f.split("=") for f in line.split()[1:])
        return f"{float(fields['avg60']):.0f} %"
    return "?"


# -- the table ---------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(
    args: argparse.Namespace,
    about: str,
    connections: list[int],
    variants: list[str],
    backends: list[str],
    results: dict[tuple[int, str, str], list[Row]],
) -> None:
    print(
        "| connections | request | backend | req/s | vs file | p50 / p99 (ms) "
        "| CPU/request oauthd (us) | CPU/request server (us) | oauthd + server vs file "
        "| store reads / writes per request | errors |"
    )
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in connections:
        for variant in variants:
            base = results.get((c, variant, "file"), [])
            for backend in backends:
                rows = results[(c, variant, backend)]
                w = [row.wrk for row in rows]
                # Rounds pair up: the ratio is taken per round, then the median shown.
                ratios = [r.wrk.rps / f.wrk.rps for r, f in zip(rows, base, strict=False)]
                total = [
                    (r.wrk.cpu_us + (r.server_cpu_us or 0.0))
                    / (f.wrk.cpu_us + (f.server_cpu_us or 0.0))
                    for r, f in zip(rows, base, strict=False)
                ]
                ratio = _median(ratios)
                miss = " (miss)" if backend != "file" and ratio < TARGET else ""
                server = [r.server_cpu_us for r in rows if r.server_cpu_us is not None]
                ops = [r.ops for r in rows if r.ops]
                reads = _median([o.get("reads", 0.0) for o in ops])
                writes = _median([o.get("writes", 0.0) for o in ops])
                print(
                    f"| {c} | {variant} | {backend} | {_median([r.rps for r in w]):,.0f} "
                    f"| {ratio:.2f}x{miss} "
                    f"| {_median([r.p50_ms for r in w]):.2f} / "
                    f"{_median([r.p99_ms for r in w]):.2f} "
                    f"| {_median([r.cpu_us for r in w]):.0f} "
                    f"| {f'{_median(server):.0f}' if server else '-'} "
                    f"| {_median(total):.2f}x "
                    f"| {f'{reads:.2f} / {writes:.4f}' if ops else '-'} "
                    f"| {sum(r.errors for r in w)} |"
                )
    rounds = f", median of {args.rounds} rounds" if args.rounds > 1 else ""
    redis_where = (
        "Redis: a redis-server of the bench's own, no persistence"
        if args.private_redis
        else f"Redis at {args.redis_url}, shared: its counts include other clients'"
    )
    after = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(
        f"\nwrk {args.threads} threads, {args.duration:g} s per row after a {args.warmup:g} s "
        f"warm-up{rounds}; backends alternating, their order rotated each round; POST /mcp "
        f'with a {len(RPC_BODY)}-byte JSON-RPC body and the bearer token ("token+session": '
        'also an Mcp-Session-Id bound to the grant). "vs file": requests/s over the file '
        f"backend's in the same round (target >= {TARGET:g}x). CPU per request: user + system "
        "time from /proc of the oauthd process and of the backend server (redis-server; "
        "the PostgreSQL backends of oauthd's pool), over the requests. "
        "Store reads / writes: Redis GET / SET+GETDEL+EVALSHA calls (INFO commandstats), "
        "PostgreSQL scans / inserted+updated+deleted rows of the bench schema's table "
        f"(pg_stat_user_tables). {redis_where}; pools as configured by default (redis 20, "
        "postgres 10 connections)."
        f"\n\nMachine: {about} before; after: load average {after}, CPU pressure "
        f"{cpu_pressure()}; no CPU pinning."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", default="8,64", help="wrk connection counts")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk row")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured wrk seconds first")
    parser.add_argument("--rounds", type=int, default=3, help="rows per case (median)")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--redis-url", default="", help="default: a redis-server of its own (else port 6379)"
    )
    parser.add_argument("--postgres-dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--dir", default=None, help="where the temp state dir goes")
    parser.add_argument("--profile", default=None, help="dir: each oauthd under cProfile")
    parser.add_argument("--py-spy", default=None, help="dir: a py-spy pass per backend at the end")
    args = parser.parse_args()
    for name in ("profile", "py_spy"):
        if getattr(args, name):
            setattr(args, name, str(Path(getattr(args, name)).resolve()))
    for where in (args.profile, args.py_spy):
        if where:
            Path(where).mkdir(parents=True, exist_ok=True)
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
