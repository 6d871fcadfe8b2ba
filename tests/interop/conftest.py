"""Fixtures for the interop tests: a live `oauthd serve` subprocess (one per test, own state
dir, restartable) in front of the demo upstream MCP server (`demo_upstream`, tests/conftest.py).

Every process started here is killed in teardown, also when the test failed; a failed
test shows the processes' logs (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.daemon import OauthdProcess, proxy_daemon
from tests.support.upstream import DemoUpstream


@pytest.fixture
async def oauthd(tmp_path: Path, demo_upstream: DemoUpstream) -> AsyncIterator[OauthdProcess]:
    """A started `oauthd serve` on a free port and a temp state dir, in front of the demo
    server. `await oauthd.stop(signal.SIGKILL)`, `await oauthd.start()`, `restart(sig)`."""
    daemon = proxy_daemon(tmp_path, demo_upstream.url)
    try:
        await daemon.start()
        yield daemon
    finally:
        daemon.kill()
