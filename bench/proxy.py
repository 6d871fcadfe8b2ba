"""Proxy and token endpoint benchmark: a token-checked `/mcp` call through oauthd against a
bare aiohttp proxy hop, and refresh-grant throughput of `/token` with journal durability.

In one run, all on 127.0.0.1 with free ports picked at start:
- `bench/upstream_stub.py`: the upstream, answering POST /mcp with a small JSON-RPC result;
- `bench/bare_proxy.py`: the baseline, a bare aiohttp reverse-proxy hop to the stub;
- `oauthd serve` on a temp config (file backend, `durability = "journal"`, a local user)
  and a temp state dir, with the stub as its `upstream.url`;
- with `--rules N` (50 by default, 0: none), a second `oauthd serve` whose `/mcp` is a
  `[[resource]]` with N policy rules, the benchmark's call (`tools/call` of `echo`)
  matched by the last one (`--rules-match none`: by none; the default decision), measured
  at `--rules-connections` against the same hop;
- with `--signed-connections` (128 by default, '' to skip), a third `oauthd serve` whose
  `[upstream]` has `signed_identity = true` (each request carries a signed identity JWT;
  one assertion serves a grant for half its 60 s life), measured against the same hop;
- with `--audit-connections` (64 by default, '' to skip), a fourth `oauthd serve` with
  `[audit] calls = true` (a durable record per `tools/call` before it is forwarded, one of
  its outcome after) and a fifth with `[audit] enabled = false`, compared round by round
  at those connection counts; the refresh grant is measured on the main oauthd (audit
  records on, the default) and on the fifth.
The script logs in over HTTP as a client would (register, /authorize, the login and consent
pages, /token), then runs wrk (POST with a JSON-RPC body; for oauthd with the
`Authorization: Bearer` header) against the hop and oauthd, alternating, at each connection
count, and then N concurrent refresh clients against /token, each with its own grant and
always presenting the refresh token it was given last (every refresh rotates).

Usage:
    .venv/bin/python bench/proxy.py                       # 8 and 128 connections, 3 x 10 s
    .venv/bin/python bench/proxy.py --rounds 1 --duration 5 --connections 8 --refresh-clients 1,8
    .venv/bin/python bench/proxy.py --pin                 # proxies on CPU 0, the rest on 1
    .venv/bin/python bench/proxy.py --profile /tmp/oauthd.prof  # oauthd under cProfile

Needs `wrk` (Debian: apt-get install wrk). Prints a Markdown table on stdout, progress on
stderr. Every step is bounded in time; the processes it started are stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from operator import attrgetter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
USER, PASSWORD = "bench", "bench-password-not-secret"
REDIRECT_URI = "http://127.0.0.1:43123/callback"
TARGET_THROUGHPUT, TARGET_P99 = 0.90, 1.5
RPC_BODY = (
    '{"jsonrpc":"2.0","id":1,"method":"tools/call",'
    '"params":{"name":"echo","arguments":{"text":"hello"}}}'
)

WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = '%(body)s'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
%(auth)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\\"requests\\":%%d,\\"duration_us\\":%%d,\\"p50_us\\":%%d,\\"p90_us\\":%%d," ..
    "\\"p99_us\\":%%d,\\"mean_us\\":%%.1f,\\"connect\\":%%d,\\"read\\":%%d,\\"write\\":%%d," ..
    "\\"status\\":%%d,\\"timeout\\":%%d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(utime, stime) of a process, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]), int(fields[12])


TICK = os.sysconf("SC_CLK_TCK")


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    import aiohttp as _aiohttp

    return (
        f"{os.cpu_count()} x {model}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, aiohttp {_aiohttp.__version__}, "
        f"asyncio default loop (no uvloop), load average before {load}"
    )


def fs_type(path: Path) -> str:
    out = subprocess.run(
        ["df", "--output=fstype", str(path)], capture_output=True, text=True, timeout=10
    )
    lines = out.stdout.split()
    return lines[-1] if len(lines) > 1 else "?"


def password_hash(password: str) -> str:
    """The cheapest hash oauthd accepts (ln=10): logins are set-up, not what is measured."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**10, r=8, p=1, dklen=32)

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode().rstrip("=")

    return f"scrypt$ln=10,r=8,p=1${b64(salt)}${b64(digest)}"


