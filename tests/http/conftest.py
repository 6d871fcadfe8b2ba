"""Fixtures for the HTTP tests: oauthd on a `TestServer` (file-backed state in the test's
temp dir, a fake clock, the user alice) and a client that talks to it.

There is deliberately no `tests/http/__init__.py`: with pytest's default import mode it
would make this directory the package `http` and shadow the standard library's `http`
for the rest of the session. The helpers live in `http_harness.py` next to this file."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from oauthd.clock import FakeClock
from oauthd.http import create_app
from tests.support.configs import make_config
from tests.support.http_client import OauthdClient, Running, Start
from tests.support.ports import free_port


@pytest.fixture
async def start_oauthd(tmp_path: Path) -> AsyncIterator[Start]:
    """`await start_oauthd(issuer=..., oauth={...}, ...)`: a running oauthd (see
    `make_config` for the arguments). Each call gets its own state dir."""
    running: list[Running] = []

    async def start(**changes: Any) -> Running:
        port = free_port()
        directory = tmp_path / f"oauthd-{len(running)}"
        directory.mkdir()
        config = make_config(directory, port, **changes)
        clock = FakeClock(time.time())
        server = TestServer(create_app(config, clock=clock), host="127.0.0.1", port=port)
        await server.start_server()
        base = f"http://127.0.0.1:{port}"
        app = Running(config, clock, server, OauthdClient(base, config.server.issuer), directory)
        running.append(app)
        return app

    yield start
    for app in running:
        await app.stop()


@pytest.fixture
async def oauthd(start_oauthd: Start) -> Running:
    """oauthd with the test defaults."""
    return await start_oauthd()


@pytest.fixture
def client(oauthd: Running) -> OauthdClient:
    return oauthd.client
