"""A live stack for the Node.js interop tests (TypeScript SDK, conformance suite): the demo
upstream MCP server (examples/demo_server.py), a real `oauthd serve` subprocess in front of
it (free port, temp state dir, one known local user), the pinned npm packages of this
folder, and a small browser that goes through oauthd's login and consent forms.

    node = ensure_node_packages()       # skips without Node.js/npm (fails in CI)
    with running_stack(tmp_dir) as oauthd:
        ...  # oauthd.issuer, oauthd.mcp_url, oauthd.log()

Named `live_stack` (not `conftest`/`helpers`) so it cannot collide with the other interop
modules; the tests import it by name (pytest puts this folder on sys.path).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import pytest

from oauthd.users import hash_password
from tests.support.forms import parse_page
from tests.support.ports import free_port

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEMO = REPO / "examples" / "demo_server.py"
NODE_MODULES = HERE / "node_modules"
PINNED_NODE = NODE_MODULES / "node" / "bin" / "node"
CONFORMANCE_JS = NODE_MODULES / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
# The npm packages of package.json and where their installed manifest lives.
PACKAGES = {
    "@modelcontextprotocol/sdk": NODE_MODULES / "@modelcontextprotocol" / "sdk",
    "@modelcontextprotocol/conformance": NODE_MODULES / "@modelcontextprotocol" / "conformance",
    "node": NODE_MODULES / "node",
}
MIN_NODE_MAJOR = 22  # the conformance suite imports fs.globSync
INSTALL_TIMEOUT = 300.0
START_TIMEOUT = 20.0
MAX_BROWSER_STEPS = 10

USER = "interop-user"
PASSWORD = "interop password 42"


def service_missing(reason: str) -> None:
    """Skip visibly; fail when CI says the external tools must be there."""
    if os.environ.get("OAUTHD_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (OAUTHD_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


# -- npm packages ----------------------------------------------------------------------------


def _pins() -> dict[str, str]:
    manifest = json.loads((HERE / "package.json").read_text())
    return {name: str(manifest["dependencies"][name]) for name in PACKAGES}


def _installed(directory: Path) -> str | None:
    try:
        return str(json.loads((directory / "package.json").read_text()).get("version"))
    except (OSError, ValueError):
        return None


def _node_major(node: Path) -> int | None:
    try:
        out = subprocess.run(
            [str(node), "--version"], capture_output=True, text=True, timeout=20, check=True
        ).stdout
        return int(out.strip().lstrip("v").split(".")[0])
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def _mismatches() -> list[str]:
    pins = _pins()
    return [
        f"{name} {_installed(path) or 'missing'} (pinned {pins[name]})"
        for name, path in PACKAGES.items()
        if _installed(path) != pins[name]
    ]


def ensure_node_packages() -> Path:
    """`npm install` in tests/interop unless the pinned versions are there; returns the
    pinned Node.js (>= 22) that runs the SDK script and the suite. Skips (fails with
    OAUTHD_REQUIRE_SERVICES=1) without node/npm; fails when the install does."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(n for n, p in (("node", node), ("npm", npm)) if p is None)
        service_missing(f"the TypeScript SDK and conformance tests need {missing} (Node.js)")
    assert npm is not None
    if _mismatches():
        proc = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund"],
            cwd=HERE,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
        )
        still = _mismatches()
        if proc.returncode != 0 or still:
            pytest.fail(
                f"`npm install` in {HERE} failed (exit {proc.returncode}; {', '.join(still)}):\n"
                f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
            )
    major = _node_major(PINNED_NODE)
    if major is None or major < MIN_NODE_MAJOR:
        pytest.fail(
            f"{PINNED_NODE} is Node.js {major}, need >= {MIN_NODE_MAJOR}: the npm `node` "
            "package's install script did not run (npm may want it approved)"
        )
    return PINNED_NODE


# -- processes -------------------------------------------------------------------------------


