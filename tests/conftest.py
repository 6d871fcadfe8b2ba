"""Fixtures for every test. The helpers are in `tests/support/` (see tests/README.md)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.support", "tests.e2e", "tests.interop")

from oauthd.clock import FakeClock  # noqa: E402
from tests.support.daemon import Spawn, spawner  # noqa: E402


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def spawn_oauthd(tmp_path: Path) -> Iterator[Spawn]:
    """`spawn_oauthd(config, port, *args, **env)`: an `oauthd serve` process (killed at the
    end of the test)."""
    with spawner(tmp_path) as spawn:
        yield spawn
