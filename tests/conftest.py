"""Fixtures for every test. The helpers are in `tests/support/` (see tests/README.md)."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.support", "tests.e2e", "tests.interop")

from oauthd.clock import FakeClock  # noqa: E402
from tests.support.daemon import Spawn, spawner  # noqa: E402
from tests.support.upstream import DemoUpstream  # noqa: E402


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report carries the logs of the processes its fixtures started (every
    fixture value with a `logs()`: a daemon, the demo upstream, a cluster)."""
    report: pytest.TestReport = yield
    if report.failed:
        for name, value in getattr(item, "funcargs", {}).items():
            if callable(logs := getattr(value, "logs", None)):
                report.sections.append((f"{name}: logs", str(logs())[-30000:]))
    return report


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def spawn_oauthd(tmp_path: Path) -> Iterator[Spawn]:
    """`spawn_oauthd(config, port, *args, **env)`: an `oauthd serve` process (killed at the
    end of the test)."""
    with spawner(tmp_path) as spawn:
        yield spawn


@pytest.fixture(scope="session")
def demo_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoUpstream]:
    """examples/demo_server.py (stateful, tools echo/add/whoami/countdown), one per run."""
    upstream = DemoUpstream(tmp_path_factory.mktemp("demo") / "demo.log")
    upstream.start()
    try:
        yield upstream
    finally:
        upstream.stop()
