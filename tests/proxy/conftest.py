"""Fixtures for the `/mcp` proxy tests: a scriptable fake upstream MCP server (`upstream`)
and oauthd in front of it (`start_oauthd(**sections)`, or `oauthd` with the defaults).

Both run on 127.0.0.1 in the test's event loop. `TestServer` runs its app with
`handler_cancellation=True`, as the daemon does (`oauthd/daemon.py`), so a client that
goes away cancels its handler."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.app import starter
from tests.support.proxy_app import Oauthd, StartOauthd
from tests.support.upstream import FakeUpstream


@pytest.fixture(autouse=True)
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No test may make oauthd (or aiohttp under it) log an error: an unhandled exception
    in the proxy is a 500 or a broken stream, whatever the client happened to see."""
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as fake:
        yield fake


@pytest.fixture
async def start_oauthd(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[StartOauthd]:
    """`await start_oauthd(upstream={...}, oauth={...})`: oauthd with those config keys
    changed, its `upstream.url` the fake upstream unless given."""
    async with starter(tmp_path, Oauthd, upstream_url=upstream.url) as start:
        yield start


@pytest.fixture
async def oauthd(start_oauthd: StartOauthd) -> Oauthd:
    return await start_oauthd()
