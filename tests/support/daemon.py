"""Processes and the browser for the interop tests: the demo upstream MCP server
(`examples/demo_server.py`), a real `oauthd serve` in a subprocess on a temp state dir, and
a scripted person who follows oauthd's real login and consent pages.

Plain module (no package: tests/interop has no `__init__.py`), imported by conftest.py and
the tests; the name is unique under tests/ on purpose."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import aiohttp

from oauthd.users import hash_password
from tests.support.forms import only_form
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo_server.py"

USER = "interop-user"
PASSWORD = "interop password, long enough"
PASSWORD_HASH = hash_password(PASSWORD)  # the real scheme, made once per test session

START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0


def _spawn(argv: list[str], log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def _stop_process(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> int:
    """Send `sig`, wait; SIGKILL if it does not end in time. Returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


# -- the upstream MCP server ---------------------------------------------------------------


class DemoUpstream:
    """`python examples/demo_server.py --port P` (stateful: it hands out `Mcp-Session-Id`)."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = _spawn(
            [sys.executable, str(DEMO), "--port", str(self.port)], self.log_path, ROOT
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"demo server did not start:\n{self.log()}") from None
                time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            _stop_process(self.proc, signal.SIGTERM, 5)
            self.proc = None


# -- oauthd ----------------------------------------------------------------------------------


def oauthd_command() -> list[str]:
    script = Path(sys.executable).with_name("oauthd")
    if script.exists():
        return [str(script)]
    found = shutil.which("oauthd")
    return [found] if found else [sys.executable, "-m", "oauthd"]


class OauthdProcess:
    """`oauthd serve --config <dir>/config.toml` with its state in `<dir>/state`; each start
    logs to `<dir>/oauthd-<n>.log`. The port and state dir stay the same across restarts."""

    def __init__(self, directory: Path, upstream_url: str) -> None:
        self.directory = directory
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.mcp_url = f"{self.issuer}/mcp"
        self.state_dir = directory / "state"
        self.config = directory / "config.toml"
        self.config.write_text(
            f"""\
[server]
listen = "127.0.0.1:{self.port}"
issuer = "{self.issuer}"
shutdown_timeout = "2s"

[upstream]
url = "{upstream_url}"
connect_timeout = "5s"
read_timeout = "60s"

[storage]
backend = "file"
path = "{self.state_dir}"

[[login.users]]
username = "{USER}"
password_hash = "{PASSWORD_HASH}"
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.exit_codes: list[int] = []

    def _log_path(self, n: int) -> Path:
        return self.directory / f"oauthd-{n}.log"

    async def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        self.proc = _spawn(
            [*oauthd_command(), "serve", "--config", str(self.config)],
            self._log_path(self.starts),
            self.directory,
        )
        deadline = time.monotonic() + START_TIMEOUT
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"oauthd exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    async with http.get(f"{self.issuer}/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError(f"oauthd not ready within {START_TIMEOUT} s:\n{self.log()}")

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Stop with `sig` (SIGTERM: clean shutdown; SIGKILL: a crash); the exit status."""
        assert self.proc is not None
        proc, self.proc = self.proc, None
        code = await asyncio.to_thread(_stop_process, proc, sig, STOP_TIMEOUT)
        self.exit_codes.append(code)
        return code

    async def restart(self, sig: signal.Signals) -> int:
        code = await self.stop(sig)
        await self.start()
        return code

    def kill(self) -> None:
        """Teardown: whatever runs is killed (never leaves a process behind)."""
        if self.proc is not None:
            _stop_process(self.proc, signal.SIGKILL, 5)
            self.proc = None

    def log(self, n: int | None = None) -> str:
        path = self._log_path(self.starts if n is None else n)
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(
            f"--- oauthd start {n} ---\n{self.log(n)}" for n in range(1, self.starts + 1)
        )


# -- the person in front of the browser ------------------------------------------------------


@dataclass
class Redirect:
    """Where oauthd finally sent the browser (the client's redirect URI), not requested."""

    location: str

    @property
    def params(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.location).query).items()}


class Browser:
    """A cookie-keeping browser driven by a person who signs in and clicks Allow. It follows
    redirects within oauthd's origin and stops at the first one that leaves it (the client's
    redirect URI), which it only parses."""

    def __init__(self, issuer: str, username: str = USER, password: str = PASSWORD) -> None:
        self.issuer = issuer
        self.username = username
        self.password = password
        self.pages: list[str] = []  # the paths of the pages shown, in order
        self.logins = 0

    def _own(self, url: str) -> bool:
        return urljoin(self.issuer + "/", url).startswith(self.issuer + "/")

    async def _follow(self, http: aiohttp.ClientSession, response: aiohttp.ClientResponse) -> str:
        """Follow oauthd-internal redirects; the final page's HTML, or raise _Left."""
        while response.status in (301, 302, 303, 307, 308):
            location = response.headers["Location"]
            response.release()
            if not self._own(location):
                raise _Left(location)
            url = urljoin(self.issuer + "/", location)
            response = await http.get(url, allow_redirects=False)
        async with response:
            text = await response.text()
            assert response.status == 200, f"{response.status} at {response.url}:\n{text}"
            self.pages.append(response.url.path)
            return text

    async def _submit(
        self, http: aiohttp.ClientSession, page: str, extra: dict[str, str]
    ) -> aiohttp.ClientResponse:
        form = only_form(page)
        assert form.method == "post" and "csrf_token" in form.fields, form
        for name, value in extra.items():
            if form.choices(name):
                assert value in form.choices(name), (name, value, form.buttons)
        data = {**form.fields, **extra}
        return await http.post(
            urljoin(self.issuer + "/", form.action), data=data, allow_redirects=False
        )

    async def authorize(self, authorization_url: str) -> Redirect:
        """Open the authorization URL, sign in, allow; the redirect back to the client."""
        assert self._own(authorization_url), authorization_url
        jar = aiohttp.CookieJar(unsafe=True)  # the host is an IP address
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            try:
                page = await self._follow(
                    http, await http.get(authorization_url, allow_redirects=False)
                )
                if 'name="password"' in page:
                    self.logins += 1
                    page = await self._follow(
                        http,
                        await self._submit(
                            http, page, {"username": self.username, "password": self.password}
                        ),
                    )
                page = await self._follow(
                    http, await self._submit(http, page, {"decision": "allow"})
                )
            except _Left as left:
                return Redirect(left.location)
        raise AssertionError(f"oauthd never sent the browser back to the client:\n{page}")


class _Left(Exception):
    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location
