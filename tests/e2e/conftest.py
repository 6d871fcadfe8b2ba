"""Fixtures for the outage tests (test_backend_outage*.py): `backend`, a private Redis or
PostgreSQL server of the test's own (tests/e2e/outage_servers.py) that it may crash, freeze
and start again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.e2e.outage_servers import TIMEOUT, Backend, PostgresBackend, RedisBackend


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[Path]:
    """One initdb for the run; each test's cluster is a copy of it."""
    template = PostgresBackend()
    try:
        template.init()
        yield template.data
    finally:
        template.close()


@pytest.fixture(params=["redis", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    chosen: Backend
    if request.param == "redis":
        chosen = RedisBackend(tmp_path / "redis", TIMEOUT)
    else:
        pytest.importorskip("psycopg_pool")
        chosen = PostgresBackend(request.getfixturevalue("postgres_template"), TIMEOUT)
    try:
        await chosen.start()
        yield chosen
    finally:
        await asyncio.to_thread(chosen.close)
