"""The store contract's fixtures: a store of every backend (`tests.support.backends`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.backends import (
    BY_NAME,
    CONTRACT_BACKENDS,
    DURABILITY_BACKENDS,
    FILE_BACKENDS,
    StoreHarness,
    open_harness,
)


@pytest.fixture(params=CONTRACT_BACKENDS)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreHarness]:
    """Every contract backend."""
    async for h in open_harness(request.param, tmp_path):
        yield h


@pytest.fixture(params=DURABILITY_BACKENDS)
async def durable_harness(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreHarness]:
    """Every backend and mode; the non-durable ones skip with their reason."""
    backend = BY_NAME[request.param]
    if not backend.durable:
        pytest.skip(backend.why_not_durable)
    async for h in open_harness(request.param, tmp_path):
        yield h


@pytest.fixture(params=FILE_BACKENDS)
async def file_harness(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreHarness]:
    """The file backend, journaled and snapshot-only."""
    async for h in open_harness(request.param, tmp_path):
        yield h


@pytest.fixture
async def journaled_harness(tmp_path: Path) -> AsyncIterator[StoreHarness]:
    async for h in open_harness("file", tmp_path):
        yield h


@pytest.fixture
async def snapshot_harness(tmp_path: Path) -> AsyncIterator[StoreHarness]:
    async for h in open_harness("file-snapshot", tmp_path):
        yield h
