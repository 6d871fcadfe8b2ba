"""Instructions per token-checked `/mcp` request: oauthd vs the bare aiohttp hop, counted
by valgrind's callgrind, so the ratio does not depend on what else the machine is doing.

Wall-clock throughput on a shared 2-core VM scatters by +-15 % between runs (see
docs/performance.md); callgrind counts the instructions each proxy process executes, which
repeat to within about 0.3 %. Kernel time (syscalls) is not counted, so a change that saves
a `send()` shows up only in bench/proxy.py.

One run starts, on 127.0.0.1 with free ports: bench/upstream_stub.py (not measured), and
bench/bare_proxy.py and `oauthd serve` (file backend, journal durability), each under
`valgrind --tool=callgrind --instr-atstart=no`. It logs in over HTTP like bench/proxy.py,
sends `--warmup` unmeasured requests to each proxy, then switches instrumentation on with
`callgrind_control -i on`, sends `--requests` POSTs with `--concurrency` clients, switches it
off, and finally reads the totals with `callgrind_annotate`.

    .venv/bin/python bench/proxy_instructions.py                  # about 1-2 min
    .venv/bin/python bench/proxy_instructions.py --requests 3000 --concurrency 8
    .venv/bin/python bench/proxy_instructions.py --rules 50      # /mcp with 50 policy rules
    .venv/bin/python bench/proxy_instructions.py --tracing 1     # [tracing] on, every trace kept
    .venv/bin/python bench/proxy_instructions.py --audit-calls --keep /tmp/cg  # callgrind files

Needs valgrind (Debian: apt-get install valgrind). Prints a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from proxy import (
    BENCH,
    RPC_BODY,
    Processes,
    free_port,
    login,
    policed_resource,
    register,
    temp_dir,
    write_config,
)

TARGET = 0.90  # issue #4: oauthd >= 0.90x the hop's throughput


async def ready(url: str, method: str = "GET", limit: float = 240.0) -> None:
    """Like proxy.wait_ready, with room for valgrind's slow start."""
    deadline = time.monotonic() + limit
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.request(method, url, data=b"{}") as response:
                    if response.status < 500:
                        return
            await asyncio.sleep(0.5)
    raise RuntimeError(f"{url}: not ready within {limit:.0f} s")


async def send(url: str, token: str | None, count: int, concurrency: int) -> None:
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    left = count
    async with aiohttp.ClientSession() as session:

        async def client() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with session.post(url, data=RPC_BODY, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url}: {response.status}")

        await asyncio.gather(*(client() for _ in range(concurrency)))


async def instrumentation(pid: int, state: str) -> None:
    control = await asyncio.create_subprocess_exec(
        "callgrind_control", "-i", state, str(pid), stdout=subprocess.DEVNULL
    )
    if await control.wait() != 0:
        raise RuntimeError(f"callgrind_control -i {state} {pid} failed")


def instructions(out: Path) -> int:
    text = subprocess.run(
        ["callgrind_annotate", str(out)], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"^([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", text, re.M)
    if match is None:
        raise RuntimeError(f"{out}: no PROGRAM TOTALS line")
    return int(match[1].replace(",", ""))