# -- processes -------------------------------------------------------------------------------


class Processes:
    """Child processes, each stopped (SIGTERM, then SIGKILL) by `stop_all`."""

    def __init__(self, logs: Path, pin: bool) -> None:
        self.logs = logs
        self.pin = pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], cpus: str | None = None) -> subprocess.Popen[bytes]:
        if self.pin and cpus is not None:
            argv = ["taskset", "-c", cpus, *argv]
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the child
        child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        log.close()
        self.children[name] = child
        return child

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def print_logs(self) -> None:
        """Each running child's log tail on stderr (a run that failed shows why)."""
        for name in list(self.children):
            print(f"--- {name} log:\n{self.log_tail(name)}", file=sys.stderr)

    def stop(self, name: str, timeout: float = 15.0) -> int | None:
        child = self.children.pop(name, None)
        if child is None:
            return None
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)
        return child.returncode

    def stop_all(self) -> None:
        for name in list(self.children):
            self.stop(name)


async def wait_ready(url: str, child: subprocess.Popen[bytes], method: str = "GET") -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if child.poll() is not None:
                raise RuntimeError(f"{url}: the process exited with {child.returncode}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.request(method, url, data=b"{}") as response:
                    if response.status < 500:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url}: not ready within 30 s")


FILE_STORAGE = """\
backend = "file"
path = "state"
durability = "journal"
"""


def policed_resource(upstream_url: str, rules: int, match: str) -> str:
    """`/mcp` as a `[[resource]]` with `rules` rules: every one but the last on names the
    benchmark's call does not have (globs and lists, so each is really tried once), the
    last on `echo` (`match = "last"`) or on another name too (`match = "none"`)."""
    parts = [f'[[resource]]\npath = "/mcp"\nurl = "{upstream_url}"\n']
    for i in range(1, rules + 1):
        names = '["echo"]' if i == rules and match == "last" else f'["tool_{i}_*", "other_{i}"]'
        parts.append(
            f'[[resource.rule]]\nid = "rule-{i}"\nmethod = "tools/*"\nname = {names}\n'
            'require_scopes = ["mcp"]\n'
        )
    return "\n".join(parts)


def write_config(
    tmp: Path,
    port: int,
    upstream_url: str,
    storage: str = FILE_STORAGE,
    login: str = "",
    resource: str = "",
    upstream_keys: str = "",
    extra: str = "",
) -> Path:
    """`tmp/oauthd.toml`; `storage` and `login` are the bodies of those sections (TOML);
    `resource`: `[[resource]]` tables in place of `[upstream]`; `upstream_keys`: more
    lines of `[upstream]`."""
    path = tmp / "oauthd.toml"
    upstream = resource or f'[upstream]\nurl = "{upstream_url}"\n{upstream_keys}'
    path.write_text(
        f"""\
[server]
listen = "127.0.0.1:{port}"
issuer = "http://127.0.0.1:{port}"

{upstream}

[storage]
{storage}
[login]
{login}
[[login.users]]
username = "{USER}"
password_hash = "{password_hash(PASSWORD)}"

{extra}"""
    )
    return path


# -- logging in over HTTP ---------------------------------------------------------------------


