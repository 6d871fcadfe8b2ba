"""Fixtures for the `/mcp` proxy tests: a scriptable fake upstream MCP server (`upstream`)
and oauthd in front of it (`start_oauthd(**sections)`, or `oauthd` with the defaults).

Both run on 127.0.0.1 in the test's event loop. `TestServer` runs its app with
`handler_cancellation=True`, as the daemon does (`oauthd/daemon.py`), so a client that
goes away cancels its handler."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

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
    fake = FakeUpstream()
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def start_oauthd(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[StartOauthd]:
    """`await start_oauthd(upstream={...}, oauth={...})`: oauthd with those config keys
    changed, its `upstream.url` the fake upstream unless given."""
    started: list[Oauthd] = []

    async def start(**sections: Any) -> Oauthd:
        directory = tmp_path / f"oauthd-{len(started)}"
        directory.mkdir()
        running = await Oauthd.start_in(directory, upstream_url=upstream.url, **sections)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.close()


@pytest.fixture
async def oauthd(start_oauthd: StartOauthd) -> Oauthd:
    return await start_oauthd()
