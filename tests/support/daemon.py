"""`oauthd` as a process: the one launcher of `oauthd serve` for every end-to-end test
(async start, wait until ready, stop with a signal, the log of each start), and
`run_oauthd` for the short commands."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp

from tests.support.configs import (
    INTEROP_PASSWORD,
    INTEROP_USER,
    TomlValue,
    real_password_hash,
    write_config,
)
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0


def oauthd_command() -> list[str]:
    """The installed `oauthd` script of this interpreter's venv, else `python -m oauthd`."""
    script = Path(sys.executable).with_name("oauthd")
    if script.exists():
        return [str(script)]
    found = shutil.which("oauthd")
    return [found] if found else [sys.executable, "-m", "oauthd"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without OAUTHD_CONFIG (a test names its config), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k != "OAUTHD_CONFIG"}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def stop_process(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> int:
    """Send `sig`, wait; SIGKILL if it does not end in time. Returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def request(
    port: int, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    """One blocking HTTP request to 127.0.0.1:`port`: the status and the body (parsed
    when it is JSON)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = None if body is None else json.dumps(body)
        headers = {} if body is None else {"Content-Type": "application/json"}
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        is_json = response.getheader("Content-Type", "").startswith("application/json")
        return response.status, json.loads(raw) if is_json else raw
    finally:
        conn.close()


class Completed(NamedTuple):
    code: int
    out: str
    err: str


async def run_oauthd(
    *args: str,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    within: float = 60,
) -> Completed:
    """`oauthd <args>` to its end (`stdin` typed in); its exit status and output."""
    proc = await asyncio.create_subprocess_exec(
        *oauthd_command(),
        *args,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env(**(env or {})),
    )
    typed = None if stdin is None else stdin.encode()
    try:
        out, err = await asyncio.wait_for(proc.communicate(typed), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Completed(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


class OauthdProcess:
    """`oauthd serve [--config <config>] <args>` run in `directory`, listening on `port`;
    start n writes its stdout (the JSON log) to `<directory>/<name>-<n>.log` and its
    stderr to `<name>-<n>.err`. Ready when /readyz answers 200. Port, config and state stay
    the same across restarts."""

    def __init__(
        self,
        directory: Path,
        config: Path | None,
        port: int,
        *,
        issuer: str | None = None,
        name: str = "oauthd",
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.directory = directory
        self.config = config
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.issuer = issuer or self.url
        self.name = name
        self.args = list(args)
        self.env = clean_env(**(env or {}))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.exit_codes: list[int] = []

    @property
    def mcp_url(self) -> str:
        return f"{self.issuer}/mcp"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _output(self, n: int | None, suffix: str) -> Path:
        return self.directory / f"{self.name}-{self.starts if n is None else n}.{suffix}"

    def spawn(self) -> None:
        """Start the process (without waiting for anything)."""
        assert not self.running, f"{self.name} already runs"
        self.starts += 1
        config = [] if self.config is None else ["--config", str(self.config)]
        with (
            self._output(None, "log").open("wb") as out,
            self._output(None, "err").open("wb") as err,
        ):
            self.proc = subprocess.Popen(
                [*oauthd_command(), "serve", *config, *self.args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self.directory,
                env=self.env,
            )

    async def start(self) -> None:
        """Spawn the daemon and wait until it is ready."""
        self.spawn()
        await self.wait_ready()

    async def wait_ready(self, within: float = START_TIMEOUT) -> list[str]:
        """Poll /readyz until it answers 200; what each poll saw ("refused" or a status).
        Fails (with the log) if the daemon exits or is not ready in time."""
        assert self.proc is not None
        seen: list[str] = []
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"{self.name} exited with {self.proc.returncode}:\n{self.log()}"
                    )
                try:
                    async with http.get(f"{self.url}/readyz") as response:
                        seen.append(str(response.status))
                        if response.status == 200:
                            return seen
                except (aiohttp.ClientError, TimeoutError):
                    seen.append("refused")
                await asyncio.sleep(0.01)
        raise AssertionError(f"{self.name} not ready within {within} s:\n{self.log()}")

    async def wait(self, within: float = STOP_TIMEOUT) -> int:
        """Wait for the process to end by itself; its exit status."""
        assert self.proc is not None
        proc, self.proc = self.proc, None
        code = await asyncio.to_thread(proc.wait, within)
        self.exit_codes.append(code)
        return code

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int | None:
        """Stop with `sig` (SIGTERM: clean shutdown; SIGKILL: a crash), SIGKILL past the
        timeout; the exit status, None if no process was started."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        code = await asyncio.to_thread(stop_process, proc, sig, STOP_TIMEOUT)
        self.exit_codes.append(code)
        return code

    async def restart(self, sig: signal.Signals = signal.SIGTERM) -> int | None:
        code = await self.stop(sig)
        await self.start()
        return code

    def kill(self) -> None:
        """Teardown: whatever runs is killed (never leaves a process behind)."""
        if self.proc is not None:
            stop_process(self.proc, signal.SIGKILL, 5)
            self.proc = None

    async def command(self, *args: str, within: float = 60) -> Completed:
        """`oauthd <args> --config <config>` (e.g. `sessions list`, `state inspect`)."""
        assert self.config is not None
        return await run_oauthd(*args, "--config", str(self.config), within=within)

    def stdout(self, n: int | None = None) -> str:
        path = self._output(n, "log")
        return path.read_text(errors="replace") if path.exists() else ""

    def stderr(self, n: int | None = None) -> str:
        path = self._output(n, "err")
        return path.read_text(errors="replace") if path.exists() else ""

    def log(self, n: int | None = None) -> str:
        """All the output of start `n` (the latest by default): stdout, then stderr."""
        return self.stdout(n) + self.stderr(n)

    def logs(self) -> str:
        return "\n".join(
            f"--- {self.name} start {n} ---\n{self.log(n)}" for n in range(1, self.starts + 1)
        )

    def json_log(self) -> list[dict[str, Any]]:
        """Every stdout line of the latest start, parsed: each must be one JSON log record."""
        parsed = []
        for line in self.stdout().splitlines():
            doc = json.loads(line)
            assert isinstance(doc, dict) and {"ts", "level", "logger", "msg"} <= doc.keys(), line
            parsed.append(doc)
        return parsed

    def events(self) -> list[str]:
        return [doc["event"] for doc in self.json_log() if "event" in doc]


Spawn = Callable[..., OauthdProcess]


@contextmanager
def spawner(directory: Path) -> Iterator[Spawn]:
    """`spawn(config, port, *args, **env)`: `oauthd serve` started in `directory` (not yet
    ready: `await daemon.wait_ready()`); every one is killed at the end."""
    started: list[OauthdProcess] = []

    def spawn(config: Path | None, port: int, *args: str, **env: str) -> OauthdProcess:
        name = f"oauthd{len(started)}"
        daemon = OauthdProcess(directory, config, port, name=name, args=args, env=env)
        started.append(daemon)
        daemon.spawn()
        return daemon

    try:
        yield spawn
    finally:
        for daemon in started:
            daemon.kill()


def proxy_daemon(
    directory: Path,
    upstream_url: str,
    *,
    issuer: str | None = None,
    name: str = "oauthd",
    users: Sequence[tuple[str, str]] = (),
    **sections: dict[str, TomlValue],
) -> OauthdProcess:
    """oauthd in front of the MCP server at `upstream_url`, on a free port, its state in
    `<directory>/state` and `users` (by default the interop user) able to sign in (the SDK
    interop tests' daemon); `sections` add to its config or replace a section."""
    port = free_port()
    defaults: dict[str, dict[str, TomlValue]] = {
        "upstream": {"url": upstream_url, "connect_timeout": "5s", "read_timeout": "60s"},
        "storage": {"backend": "file", "path": str(directory / "state")},
    }
    users = users or [(INTEROP_USER, real_password_hash(INTEROP_PASSWORD))]
    path = directory / "config.toml"
    config = write_config(path, port, {**defaults, **sections}, issuer=issuer, users=users)
    return OauthdProcess(directory, config, port, issuer=issuer, name=name)
