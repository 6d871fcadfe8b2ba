"""Fixtures for the interop tests: the demo upstream MCP server (one per session) and a live
`oauthd serve` subprocess in front of it (one per test, own state dir, restartable).

Every process started here is killed in teardown, also when the test failed; a failed
test shows the processes' logs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import pytest

from tests.support.daemon import OauthdProcess, proxy_daemon
from tests.support.upstream import DemoUpstream

_PROCESSES = pytest.StashKey[list[OauthdProcess | DemoUpstream]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report carries the logs of the processes it used."""
    report: pytest.TestReport = yield
    if report.failed:
        for process in item.stash.get(_PROCESSES, []):
            if isinstance(process, OauthdProcess):
                report.sections.append(("oauthd logs", process.logs()[-30000:]))
            else:
                report.sections.append(("demo upstream log", process.log()[-5000:]))
    return report


@pytest.fixture(scope="session")
def demo_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoUpstream]:
    """examples/demo_server.py (stateful, tools echo/add/whoami/countdown)."""
    upstream = DemoUpstream(tmp_path_factory.mktemp("demo") / "demo.log")
    upstream.start()
    try:
        yield upstream
    finally:
        upstream.stop()


@pytest.fixture
async def oauthd(
    request: pytest.FixtureRequest, tmp_path: Path, demo_upstream: DemoUpstream
) -> AsyncIterator[OauthdProcess]:
    """A started `oauthd serve` on a free port and a temp state dir, in front of the demo
    server. `await oauthd.stop(signal.SIGKILL)`, `await oauthd.start()`, `restart(sig)`."""
    daemon = proxy_daemon(tmp_path, demo_upstream.url)
    request.node.stash[_PROCESSES] = [daemon, demo_upstream]
    try:
        await daemon.start()
        yield daemon
    finally:
        daemon.kill()
