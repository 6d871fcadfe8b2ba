"""Instructions per refresh grant: oauthd (journal and snapshot durability), FastMCP's
in-memory provider and the minimal aiohttp endpoint, counted by valgrind's callgrind, so
that the numbers do not depend on what else the machine is doing (wall clock and CPU time
on this shared VM move by 2x with the load; see docs/performance.md).

One run starts the four servers of bench/token_endpoint.py, each under `valgrind
--tool=callgrind --instr-atstart=no`, signs in `--concurrency` grants per server, sends
`--warmup` unmeasured refreshes, switches instrumentation on (`callgrind_control -i on`),
sends `--requests` refreshes from `--concurrency` aiohttp clients (each rotating its own
grant), switches it off, and reads the totals with `callgrind_annotate` after the servers
stopped. Kernel time (the journal's fdatasync, socket calls) is not counted.

    .venv/bin/python bench/token_instructions.py                 # about 3-5 min
    .venv/bin/python bench/token_instructions.py --requests 1000 --targets "oauthd snapshot"

Needs valgrind (Debian: apt-get install valgrind). Prints a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys

import aiohttp
from proxy import BENCH, FILE_STORAGE, Grant, Processes, free_port, temp_dir, write_config
from proxy_instructions import callgrind, instructions, instrumentation, ready
from token_endpoint import (
    FASTMCP,
    JOURNAL,
    MINIMAL,
    NO_UPSTREAM,
    SNAPSHOT,
    Signer,
    ensure_peer_venv,
    fastmcp_signer,
    minimal_signer,
    oauthd_signer,
)


async def refresh(url: str, grants: list[Grant], count: int) -> None:
    left = count
    async with aiohttp.ClientSession() as session:

        async def client(grant: Grant) -> None:
            nonlocal left
            while left > 0:
                left -= 1
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": grant.refresh,
                    "client_id": grant.client_id,
                }
                async with session.post(url, data=form) as response:
                    body = await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url}: {response.status} {body[:200]!r}")
                grant.refresh = json.loads(body)["refresh_token"]

        await asyncio.gather(*(client(g) for g in grants))


def start(args: argparse.Namespace, procs: Processes, name: str) -> tuple[int, str, Signer]:
    """Start `name` under callgrind: (pid, base URL, signer)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    out = procs.logs / f"{name.replace(' ', '-')}.out"
    if name == FASTMCP:
        peer = [str(ensure_peer_venv()), str(BENCH / "peer" / "fastmcp_token.py")]
        argv, signer = [*peer, "--port", str(port)], fastmcp_signer(base)
    elif name == MINIMAL:
        script = [sys.executable, str(BENCH / "minimal_refresh.py")]
        argv, signer = [*script, "--port", str(port)], minimal_signer(base)
    else:
        storage = FILE_STORAGE if name == JOURNAL else FILE_STORAGE.replace("journal", "snapshot")
        home = procs.logs / name.replace(" ", "-")
        home.mkdir()
        config = write_config(home, port, NO_UPSTREAM, storage)
        argv = [sys.executable, "-m", "oauthd", "serve", "--config", str(config)]
        signer = oauthd_signer(base)
    child = procs.start(name, [*callgrind(out), *argv])
    return child.pid, base, signer


def ready_url(name: str, base: str) -> tuple[str, str]:
    if name == FASTMCP:
        return f"{base}/.well-known/oauth-authorization-server", "GET"
    if name == MINIMAL:
        return f"{base}/seed", "POST"
    return f"{base}/readyz", "GET"


async def main_async(args: argparse.Namespace) -> int:
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if shutil.which(tool) is None:
            print(f"bench/token_instructions.py: {tool} not found", file=sys.stderr)
            return 2
    totals: dict[str, int] = {}
    with temp_dir(args.dir) as tmp:
        procs = Processes(tmp, pin=False)
        try:
            started = {name: start(args, procs, name) for name in args.targets}
            for name, (pid, base, sign_in) in started.items():
                await ready(*ready_url(name, base))
                async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as api:
                    grants = await sign_in(api, args.concurrency)
                print(f"# {name}: warm-up, then {args.requests} refreshes", file=sys.stderr)
                await refresh(f"{base}/token", grants, args.warmup)
                await instrumentation(pid, "on")
                await refresh(f"{base}/token", grants, args.requests)
                await instrumentation(pid, "off")
        finally:
            for name in args.targets:  # SIGTERM: callgrind writes its totals at exit
                procs.stop(name, timeout=120)
            procs.stop_all()
        for name in args.targets:
            totals[name] = instructions(tmp / f"{name.replace(' ', '-')}.out")
    report(args, totals)
    return 0


def report(args: argparse.Namespace, totals: dict[str, int]) -> None:
    print("| server | instructions per refresh | / minimal | / FastMCP |")
    print("|---|---:|---:|---:|")
    per = {name: total / args.requests for name, total in totals.items()}
    for name, value in per.items():
        cells = [f"{value / per[p]:.2f}x" if p in per else "-" for p in (MINIMAL, FASTMCP)]
        print(f"| {name} | {value:,.0f} | {cells[0]} | {cells[1]} |")
    print(
        f"\n{args.requests} refresh grants per server after {args.warmup} unmeasured, "
        f"{args.concurrency} concurrent clients (aiohttp), user-space instructions of the "
        "server process counted by callgrind (kernel time excluded)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=800, help="measured refreshes")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured refreshes first")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    parser.add_argument("--dir", default=None, help="where the temp dir goes")
    parser.add_argument("--targets", default=",".join((FASTMCP, MINIMAL, JOURNAL, SNAPSHOT)))
    args = parser.parse_args()
    args.targets = args.targets.split(",")
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