def keep(tmp: Path, where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    for name in ("bare.out", "oauthd.out"):
        shutil.copy(tmp / name, where / name)


def callgrind(out: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]


async def main_async(args: argparse.Namespace) -> int:
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if shutil.which(tool) is None:
            print(f"bench/proxy_instructions.py: {tool} not found", file=sys.stderr)
            return 2
    py = sys.executable
    with temp_dir(args.dir) as tmp:
        procs = Processes(tmp, pin=False)
        try:
            stub_port, bare_port, oauthd_port = free_port(), free_port(), free_port()
            upstream = f"http://127.0.0.1:{stub_port}/mcp"
            procs.start("stub", [py, str(BENCH / "upstream_stub.py"), "--port", str(stub_port)])
            bare = procs.start(
                "bare",
                [
                    *callgrind(tmp / "bare.out"),
                    py,
                    str(BENCH / "bare_proxy.py"),
                    "--port",
                    str(bare_port),
                    "--upstream",
                    upstream,
                ],
            )
            policed = policed_resource(upstream, args.rules, args.rules_match) if args.rules else ""
            config = write_config(tmp, oauthd_port, upstream, resource=policed)
            if args.tracing is not None:  # spans exported (OTLP/HTTP) to the stub, which drops them
                with config.open("a") as toml:
                    toml.write(
                        f"[tracing]\nenabled = true\nsample_ratio = {args.tracing}\n"
                        f'endpoint = "http://127.0.0.1:{stub_port}/v1/traces"\n'
                    )
            if args.audit_calls:  # a durable record per tools/call, before it is forwarded
                with config.open("a") as toml:
                    toml.write("[audit]\ncalls = true\n")
            serve = [py, "-m", "oauthd", "serve", "--config", str(config)]
            oauthd = procs.start("oauthd", [*callgrind(tmp / "oauthd.out"), *serve])
            base = f"http://127.0.0.1:{oauthd_port}"
            await ready(upstream, "POST")
            await ready(f"http://127.0.0.1:{bare_port}/mcp", "POST")
            await ready(f"{base}/readyz")
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as api:
                grant = await login(api, base, await register(api, base))
            targets = (
                ("bare hop", bare, f"http://127.0.0.1:{bare_port}/mcp", None),
                ("oauthd", oauthd, f"{base}/mcp", grant.access),
            )
            for name, child, url, token in targets:
                print(f"# {name}: warm-up, then {args.requests} requests", file=sys.stderr)
                await send(url, token, args.warmup, args.concurrency)
                await instrumentation(child.pid, "on")
                await send(url, token, args.requests, args.concurrency)
                await instrumentation(child.pid, "off")
        finally:
            for name in ("bare", "oauthd"):  # SIGTERM: callgrind writes its totals at exit
                procs.stop(name, timeout=120)
            procs.stop_all()
        bare_total, oauthd_total = instructions(tmp / "bare.out"), instructions(tmp / "oauthd.out")
        if args.keep:  # for callgrind_annotate / kcachegrind: where the instructions go
            keep(tmp, Path(args.keep))

    per_bare, per_oauthd = bare_total / args.requests, oauthd_total / args.requests
    ratio = per_bare / per_oauthd
    mark = "" if ratio >= TARGET else " (miss)"
    print("| proxy | instructions per request | bare hop / oauthd |")
    print("|---|---:|---:|")
    print(f"| bare hop | {per_bare:,.0f} | |")
    label = f"oauthd, {args.rules} rules ({args.rules_match} matches)" if args.rules else "oauthd"
    if args.tracing is not None:
        label += f", tracing on (sample_ratio {args.tracing})"
    if args.audit_calls:
        label += ", [audit] calls = true"
    print(f"| {label} | {per_oauthd:,.0f} | {ratio:.3f}x{mark} |")
    print(
        f"\n{args.requests} POST /mcp per proxy after {args.warmup} unmeasured, "
        f"{args.concurrency} concurrent clients, user-space instructions counted by callgrind "
        "(kernel time excluded)."
    )
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1500, help="measured requests per proxy")
    parser.add_argument("--warmup", type=int, default=300, help="unmeasured requests first")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    parser.add_argument("--dir", default=None, help="where the temp dir goes")
    parser.add_argument("--rules", type=int, default=0, help="policy rules on oauthd's /mcp")
    parser.add_argument("--rules-match", choices=("last", "none"), default="last")
    parser.add_argument(
        "--tracing", type=float, default=None, help="[tracing] on with this sample_ratio"
    )
    parser.add_argument(
        "--audit-calls", action="store_true", help="[audit] calls = true (a record per call)"
    )
    parser.add_argument("--keep", default=None, help="copy the callgrind files to this dir")
    sys.exit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
