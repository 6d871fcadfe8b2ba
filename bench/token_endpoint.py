"""Token endpoint benchmark (issue #15 item 1): refresh-grant throughput of oauthd's /token
against FastMCP's in-memory OAuth provider and a minimal aiohttp refresh endpoint.

In one run, all on 127.0.0.1 with free ports:
- `bench/peer/fastmcp_token.py` in its own venv, `bench/.venv-peer` (made on first use
  from `bench/peer/requirements.txt`, which pins FastMCP; never in oauthd's venv);
- `bench/minimal_refresh.py`: rotation, SHA-256 digests in a dict, orjson, nothing else;
- `oauthd serve` with `durability = "journal"` (each answer waits for its journal
  record's fdatasync, group commit) and another with `durability = "snapshot"`, file
  backend, audit records on (the default), state dirs in a temp dir.
Each round runs every target once, in an order rotated by one per round: an unmeasured
warm-up run, then the measured run, each on fresh grants (a run's last answer may be
lost when wrk stops, which a rotating peer would count as reuse next time). The load is
wrk with one thread per client, each holding its own grant and always presenting the
refresh token from its previous answer (a Lua `response` picks it out). Ratios are taken
per round; the table shows the median of each.

Usage:
    .venv/bin/python bench/token_endpoint.py                       # 8 clients, 5 rounds of 5 s
    .venv/bin/python bench/token_endpoint.py --clients 1,8 --rounds 3 --duration 5
    .venv/bin/python bench/token_endpoint.py --hold 60             # then py-spy/perf on the pids

Needs `wrk` (Debian: apt-get install wrk). Prints Markdown on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import aiohttp
from proxy import (
    BENCH,
    FILE_STORAGE,
    REDIRECT_URI,
    WRK_SCRIPT,
    Grant,
    Processes,
    WrkResult,
    free_port,
    fs_type,
    login,
    machine,
    ratio,
    register,
    run_wrk_script,
    start_variant,
    temp_dir,
    wait_ready,
)

PEER_VENV = BENCH / ".venv-peer"
PEER_REQUIREMENTS = BENCH / "peer" / "requirements.txt"
NO_UPSTREAM = "http://127.0.0.1:9/mcp"  # /token never calls the upstream
JOURNAL, SNAPSHOT, FASTMCP, MINIMAL = "oauthd journal", "oauthd snapshot", "FastMCP", "minimal"
# (numerator, denominator, target): the rows of issue #15 item 1, and two for context
RATIOS = [
    (JOURNAL, FASTMCP, 1.5),
    (SNAPSHOT, MINIMAL, 0.8),
    (SNAPSHOT, FASTMCP, None),
    (JOURNAL, MINIMAL, None),
]

REFRESH_LUA = """\
local grants = {%(grants)s}
local threads, n = {}, 0
function setup(thread)
  n = n + 1
  threads[n] = thread
  thread:set("refresh", grants[n][1])
  thread:set("client", grants[n][2])
end
function request()
  return wrk.format("POST", nil, {["Content-Type"] = "application/x-www-form-urlencoded"},
    "grant_type=refresh_token&refresh_token=" .. refresh .. "&client_id=" .. client)
end
function response(status, headers, body)
  if status == 200 then
    refresh = string.match(body, '"refresh_token"%%s*:%%s*"([^"]+)"') or refresh
  end
