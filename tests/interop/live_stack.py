"""A live stack for the Node.js interop tests (TypeScript SDK, conformance suite): the demo
upstream MCP server and a real `oauthd serve` in front of it (`tests.support`), and the
pinned npm packages of this folder.

    node = ensure_node_packages()       # skips without Node.js/npm (fails in CI)
    with running_stack(tmp_dir) as oauthd:
        ...  # oauthd.issuer, oauthd.mcp_url, oauthd.log()
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.daemon import OauthdProcess, proxy_daemon
from tests.support.services import node_major, service_missing
from tests.support.upstream import DemoUpstream

HERE = Path(__file__).resolve().parent
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


# -- npm packages ----------------------------------------------------------------------------


def _pins() -> dict[str, str]:
    manifest = json.loads((HERE / "package.json").read_text())
    return {name: str(manifest["dependencies"][name]) for name in PACKAGES}


def _installed(directory: Path) -> str | None:
    try:
        return str(json.loads((directory / "package.json").read_text()).get("version"))
    except (OSError, ValueError):
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
    major = node_major(PINNED_NODE)
    if major is None or major < MIN_NODE_MAJOR:
        pytest.fail(
            f"{PINNED_NODE} is Node.js {major}, need >= {MIN_NODE_MAJOR}: the npm `node` "
            "package's install script did not run (npm may want it approved)"
        )
    return PINNED_NODE


# -- processes -------------------------------------------------------------------------------


@contextmanager
def running_stack(directory: Path) -> Iterator[OauthdProcess]:
    """The demo upstream and oauthd in front of it, both stopped at the end."""
    upstream = DemoUpstream(directory / "demo-upstream.log")
    upstream.start()
    oauthd = proxy_daemon(directory, upstream.url)
    try:
        asyncio.run(oauthd.start())
        yield oauthd
    finally:
        asyncio.run(oauthd.stop())
        upstream.stop()


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
