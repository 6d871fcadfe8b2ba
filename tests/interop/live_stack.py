"""A live stack for the Node.js interop tests (TypeScript SDK, conformance suite): a real
`oauthd serve` in front of the demo upstream MCP server (`tests.support`), and the pinned
npm packages of this folder.

    node = ensure_node_packages()       # skips without Node.js/npm (fails in CI)
    with running_stack(tmp_dir, demo_upstream.url) as oauthd:
        ...  # oauthd.issuer, oauthd.mcp_url, oauthd.log()
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.daemon import OauthdProcess, proxy_daemon
from tests.support.services import node_major, npm_packages

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


# -- npm packages ----------------------------------------------------------------------------


def ensure_node_packages() -> Path:
    """`npm install` in tests/interop unless the pinned versions are there; returns the
    pinned Node.js (>= 22) that runs the SDK script and the suite. Skips (fails with
    OAUTHD_REQUIRE_SERVICES=1) without node/npm; fails when the install does."""
    npm_packages(HERE, PACKAGES, "the TypeScript SDK and conformance tests")
    major = node_major(PINNED_NODE)
    if major is None or major < MIN_NODE_MAJOR:
        pytest.fail(
            f"{PINNED_NODE} is Node.js {major}, need >= {MIN_NODE_MAJOR}: the npm `node` "
            "package's install script did not run (npm may want it approved)"
        )
    return PINNED_NODE


# -- processes -------------------------------------------------------------------------------


@contextmanager
def running_stack(directory: Path, upstream_url: str) -> Iterator[OauthdProcess]:
    """oauthd in front of the MCP server at `upstream_url` (the `demo_upstream` fixture),
    stopped at the end."""
    oauthd = proxy_daemon(directory, upstream_url)
    try:
        asyncio.run(oauthd.start())
        yield oauthd
    finally:
        asyncio.run(oauthd.stop())
