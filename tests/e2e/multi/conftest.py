"""Fixtures for the multi-instance tests: per shared backend (redis, postgres), one cluster
of three `oauthd serve` processes behind a round-robin balancer, in front of the demo
upstream (`demo_upstream`, tests/conftest.py). Module-scoped: starting processes is what
costs time here, and the tests share nothing else (each registers its own clients and
makes its own grants).

A failed test's report carries the instances' logs (tests/conftest.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.e2e.multi.multi_stack import Cluster
from tests.support.backends import open_harness
from tests.support.daemon import OauthdProcess
from tests.support.upstream import DemoUpstream

CLUSTER_SIZE = 3


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["redis", "postgres"])
async def cluster(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    demo_upstream: DemoUpstream,
) -> AsyncIterator[Cluster]:
    """Three instances on a fresh namespace of the shared backend (a Redis key prefix or a
    PostgreSQL schema, migrated first and removed afterwards: `open_harness`); the
    balancer takes turns with all three."""
    directory = tmp_path_factory.mktemp(f"multi-{request.param}")
    async with contextlib.aclosing(open_harness(request.param, directory)) as harnesses:
        async for harness in harnesses:
            stack = await Cluster.start(directory, harness.storage(), demo_upstream.url)
            try:
                await stack.add_instances(CLUSTER_SIZE)
                stack.balance(stack.instances)
                yield stack
            finally:  # the namespace goes (aclosing) even if a process would not stop cleanly
                await stack.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def no_grace_pair(cluster: Cluster) -> list[OauthdProcess]:
    """Two more instances on the cluster's backend with `tokens.refresh_grace = "0s"`
    (started once per cluster, on first use; the balancer leaves them out)."""
    if not cluster.no_grace:
        cluster.no_grace = await cluster.add_instances(2, refresh_grace="0s")
    return cluster.no_grace


@pytest_asyncio.fixture(loop_scope="module")
async def limited_pair(cluster: Cluster) -> list[OauthdProcess]:
    """Two more instances on the cluster's backend with the default abuse limits (started
    once per cluster, on first use; the balancer leaves them out)."""
    if not cluster.limited:
        cluster.limited = await cluster.add_instances(2, oauth={})
    return cluster.limited