end
"""

Signer = Callable[[aiohttp.ClientSession, int], Awaitable[list[Grant]]]


@dataclass(slots=True)
class Target:
    name: str
    base: str
    pid: int
    sign_in: Signer


def ensure_peer_venv() -> Path:
    """bench/.venv-peer with the pinned FastMCP, made (or mended) when it lacks it."""
    python = PEER_VENV / "bin" / "python"
    pin = PEER_REQUIREMENTS.read_text().split("==")[1].strip()
    check = [str(python), "-c", f"import fastmcp, sys; sys.exit(fastmcp.__version__ != {pin!r})"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"# making {PEER_VENV} (FastMCP {pin})", file=sys.stderr, flush=True)
    subprocess.run(["python3", "-m", "venv", str(PEER_VENV)], check=True, timeout=300)
    pip = [str(python), "-m", "pip", "install", "-q", "-r", str(PEER_REQUIREMENTS)]
    subprocess.run(pip, check=True, timeout=900)
    return python


def pkce() -> tuple[str, str]:
    import base64
    import hashlib

    verifier = base64.urlsafe_b64encode(os.urandom(40)).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def fastmcp_signer(base: str) -> Signer:
    """FastMCP's in-memory provider answers /authorize with a code at once."""

    async def sign_in(api: aiohttp.ClientSession, n: int) -> list[Grant]:
        client_id = await register(api, base)
        grants = []
        for _ in range(n):
            verifier, challenge = pkce()
            params = {
                "response_type": "code",
                "client_id": client_id,
                "redirect_uri": REDIRECT_URI,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "state": os.urandom(8).hex(),
            }
            async with api.get(f"{base}/authorize", params=params, allow_redirects=False) as r:
                location = r.headers.get("Location", "")
            code = dict(parse_qsl(urlsplit(location).query))["code"]
            form = {
                "grant_type": "authorization_code",
                "code": code,
                "code_verifier": verifier,
                "redirect_uri": REDIRECT_URI,
                "client_id": client_id,
            }
            async with api.post(f"{base}/token", data=form) as response:
                body = await response.json()
                if response.status != 200:
                    raise RuntimeError(f"FastMCP token: {response.status} {body}")
            grants.append(Grant(client_id, body["access_token"], body["refresh_token"]))
        return grants

    return sign_in


def minimal_signer(base: str) -> Signer:
    async def sign_in(api: aiohttp.ClientSession, n: int) -> list[Grant]:
        grants = []
        for _ in range(n):
            async with api.post(f"{base}/seed") as response:
                body = await response.json()
            grants.append(Grant("bench-client", body["access_token"], body["refresh_token"]))
        return grants

    return sign_in


def oauthd_signer(base: str) -> Signer:
    """Logins through oauthd's pages (bench/proxy.py's `login`), one registration."""
    client_ids: list[str] = []

    async def sign_in(api: aiohttp.ClientSession, n: int) -> list[Grant]:
        if not client_ids:
            client_ids.append(await register(api, base))
        return [await login(api, base, client_ids[0]) for _ in range(n)]

    return sign_in


def refresh_run(tmp: Path, target: Target, grants: list[Grant], duration: float) -> WrkResult:
    rows = ", ".join(f'{{"{g.refresh}", "{g.client_id}"}}' for g in grants)
    script = tmp / f"wrk-refresh-{target.name.replace(' ', '-')}.lua"
    script.write_text(REFRESH_LUA % {"grants": rows} + WRK_SCRIPT % {"body": "", "auth": ""})
    n = len(grants)
    url = f"{target.base}/token"
    return run_wrk_script(script, target.name, url, target.pid, n, duration, None, threads=n)


async def start_targets(args: argparse.Namespace, tmp: Path, procs: Processes) -> list[Target]:
    peer = ensure_peer_venv()
    fastmcp_port, minimal_port = free_port(), free_port()
    peer_script = str(BENCH / "peer" / "fastmcp_token.py")
    fastmcp = procs.start("fastmcp", [str(peer), peer_script, "--port", str(fastmcp_port)])
    minimal = procs.start(
        "minimal", [sys.executable, str(BENCH / "minimal_refresh.py"), "--port", str(minimal_port)]
    )
    snapshot_storage = FILE_STORAGE.replace('"journal"', '"snapshot"')

    def profile(name: str) -> str | None:
        return None if args.profile is None else str(Path(args.profile, f"{name}.prof").resolve())

    journal = start_variant(procs, tmp, "journal", NO_UPSTREAM, None, profile("journal"))
    snapshot = start_variant(
        procs, tmp, "snapshot", NO_UPSTREAM, None, profile("snapshot"), storage=snapshot_storage
    )
    fastmcp_base, minimal_base = (
        f"http://127.0.0.1:{fastmcp_port}",
        f"http://127.0.0.1:{minimal_port}",
    )
    await wait_ready(f"{fastmcp_base}/.well-known/oauth-authorization-server", fastmcp)
    await wait_ready(f"{minimal_base}/seed", minimal, "POST")
    for variant in (journal, snapshot):
        await wait_ready(f"{variant.base}/readyz", variant.proc)
    targets = [
        Target(FASTMCP, fastmcp_base, fastmcp.pid, fastmcp_signer(fastmcp_base)),
        Target(MINIMAL, minimal_base, minimal.pid, minimal_signer(minimal_base)),
        Target(JOURNAL, journal.base, journal.proc.pid, oauthd_signer(journal.base)),
        Target(SNAPSHOT, snapshot.base, snapshot.proc.pid, oauthd_signer(snapshot.base)),
    ]
    return [t for t in targets if t.name in args.targets]


