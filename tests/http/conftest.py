"""Fixtures for the HTTP tests: oauthd's app in process (`tests.support.app.Running`:
file-backed state in the test's temp dir, a fake clock, the users alice and bob) and a
client that talks to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.app import Running, Start, starter
from tests.support.http_client import OauthdClient


@pytest.fixture
async def start_oauthd(tmp_path: Path) -> AsyncIterator[Start]:
    """`await start_oauthd(issuer=..., oauth={...}, ...)`: a running oauthd (see
    `make_config` for the arguments). Each call gets its own state dir."""
    async with starter(tmp_path, Running) as start:
        yield start


@pytest.fixture
async def oauthd(start_oauthd: Start) -> Running:
    """oauthd with the test defaults."""
    return await start_oauthd()


@pytest.fixture
def client(oauthd: Running) -> OauthdClient:
    return oauthd.client