class _Form(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and self.action is None:
            self.action = a.get("action", "")
        elif tag == "input" and "name" in a and self.action is not None:
            self.fields.setdefault(a["name"], a.get("value", ""))


@dataclass
class Grant:
    client_id: str
    access: str
    refresh: str


async def _follow(
    browser: aiohttp.ClientSession, base: str, method: str, url: str, **kwargs: Any
) -> tuple[int, str, str, str]:
    """One request, then oauthd's own redirects: (status, url, Location, body)."""
    for _ in range(10):
        async with browser.request(method, url, allow_redirects=False, **kwargs) as response:
            status, text = response.status, await response.text()
            location = response.headers.get("Location", "")
        if status not in (301, 302, 303, 307) or not (
            location.startswith("/") or location.startswith(base + "/")
        ):
            return status, url, location, text
        method, url, kwargs = "GET", urljoin(url, location), {}
    raise RuntimeError("redirect loop")


async def register(api: aiohttp.ClientSession, base: str) -> str:
    metadata = {
        "redirect_uris": [REDIRECT_URI],
        "token_endpoint_auth_method": "none",
        "client_name": "bench",
    }
    async with api.post(f"{base}/register", json=metadata) as response:
        body = await response.json()
        if response.status != 201:
            raise RuntimeError(f"register: {response.status} {body}")
        client_id: str = body["client_id"]
        return client_id


def authorize_params(base: str, client_id: str) -> tuple[str, dict[str, str]]:
    """A PKCE verifier and the /authorize query of a code flow for `/mcp`."""
    verifier = base64.urlsafe_b64encode(os.urandom(40)).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT_URI,
        "code_challenge": challenge.rstrip(b"=").decode(),
        "code_challenge_method": "S256",
        "state": os.urandom(8).hex(),
        "resource": f"{base}/mcp",
        "scope": "mcp",
    }


async def login(api: aiohttp.ClientSession, base: str, client_id: str) -> Grant:
    """Authorization code + PKCE through the real login and consent pages, then /token."""
    verifier, params = authorize_params(base, client_id)
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        page = await _follow(browser, base, "GET", f"{base}/authorize", params=params)
        typed = {"username": USER, "password": PASSWORD}
        for _ in range(3):  # the login page, then the consent page (unless remembered)
            status, url, location, text = page
            if status in (302, 303) and location.startswith(REDIRECT_URI):
                break
            form = _Form()
            form.feed(text)
            if form.action is None:
                raise RuntimeError(f"no form at {url} ({status}): {text[:300]}")
            data = {**form.fields, **typed}
            if "username" not in form.fields:
                data["decision"] = "allow"
            typed = {}
            page = await _follow(browser, base, "POST", urljoin(url, form.action), data=data)
        status, url, location, text = page
    if not location.startswith(REDIRECT_URI + "?"):
        raise RuntimeError(f"login did not end at the client: {status} {location} {text[:300]}")
    code = dict(parse_qsl(urlsplit(location).query))["code"]
    form_data = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": REDIRECT_URI,
        "client_id": client_id,
        "resource": f"{base}/mcp",
    }
    async with api.post(f"{base}/token", data=form_data) as response:
        body = await response.json()
        if response.status != 200:
            raise RuntimeError(f"token: {response.status} {body}")
    return Grant(client_id, body["access_token"], body["refresh_token"])


# -- wrk ---------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    target: str
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    user_us: float  # CPU time of the proxy process per request: user
    sys_us: float  # ... and system
    requests: int = 0  # answered in the measured window

    @property
    def cpu_us(self) -> float:
        return self.user_us + self.sys_us


def run_wrk(
    tmp: Path,
    target: str,
    url: str,
    pid: int,
    token: str | None,
    connections: int,
    threads: int,
    duration: float,
    cpus: str | None,
    headers: dict[str, str] | None = None,
) -> WrkResult:
    """`headers`: more request headers, beside the bearer token (if any)."""
    extra = {"Authorization": f"Bearer {token}"} if token else {}
    extra.update(headers or {})
    auth = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in extra.items())
    script = tmp / f"wrk-{target}.lua"
    script.write_text(WRK_SCRIPT % {"body": RPC_BODY, "auth": auth})
    return run_wrk_script(script, target, url, pid, connections, duration, cpus, threads=threads)


