"""The MCP conformance suite's authorization-server scenarios (`conformance authorization`
of `@modelcontextprotocol/conformance` 0.2.0 alpha, pinned in package.json, on the pinned
Node.js 22) against a live oauthd: 0 failed and 0 warnings, with and without `--resource`.

The suite does no registration and waits for a person: it needs a pre-registered client
(registered here through /register with its listener's redirect URI), prints an
authorization URL and listens on http://127.0.0.1:<port>/callback. The test plays that
person: it follows oauthd's login and consent forms, then delivers the final redirect to the
suite's listener.

The client is public (`none`): with `--client-secret` this suite version still sends only
`client_id` whenever the server lists `none` (its selectTokenAuthMethod), which oauthd
rightly refuses (401 invalid_client). Confidential clients are covered by the SDK tests."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from tests.interop.live_stack import (
    CONFORMANCE_JS,
    HERE,
    ensure_node_packages,
    running_stack,
)
from tests.support.browser import Person
from tests.support.daemon import OauthdProcess
from tests.support.http_client import OauthdClient
from tests.support.ports import free_port
from tests.support.upstream import DemoUpstream

SCENARIOS = {"authorization-server-metadata-endpoint", "authorization-code-grant"}
URL_TIMEOUT = 30.0  # until the suite prints the authorization URL
RUN_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def node() -> Path:
    return ensure_node_packages()


@pytest.fixture(scope="module")
def conformance_stack(
    node: Path, tmp_path_factory: pytest.TempPathFactory, demo_upstream: DemoUpstream
) -> Iterator[OauthdProcess]:
    with running_stack(tmp_path_factory.mktemp("conformance"), demo_upstream.url) as oauthd:
        yield oauthd


@dataclass
class SuiteRun:
    exit_code: int
    output: str
    checks: dict[str, list[dict[str, Any]]]  # scenario -> its checks (checks.json)
    callback_status: int
    callback_body: str

    def summary(self) -> list[str]:
        """The suite's own summary lines (`✓ scenario: N passed, M failed`, `Total: ...`)."""
        _, _, tail = self.output.partition("=== SUMMARY ===")
        return [line.strip() for line in tail.splitlines() if line.strip()]

    def statuses(self) -> dict[str, list[str]]:
        return {name: [c["status"] for c in checks] for name, checks in self.checks.items()}


async def _read_until_url(stream: asyncio.StreamReader, prefix: str, seen: list[str]) -> str:
    while True:
        raw = await stream.readline()
        if not raw:
            raise AssertionError("the suite ended before printing an authorization URL")
        line = raw.decode(errors="replace").rstrip("\n")
        seen.append(line)
        if line.startswith(prefix):
            return line.strip()


async def _deliver(callback_url: str) -> tuple[int, str]:
    """GET the final redirect on the suite's listener (retrying while it starts)."""
    async with aiohttp.ClientSession() as http:
        for _ in range(50):
            try:
                async with http.get(callback_url, allow_redirects=False) as response:
                    return response.status, await response.text()
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
    raise AssertionError(f"the suite's listener never answered at {callback_url}")


def _read_checks(out_dir: Path) -> dict[str, list[dict[str, Any]]]:
    checks: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(out_dir.glob("*/checks.json")):
        name = next(
            (s for s in SCENARIOS if path.parent.name.startswith(f"authorization-server-{s}-")),
            path.parent.name,
        )
        checks[name] = json.loads(path.read_text())
    return checks


async def run_suite(
    node: Path, oauthd: OauthdProcess, out_dir: Path, resource: str | None
) -> SuiteRun:
    port = free_port()
    api = OauthdClient(oauthd.url, oauthd.issuer)
    try:
        client = await api.register_public(
            [f"http://127.0.0.1:{port}/callback"],
            client_name="conformance suite",
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            application_type="native",
        )
    finally:
        await api.close()
    argv = [str(CONFORMANCE_JS), "authorization", "--url", oauthd.issuer]
    argv += ["--client-id", client["client_id"], "--port", str(port)]
    argv += ["--output-dir", str(out_dir)]
    if resource is not None:
        argv += ["--resource", resource]
    proc = await asyncio.create_subprocess_exec(
        str(node),
        *argv,
        cwd=HERE,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(URL_TIMEOUT):
            url = await _read_until_url(proc.stdout, f"{oauthd.issuer}/authorize?", seen)
        person = Person(oauthd.issuer)
        target = (await person.authorize(url)).location
        assert target.startswith(f"http://127.0.0.1:{port}/callback?"), (target, person.pages)
        callback_status, callback_body = await _deliver(target)
        async with asyncio.timeout(RUN_TIMEOUT):
            rest = await proc.stdout.read()
            exit_code = await proc.wait()
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        print("\n".join(seen))
        print(oauthd.log()[-6000:])
        raise
    output = "\n".join(seen) + "\n" + rest.decode(errors="replace")
    return SuiteRun(exit_code, output, _read_checks(out_dir), callback_status, callback_body)


@pytest.mark.parametrize("with_resource", [False, True], ids=["no-resource", "resource"])
async def test_conformance_authorization_server(
    node: Path, conformance_stack: OauthdProcess, tmp_path: Path, with_resource: bool
) -> None:
    resource = f"{conformance_stack.issuer}/mcp" if with_resource else None
    run = await run_suite(node, conformance_stack, tmp_path / "results", resource)
    report = f"{run.output}\n--- oauthd log ---\n{conformance_stack.log()[-6000:]}"

    assert run.callback_status == 200, (run.callback_body, report)
    assert set(run.checks) == SCENARIOS, report
    statuses = run.statuses()
    # Every check passed: no FAILURE, no WARNING (e.g. CIMD support), nothing SKIPPED.
    assert all(s == "SUCCESS" for each in statuses.values() for s in each), (statuses, report)
    assert statuses["authorization-code-grant"] == ["SUCCESS"], report

    summary = run.summary()
    total = next((line for line in summary if line.startswith("Total:")), "")
    assert re.fullmatch(r"Total: \d+ passed, 0 failed", total), (summary, report)
    for scenario in SCENARIOS:
        assert any(re.search(rf"{scenario}: \d+ passed, 0 failed$", s) for s in summary), report
    assert run.exit_code == 0, report

    # What the suite saw: the redirect carried state and RFC 9207 iss, tokens came back.
    [grant] = run.checks["authorization-code-grant"]
    details = grant["details"]
    redirect = parse_qs(urlsplit(details["authorizationResponseUrl"]).query)
    assert redirect["iss"] == [conformance_stack.issuer] and len(redirect["state"]) == 1
    assert details["body"]["token_type"] == "Bearer"
    sent = parse_qs(urlsplit(details["authorizationRequest"]).query)
    assert sent.get("resource") == ([resource] if resource else None)
    print("\n".join(summary))
