"""The store contract's fixtures: a store of every backend (`tests.support.backends`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.backends import (
    BY_NAME,
    CONTRACT_BACKENDS,
    DURABILITY_BACKENDS,
    FILE_BACKENDS,
    StoreHarness,
    open_harness,
)


def harness_fixture(name: str, backends: list[str], durable: bool = False) -> Callable[..., Any]:
    """The fixture `name`: a store of each of `backends` (a test each); with `durable`, a
    backend that is not skips with its reason."""

    @pytest.fixture(name=name, params=backends)
    async def fixture(
        request: pytest.FixtureRequest, tmp_path: Path
    ) -> AsyncIterator[StoreHarness]:
        backend = BY_NAME[request.param]
        if durable and not backend.durable:
            pytest.skip(backend.why_not_durable)
        async for h in open_harness(request.param, tmp_path):
            yield h

    return fixture


harness = harness_fixture("harness", CONTRACT_BACKENDS)  # every contract backend
durable_harness = harness_fixture("durable_harness", DURABILITY_BACKENDS, durable=True)
file_harness = harness_fixture("file_harness", FILE_BACKENDS)  # journaled and snapshot-only
journaled_harness = harness_fixture("journaled_harness", ["file"])
snapshot_harness = harness_fixture("snapshot_harness", ["file-snapshot"])