def run_wrk_script(
    script: Path,
    target: str,
    url: str,
    pid: int,
    connections: int,
    duration: float,
    cpus: str | None,
    *,
    threads: int,
) -> WrkResult:
    """wrk with a Lua `script` ending in WRK_SCRIPT's `done` (the WRKJSON line), measuring
    the CPU time of process `pid` over the run."""
    argv = [
        "wrk",
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    if cpus is not None:
        argv = ["taskset", "-c", cpus, *argv]
    user0, sys0 = cpu_ticks(pid)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    user1, sys1 = cpu_ticks(pid)
    line = next((x for x in out.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    r = json.loads(line.removeprefix("WRKJSON "))
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    return WrkResult(
        target,
        connections,
        rps=r["requests"] / (r["duration_us"] / 1e6),
        p50_ms=r["p50_us"] / 1e3,
        p99_ms=r["p99_us"] / 1e3,
        errors=errors,
        user_us=(user1 - user0) / TICK / max(1, r["requests"]) * 1e6,
        sys_us=(sys1 - sys0) / TICK / max(1, r["requests"]) * 1e6,
        requests=r["requests"],
    )


# -- the token endpoint --------------------------------------------------------------------------


@dataclass
class RefreshResult:
    clients: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float


async def refresh_load(
    base: str, grants: list[Grant], duration: float, warmup: float, pid: int
) -> RefreshResult:
    """Each client loops refresh-grant requests on its own grant, always with the refresh
    token from its previous answer. Only answers after the warm-up are counted."""
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=len(grants))
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        measure_from, end = started + warmup, started + warmup + duration
        ticks0: list[int] = []

        async def client(grant: Grant) -> None:
            nonlocal errors
            while (t := time.perf_counter()) < end:
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": grant.refresh,
                    "client_id": grant.client_id,
                }
                async with session.post(f"{base}/token", data=form) as response:
                    body = await response.read()
                    status = response.status
                done = time.perf_counter()
                if status != 200:
                    errors += 1
                    raise RuntimeError(f"refresh: {status} {body[:300]!r}")
                grant.refresh = json.loads(body)["refresh_token"]
                if t >= measure_from:
                    latencies.append(done - t)

        async def cpu_mark() -> None:
            await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
            ticks0.append(sum(cpu_ticks(pid)))

        await asyncio.wait_for(
            asyncio.gather(cpu_mark(), *(client(g) for g in grants)), timeout=duration + 60
        )
        elapsed = time.perf_counter() - measure_from
        ticks = sum(cpu_ticks(pid)) - ticks0[0]
    return RefreshResult(
        clients=len(grants),
        rps=len(latencies) / elapsed,
        p50_ms=pct(latencies, 0.5) * 1e3,
        p99_ms=pct(latencies, 0.99) * 1e3,
        errors=errors,
        cpu_us=ticks / TICK / max(1, len(latencies)) * 1e6,
    )


# -- the run ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def temp_dir(where: str | None) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="oauthd-proxy-bench-", dir=where))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


RULES_TARGET = "oauthd, rules"
SIGNED_TARGET = "oauthd, signed identity"
AUDIT_OFF_TARGET = "oauthd, audit off"
AUDIT_OFF = "[audit]\nenabled = false\n"
AUDIT_ON_TARGET = "oauthd, calls audited"
AUDIT_CALLS = "[audit]\ncalls = true\n"


def rules_at(args: argparse.Namespace) -> list[int]:
    return [int(c) for c in args.rules_connections.split(",") if c]


def signed_at(args: argparse.Namespace) -> list[int]:
    return [int(c) for c in args.signed_connections.split(",") if c]


def audit_at(args: argparse.Namespace) -> list[int]:
    return [int(c) for c in args.audit_connections.split(",") if c]


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


@dataclass
class Variant:
    """Another oauthd of the run, on a config of its own (rules, signed identity, audit)."""

    proc: subprocess.Popen[bytes]
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_variant(
    procs: Processes,
    tmp: Path,
    name: str,
    upstream: str,
    cpus: str | None,
    profile: str | None = None,
    **config: str,
) -> Variant:
    """`oauthd serve` as "oauthd-<name>", its config and state in `tmp/<name>`;
    `config`: `write_config`'s keyword arguments; `profile`: under cProfile, stats there."""
    port = free_port()
    (tmp / name).mkdir()
    path = write_config(tmp / name, port, upstream, **config)
    profiled = [] if profile is None else ["-m", "cProfile", "-o", profile]
    serve = [sys.executable, *profiled, "-m", "oauthd", "serve", "--config", str(path)]
    return Variant(procs.start(f"oauthd-{name}", serve, cpus), port)


async def sign_in(api: aiohttp.ClientSession, variant: Variant, grants: int) -> list[Grant]:
    """Once it is ready: one registration, and `grants` logins of it."""
    await wait_ready(f"{variant.base}/readyz", variant.proc)
    client_id = await register(api, variant.base)
    return [await login(api, variant.base, client_id) for _ in range(grants)]


async def main_async(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        print("bench/proxy.py: wrk not found (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    connections = [int(c) for c in args.connections.split(",") if c]
    refresh_clients = [int(c) for c in args.refresh_clients.split(",") if c]
    about = machine()
    with temp_dir(args.dir) as tmp:
        procs = Processes(tmp, args.pin)
        proxies_cpu, others_cpu = ("0", "1") if procs.pin else (None, None)
        try:
            stub_port, bare_port, oauthd_port = free_port(), free_port(), free_port()
            upstream = f"http://127.0.0.1:{stub_port}/mcp"
            py = sys.executable
            stub = procs.start(
                "stub", [py, str(BENCH / "upstream_stub.py"), "--port", str(stub_port)], others_cpu
            )
            bare = procs.start(
                "bare",
                [
                    py,
                    str(BENCH / "bare_proxy.py"),
                    "--port",
                    str(bare_port),
                    "--upstream",
                    upstream,
                ],
                proxies_cpu,
            )
            config = write_config(tmp, oauthd_port, upstream)
            serve = ["-m", "oauthd", "serve", "--config", str(config)]
            if args.profile:
                serve = ["-m", "cProfile", "-o", args.profile, *serve]
            oauthd = procs.start("oauthd", [py, *serve], proxies_cpu)
            base = f"http://127.0.0.1:{oauthd_port}"
            policed = signed = audited = unaudited = None
            if args.rules:
                resource = policed_resource(upstream, args.rules, args.rules_match)
                policed = start_variant(
                    procs, tmp, "rules", upstream, proxies_cpu, resource=resource
                )
            if signed_at(args):
                keys = "signed_identity = true\n"
                signed = start_variant(
                    procs, tmp, "signed", upstream, proxies_cpu, upstream_keys=keys
                )
            if audit_at(args):
                profiles = {
                    name: f"{args.profile}.{name}" if args.profile else None
                    for name in ("audited", "unaudited")
                }
                audited = start_variant(
                    procs,
                    tmp,
                    "audited",
                    upstream,
                    proxies_cpu,
                    profiles["audited"],
                    extra=AUDIT_CALLS,
                )
                unaudited = start_variant(
                    procs,
                    tmp,
                    "unaudited",
                    upstream,
                    proxies_cpu,
                    profiles["unaudited"],
                    extra=AUDIT_OFF,
                )
            variants = {
                RULES_TARGET: policed,
                SIGNED_TARGET: signed,
                AUDIT_ON_TARGET: audited,
                AUDIT_OFF_TARGET: unaudited,
            }
            await wait_ready(upstream, stub, "POST")
            await wait_ready(f"http://127.0.0.1:{bare_port}/mcp", bare, "POST")
            await wait_ready(f"{base}/readyz", oauthd)
            print(f"# state dir on {fs_type(tmp)} ({tmp})", file=sys.stderr, flush=True)

            needed = max([1, *refresh_clients])
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as api:
                client_id = await register(api, base)
                grants = [await login(api, base, client_id) for _ in range(needed + 1)]
                bearers: dict[str, str] = {}
                unaudited_grants: list[Grant] = []
                for target, variant in variants.items():
                    if variant is None:
                        continue
                    # the unaudited one is refreshed too: a grant per refresh client
                    signed_in = await sign_in(
                        api, variant, needed + 1 if variant is unaudited else 1
                    )
                    bearers[target] = signed_in.pop().access
                    if variant is unaudited:
                        unaudited_grants = signed_in
            bearer = grants.pop().access  # its own grant: refreshing the others never ends it
            print(f"# logged in: {len(grants) + 1} grants", file=sys.stderr, flush=True)

            targets = {
                "bare hop": (f"http://127.0.0.1:{bare_port}/mcp", bare.pid, None),
                "oauthd": (f"{base}/mcp", oauthd.pid, bearer),
            }
            for target, variant in variants.items():
                if variant is not None:
                    targets[target] = (f"{variant.base}/mcp", variant.proc.pid, bearers[target])
            rules_connections = rules_at(args) if policed else []
            signed_connections = signed_at(args) if signed else []
            audit_connections = audit_at(args) if unaudited else []
            wanted = {
                "bare hop": set(connections) | set(rules_connections) | set(signed_connections),
                "oauthd": set(connections),
                AUDIT_ON_TARGET: set(audit_connections),
                RULES_TARGET: set(rules_connections),
                SIGNED_TARGET: set(signed_connections),
                AUDIT_OFF_TARGET: set(audit_connections),
            }
            results: dict[tuple[str, int], list[WrkResult]] = {}
            for c in sorted(wanted["bare hop"] | wanted[AUDIT_ON_TARGET]):
                for _ in range(args.rounds):
                    for name, (url, pid, token) in targets.items():
                        if c not in wanted[name]:
                            continue
                        print(f"# wrk {name}, {c} connections", file=sys.stderr, flush=True)
                        load = (tmp, name, url, pid, token, c, args.threads)
                        if args.warmup > 0:
                            run_wrk(*load, args.warmup, others_cpu)
                        r = run_wrk(*load, args.duration, others_cpu)
                        print(
                            f"#   {r.rps:,.0f} req/s, p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} "
                            f"ms, CPU/request user {r.user_us:.0f} us + system {r.sys_us:.0f} us",
                            file=sys.stderr,
                            flush=True,
                        )
                        results.setdefault((name, c), []).append(r)

            refreshes: list[RefreshResult] = []
            unaudited_refreshes: list[RefreshResult] = []
            for n in refresh_clients:
                print(f"# refresh grant, {n} clients", file=sys.stderr, flush=True)
                refreshes.append(
                    await refresh_load(base, grants[:n], args.refresh_duration, 1.0, oauthd.pid)
                )
                if unaudited is not None:
                    print(f"# refresh grant, audit off, {n} clients", file=sys.stderr, flush=True)
                    unaudited_refreshes.append(
                        await refresh_load(
                            unaudited.base,
                            unaudited_grants[:n],
                            args.refresh_duration,
                            1.0,
                            unaudited.proc.pid,
                        )
                    )
            code = procs.stop("oauthd")
            if code != 0:
                print(procs.log_tail("oauthd"), file=sys.stderr)
                raise RuntimeError(f"oauthd exited with {code}")
        except BaseException:
            procs.print_logs()
            raise
        finally:
            procs.stop_all()
        fs = fs_type(tmp)

    report(args, about, fs, procs.pin, connections, results, refreshes)
    report_audit(args, results, refreshes, unaudited_refreshes)
    if args.rules:
        matched = (
            f"the call is matched by rule {args.rules}"
            if args.rules_match == "last"
            else "no rule matches the call (the default decision)"
        )
        print(f"\n{RULES_TARGET}: `/mcp` is a [[resource]] with {args.rules} rules; {matched}.")
    return 0


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _column(
    pairs: list[tuple[WrkResult, WrkResult]], which: int, pick: Callable[[WrkResult], float]
) -> float:
    return _median([pick(pair[which]) for pair in pairs])


def report(
    args: argparse.Namespace,
    about: str,
    fs: str,
    pinned: bool,
    connections: list[int],
    results: dict[tuple[str, int], list[WrkResult]],
    refreshes: list[RefreshResult],
) -> None:
    print(
        "| connections | bare hop req/s | oauthd req/s | throughput ratio "
        "| bare hop p50 / p99 (ms) | oauthd p50 / p99 (ms) | p99 ratio "
        "| CPU per request bare / oauthd (us) | errors |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = [(c, "oauthd", str(c)) for c in connections]
    if args.rules:
        rows += [(c, RULES_TARGET, f"{c}, {args.rules} rules") for c in rules_at(args)]
    rows += [(c, SIGNED_TARGET, f"{c}, signed identity") for c in signed_at(args)]
    for c, target, label in rows:
        if (target, c) not in results:
            continue
        # Rounds pair up (the hop, then oauthd, back to back): ratios are taken per round,
        # then the median of each column and of each ratio is shown.
        pairs = list(zip(results[("bare hop", c)], results[(target, c)], strict=True))

        tr = _median([ratio(o.rps, h.rps) for h, o in pairs])
        lr = _median([ratio(o.p99_ms, h.p99_ms) for h, o in pairs])
        miss_t = " (miss)" if tr < TARGET_THROUGHPUT else ""
        miss_l = " (miss)" if lr > TARGET_P99 else ""
        errors = (sum(h.errors for h, _ in pairs), sum(o.errors for _, o in pairs))
        hop = {f: _column(pairs, 0, attrgetter(f)) for f in ("rps", "p50_ms", "p99_ms", "cpu_us")}
        ours = {f: _column(pairs, 1, attrgetter(f)) for f in ("rps", "p50_ms", "p99_ms", "cpu_us")}
        print(
            f"| {label} | {hop['rps']:,.0f} | {ours['rps']:,.0f} | {tr:.3f}x{miss_t} "
            f"| {hop['p50_ms']:.2f} / {hop['p99_ms']:.2f} "
            f"| {ours['p50_ms']:.2f} / {ours['p99_ms']:.2f} "
            f"| {lr:.3f}x{miss_l} | {hop['cpu_us']:.0f} / {ours['cpu_us']:.0f} "
            f"| {errors[0]} / {errors[1]} |"
        )
    if refreshes:
        print(
            "\n| refresh clients | refresh grants/s | p50 (ms) | p99 (ms) "
            "| oauthd CPU per refresh (us) | errors |"
        )
        print("|---:|---:|---:|---:|---:|---:|")
        for r in refreshes:
            print(
                f"| {r.clients} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
                f"| {r.cpu_us:.0f} | {r.errors} |"
            )
    rounds = (
        f", median of {args.rounds} rounds (ratios per round, oauthd vs the hop run just before it)"
        if args.rounds > 1
        else ""
    )
    print(
        f"\nwrk {args.threads} threads, {args.duration:g} s per row after a "
        f"{args.warmup:g} s warm-up{rounds}, hop and oauthd alternating; POST /mcp with a "
        f"{len(RPC_BODY)}-byte JSON-RPC body, the upstream answers 79 bytes. Targets: oauthd "
        f">= {TARGET_THROUGHPUT:.2f}x the hop's requests/s and p99 <= {TARGET_P99:g}x; "
        '"(miss)" marks a row that misses. CPU per request is the proxy process\'s user + '
        "system time divided by the requests. Refresh: Python asyncio clients (aiohttp), "
        f"each with its own grant, {args.refresh_duration:g} s per row after 1 s warm-up, "
        f'durability = "journal" with the state dir on {fs}.'
    )
    placement = (
        "bare hop and oauthd pinned to CPU 0, stub and wrk to CPU 1"
        if pinned
        else "no CPU pinning: wrk, the stub and the proxy under test share the cores"
    )
    after = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"\nMachine: {about}, after {after}; {placement}.")


def report_audit(
    args: argparse.Namespace,
    results: dict[tuple[str, int], list[WrkResult]],
    refreshes: list[RefreshResult],
    unaudited: list[RefreshResult],
) -> None:
    """oauthd with `[audit] calls = true` (a durable record per tools/call before it is
    forwarded) against the same build with `[audit] enabled = false`, round by round in
    the same run; the refresh grant with audit records on (the default) and off."""
    rows = [c for c in audit_at(args) if (AUDIT_OFF_TARGET, c) in results]
    if rows:
        print(
            "\n| connections | audit on req/s | audit off req/s | ratio (target >= 0.80x) "
            "| audit on p50 / p99 (ms) | audit off p50 / p99 (ms) "
            "| CPU per request on / off, user + sys (us) | errors on / off |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in rows:
        pairs = list(
            zip(results[(AUDIT_ON_TARGET, c)], results[(AUDIT_OFF_TARGET, c)], strict=False)
        )
        tr = _median([ratio(on.rps, off.rps) for on, off in pairs])
        miss = " (miss)" if tr < 0.80 else ""
        fields = ("rps", "p50_ms", "p99_ms", "user_us", "sys_us")
        on = {f: _column(pairs, 0, attrgetter(f)) for f in fields}
        off = {f: _column(pairs, 1, attrgetter(f)) for f in fields}
        print(
            f"| {c} | {on['rps']:,.0f} | {off['rps']:,.0f} | {tr:.3f}x{miss} "
            f"| {on['p50_ms']:.2f} / {on['p99_ms']:.2f} | {off['p50_ms']:.2f} / "
            f"{off['p99_ms']:.2f} | {on['user_us']:.0f} + {on['sys_us']:.0f} / "
            f"{off['user_us']:.0f} + {off['sys_us']:.0f} | {sum(a.errors for a, _ in pairs)} / "
            f"{sum(b.errors for _, b in pairs)} |"
        )
    if unaudited:
        print(
            "\n| refresh clients | audit on grants/s | audit off grants/s | ratio "
            "| audit on p99 (ms) | audit off p99 (ms) |"
        )
        print("|---:|---:|---:|---:|---:|---:|")
        for on_r, off_r in zip(refreshes, unaudited, strict=False):
            print(
                f"| {on_r.clients} | {on_r.rps:,.0f} | {off_r.rps:,.0f} "
                f"| {ratio(on_r.rps, off_r.rps):.3f}x | {on_r.p99_ms:.2f} | {off_r.p99_ms:.2f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", default="8,128", help="wrk connection counts")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk row")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured wrk seconds first")
    parser.add_argument("--rounds", type=int, default=3, help="wrk rows per case (median)")
    parser.add_argument("--refresh-clients", default="1,8,64", help="'' to skip")
    parser.add_argument("--refresh-duration", type=float, default=5.0)
    parser.add_argument("--rules", type=int, default=50, help="rules of the policed oauthd")
    parser.add_argument("--rules-match", choices=("last", "none"), default="last")
    parser.add_argument("--rules-connections", default="128", help="'' to skip")
    parser.add_argument(
        "--signed-connections", default="128", help="oauthd with signed_identity ('' to skip)"
    )
    parser.add_argument(
        "--audit-connections", default="64", help="audit on vs off at these ('' to skip)"
    )
    parser.add_argument("--pin", action="store_true", help="taskset: proxies CPU 0, rest CPU 1")
    parser.add_argument("--dir", default=None, help="where the temp state dir goes (local disk)")
    parser.add_argument("--profile", default=None, help="run oauthd under cProfile, stats here")
    args = parser.parse_args()
    if args.profile:
        args.profile = str(Path(args.profile).resolve())  # oauthd runs in the repo root
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