Results = dict[tuple[str, int], list[WrkResult]]


async def measure(args: argparse.Namespace, tmp: Path, targets: list[Target]) -> Results:
    results: Results = {}
    jar = aiohttp.DummyCookieJar()
    async with aiohttp.ClientSession(cookie_jar=jar) as api:
        for n in args.clients:
            for round_ in range(args.rounds):
                shift = round_ % len(targets)
                for target in targets[shift:] + targets[:shift]:
                    if args.warmup > 0:
                        grants = await target.sign_in(api, n)
                        refresh_run(tmp, target, grants, args.warmup)
                    grants = await target.sign_in(api, n)
                    r = refresh_run(tmp, target, grants, args.duration)
                    print(
                        f"# {target.name}, {n} clients, round {round_ + 1}: {r.rps:,.0f}/s, "
                        f"p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, "
                        f"CPU {r.user_us:.0f} us user + {r.sys_us:.0f} us system, "
                        f"errors {r.errors}",
                        file=sys.stderr,
                        flush=True,
                    )
                    results.setdefault((target.name, n), []).append(r)
    return results


def report(args: argparse.Namespace, results: Results, about: str, fs: str) -> None:
    print(
        "| clients | target | refresh grants/s | p50 (ms) | p99 (ms) | CPU per refresh (us) "
        "| errors |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|")
    for (name, n), runs in results.items():

        def med(field: str, runs: list[WrkResult] = runs) -> float:
            return statistics.median(getattr(r, field) for r in runs)

        print(
            f"| {n} | {name} | {med('rps'):,.0f} | {med('p50_ms'):.2f} | {med('p99_ms'):.2f} "
            f"| {med('cpu_us'):.0f} | {sum(r.errors for r in runs)} |"
        )
    print("\n| clients | ratio | median | rounds | target |")
    print("|---:|---|---:|---|---|")
    for n in args.clients:
        for top, bottom, goal in RATIOS:
            if (top, n) not in results or (bottom, n) not in results:
                continue
            pairs = zip(results[(top, n)], results[(bottom, n)], strict=True)
            each = [ratio(a.rps, b.rps) for a, b in pairs]
            median = statistics.median(each)
            met = "met" if goal is not None and median >= goal else "MISSED"
            verdict = "-" if goal is None else f">= {goal}x: {met}"
            rounds = ", ".join(f"{x:.2f}" for x in each)
            print(f"| {n} | {top} / {bottom} | {median:.2f}x | {rounds} | {verdict} |")
    after = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    pressure = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    print(
        f"\nwrk, one thread and connection per client, {args.duration:g} s per run after a "
        f"{args.warmup:g} s warm-up run, {args.rounds} rounds (order rotated per round), "
        f"fresh grants per run; state dirs on {fs}.\nMachine: {about}, after {after}; "
        f"CPU pressure after: {pressure}."
    )


async def main_async(args: argparse.Namespace) -> int:
    about = machine()
    print(f"# {about}", file=sys.stderr, flush=True)
    with temp_dir(args.dir) as tmp:
        procs = Processes(tmp, pin=False)
        try:
            targets = await start_targets(args, tmp, procs)
            if args.hold:
                pids = ", ".join(f"{t.name} {t.pid}" for t in targets)
                print(f"# pids: {pids}; holding {args.hold:g} s", file=sys.stderr, flush=True)
            started = time.monotonic()
            results = await measure(args, tmp, targets)
            while time.monotonic() - started < args.hold:
                for key, runs in (await measure(args, tmp, targets)).items():
                    results[key].extend(runs)
        except BaseException:
            procs.print_logs()
            raise
        finally:
            procs.stop_all()
        report(args, results, about, fs_type(tmp))
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="8", help="concurrent refresh clients, e.g. 1,8")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of the warm-up run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where the temp state dirs go")
    parser.add_argument(
        "--hold", type=float, default=0.0, help="keep measuring at least this long (profiling)"
    )
    parser.add_argument(
        "--targets",
        default=",".join((FASTMCP, MINIMAL, JOURNAL, SNAPSHOT)),
        help="which to measure (the ratios need all four)",
    )
    parser.add_argument("--profile", default=None, help="oauthd under cProfile: stats in this dir")
    args = parser.parse_args()
    args.targets = args.targets.split(",")
    args.clients = [int(c) for c in args.clients.split(",") if c]
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