def _get_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _wait(proc: subprocess.Popen[bytes], what: str, log: Path, ready: Any) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            state = f"exited with {proc.returncode}" if proc.poll() is not None else "not ready"
            pytest.fail(f"{what} {state}:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.05)


@dataclass(frozen=True, slots=True)
class Upstream:
    url: str
    log: Path


@contextmanager
def running_upstream(directory: Path) -> Iterator[Upstream]:
    """examples/demo_server.py (stateful: it hands out Mcp-Session-Id) on a free port."""
    port = free_port()
    log = directory / "demo-upstream.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(DEMO), "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def ready() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                return False

        _wait(proc, "the demo upstream", log, ready)
        yield Upstream(f"http://127.0.0.1:{port}/mcp", log)
    finally:
        _stop(proc)


@dataclass(frozen=True, slots=True)
class Oauthd:
    issuer: str
    log_path: Path

    @property
    def mcp_url(self) -> str:
        return f"{self.issuer}/mcp"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def oauthd_command() -> list[str]:
    script = Path(sys.executable).with_name("oauthd")
    if script.exists():
        return [str(script)]
    found = shutil.which("oauthd")
    return [found] if found else [sys.executable, "-m", "oauthd"]


@contextmanager
def running_oauthd(directory: Path, upstream: Upstream) -> Iterator[Oauthd]:
    """`oauthd serve --config <directory>/config.toml` (file state in <directory>/state)."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    config = directory / "config.toml"
    config.write_text(
        f"""
[server]
listen = "127.0.0.1:{port}"
issuer = "{issuer}"
shutdown_timeout = "2s"

[upstream]
url = "{upstream.url}"

[storage]
backend = "file"
path = "state"

[[login.users]]
username = "{USER}"
password_hash = "{hash_password(PASSWORD)}"
"""
    )
    log = directory / "oauthd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*oauthd_command(), "serve", "--config", str(config)],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        _wait(proc, "oauthd", log, lambda: _get_status(f"{issuer}/readyz") == 200)
        yield Oauthd(issuer, log)
    finally:
        _stop(proc)


@contextmanager
def running_stack(directory: Path) -> Iterator[Oauthd]:
    """The demo upstream and oauthd in front of it, both stopped at the end."""
    with running_upstream(directory) as upstream, running_oauthd(directory, upstream) as oauthd:
        yield oauthd


# -- oauthd's API and pages ------------------------------------------------------------------


async def register_client(
    issuer: str, redirect_uris: list[str], auth_method: str = "none", name: str = "interop"
) -> dict[str, Any]:
    body = {
        "client_name": name,
        "redirect_uris": redirect_uris,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": auth_method,
        "application_type": "native",
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{issuer}/register", json=body) as response,
    ):
        text = await response.text()
        assert response.status == 201, f"/register -> {response.status}: {text}"
        registered: dict[str, Any] = json.loads(text)
        return registered


async def play_browser(
    authorize_url: str, username: str = USER, password: str = PASSWORD
) -> tuple[str, list[str]]:
    """Follow `authorize_url` through oauthd's login and consent forms (allow) like a
    browser with cookies; return the URL oauthd finally redirects to (not fetched) and the
    steps taken. Fails on an error page or a form it does not know."""
    origin = urlsplit(authorize_url)[:2]
    steps: list[str] = []
    method, url, data = "GET", authorize_url, None
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        for _ in range(MAX_BROWSER_STEPS):
            async with http.request(
                method, url, data=data, allow_redirects=False, timeout=timeout
            ) as response:
                status, location = response.status, response.headers.get("Location")
                page = await response.text(errors="replace")
            steps.append(f"{method} {urlsplit(url).path} -> {status}")
            if status in (301, 302, 303, 307, 308) and location:
                target = urljoin(url, location)
                if urlsplit(target)[:2] != origin:
                    return target, steps
                method, url, data = "GET", target, None
                continue
            parsed = parse_page(page)
            posts = [f for f in parsed.forms if f.method == "post"]
            if status != 200 or len(posts) != 1:
                pytest.fail(f"browser at {steps}: {parsed.text[:600]}")
            form = posts[0]
            fields = dict(form.fields)
            if "password" in fields:
                fields |= {"username": username, "password": password}
            elif "allow" in form.choices("decision"):
                fields["decision"] = "allow"
            else:
                pytest.fail(f"browser at {steps}: unknown form {form}")
            method, url, data = "POST", urljoin(url, form.action or url), fields
    pytest.fail(f"browser: no redirect back to the client after {steps}")


def json_lines(text: str) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out
