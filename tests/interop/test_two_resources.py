"""Two MCP servers behind one oauthd (issue #12): the official Python and TypeScript SDK
clients log in, list and call tools, refresh and survive a restart against both; a token
for one is refused by the other; one browser sign-in covers both; the Python client steps
up when a tool needs more scope, and policy hides and denies what a caller may not use.

The stack: `oauthd serve` with two `[[resource]]` tables, `/mcp` (the demo server, scope
`mcp`) and `/files/mcp` (a second demo server named "oauthd-files", scopes `files:read`
and `files:write`, with rules: `echo` needs `files:write`, the `greet` prompt is denied).
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import anyio
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.interop.live_stack import HERE, ensure_node_packages
from tests.support.browser import Person
from tests.support.configs import INTEROP_PASSWORD, INTEROP_USER, real_password_hash, write_config
from tests.support.daemon import OauthdProcess
from tests.support.ports import free_port
from tests.support.sdk import SdkClient, sdk_client
from tests.support.upstream import DemoUpstream, text_of

MCP_ACCEPT = "application/json, text/event-stream"
DENIED_GREETING = "greetings are switched off here"


def resources_toml(demo_url: str, files_url: str) -> str:
    return f"""
[[resource]]
path = "/mcp"
name = "Demo tools"
url = "{demo_url}"
read_timeout = "60s"
scopes = ["mcp"]
required_scopes = ["mcp"]

[[resource]]
path = "/files/mcp"
name = "Files"
url = "{files_url}"
read_timeout = "60s"
scopes = ["files:read", "files:write"]
required_scopes = ["files:read"]

[[resource.rule]]
id = "echo-needs-write"
method = "tools/call"
name = "echo"
require_scopes = ["files:write"]

[[resource.rule]]
id = "no-greeting"
method = "prompts/*"
name = ["greet", "welcome_*"]
effect = "deny"
message = "{DENIED_GREETING}"
"""


def two_resource_daemon(directory: Path, demo_url: str, files_url: str) -> OauthdProcess:
    port = free_port()
    sections: dict[str, Any] = {
        "storage": {"backend": "file", "path": str(directory / "state")},
        "oauth": {"scopes": ["mcp"]},
    }
    path = directory / "config.toml"
    users = [(INTEROP_USER, real_password_hash(INTEROP_PASSWORD))]
    write_config(path, port, sections, users=users)
    with path.open("a", encoding="utf-8") as config:
        config.write(
            '[oauth.scope_implies]\n"files:write" = ["files:read"]\n'
            '[oauth.scope_descriptions]\n"files:write" = "Change your files"\n'
        )
        config.write(resources_toml(demo_url, files_url))
    return OauthdProcess(directory, path, port)


@pytest.fixture(scope="module")
def files_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoUpstream]:
    upstream = DemoUpstream(tmp_path_factory.mktemp("files") / "files.log", name="oauthd-files")
    upstream.start()
    try:
        yield upstream
    finally:
        upstream.stop()


@pytest.fixture
async def stack(
    tmp_path: Path, demo_upstream: DemoUpstream, files_upstream: DemoUpstream
) -> AsyncIterator[OauthdProcess]:
    daemon = two_resource_daemon(tmp_path, demo_upstream.url, files_upstream.url)
    try:
        await daemon.start()
        yield daemon
    finally:
        daemon.kill()


def files_url(oauthd: OauthdProcess) -> str:
    return f"{oauthd.issuer}/files/mcp"


async def status_with(url: str, access_token: str) -> tuple[int, str]:
    """The status and WWW-Authenticate of an MCP request to `url` with `access_token`."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    headers = {"Authorization": f"Bearer {access_token}", "Accept": MCP_ACCEPT}
    async with (
        aiohttp.ClientSession() as web,
        web.post(url, json=body, headers=headers) as response,
    ):
        return response.status, response.headers.get("WWW-Authenticate", "")


def access_token(client: SdkClient) -> str:
    tokens = client.storage.tokens
    assert tokens is not None
    return tokens.access_token


def asked(client: SdkClient, index: int = -1) -> dict[str, str]:
    """The parameters of an authorization request the client sent the person to."""
    query = urlsplit(client.authorization_urls[index]).query
    return {k: v[0] for k, v in parse_qs(query).items()}


async def use_demo(session: ClientSession) -> None:
    init = await session.initialize()
    assert init.server_info.name == "oauthd-demo"
    tools = await session.list_tools()
    assert {t.name for t in tools.tools} >= {"echo", "add", "whoami", "countdown"}
    assert text_of(await session.call_tool("add", {"a": 2, "b": 3})) == "5"


# -- the Python SDK ---------------------------------------------------------------------------


@pytest.mark.timeout(90)
async def test_python_sdk_two_resources_one_sign_in_step_up_and_restart(
    stack: OauthdProcess,
) -> None:
    person = Person(stack.issuer, same_browser=True)
    demo = sdk_client(stack.issuer, stack.mcp_url, "interop demo", "none", person)
    files = sdk_client(stack.issuer, files_url(stack), "interop files", "none", person)
    try:
        with anyio.fail_after(80):
            # Resource one: the first sign-in, with the password.
            async with (
                demo.http() as http,
                streamable_http_client(stack.mcp_url, http_client=http) as (read, write),
                ClientSession(read, write) as session,
            ):
                await use_demo(session)
                demo.force_refresh()
                assert text_of(await session.call_tool("add", {"a": 40, "b": 2})) == "42"
            assert asked(demo)["resource"] == stack.mcp_url
            assert (person.logins, person.pages) == (1, ["/login", "/consent"])

            # Resource two in the same browser: a consent page, no password.
            async with (
                files.http() as http,
                streamable_http_client(files_url(stack), http_client=http) as (read, write),
                ClientSession(read, write) as session,
            ):
                init = await session.initialize()
                assert init.server_info.name == "oauthd-files"
                assert asked(files)["resource"] == files_url(stack)
                assert person.logins == 1 and person.pages[2:] == ["/consent"]
                first_scopes = set(asked(files)["scope"].split())
                assert "files:write" not in first_scopes

                # Listing: the denied prompt is hidden; echo (a step-up away) stays.
                tools = {t.name for t in (await session.list_tools()).tools}
                assert {"echo", "add"} <= tools
                prompts = {p.name for p in (await session.list_prompts()).prompts}
                assert "greet" not in prompts
                with pytest.raises(MCPError) as denied:
                    await session.get_prompt("greet", {"name": "x"})
                assert DENIED_GREETING in str(denied.value)

                # Step-up: echo needs files:write; the SDK follows the 403 challenge, the
                # person approves the added scope, and the retried call succeeds.
                assert text_of(await session.call_tool("add", {"a": 1, "b": 2})) == "3"
                assert text_of(await session.call_tool("echo", {"text": "up"})) == "up"
                assert len(files.authorization_urls) == 2
                assert "files:write" in asked(files)["scope"].split()
                assert person.logins == 1  # still the one sign-in

                files.force_refresh()
                assert text_of(await session.call_tool("echo", {"text": "again"})) == "again"

            # A token is bound to its resource: presented at the other one, it is no token.
            for url, client in ((files_url(stack), demo), (stack.mcp_url, files)):
                status, challenge = await status_with(url, access_token(client))
                assert status == 401 and 'error="invalid_token"' in challenge, (url, challenge)

            # A crash of oauthd: both clients go on with no new login.
            await stack.restart(signal.SIGKILL)
            for client, url in ((demo, stack.mcp_url), (files, files_url(stack))):
                logins = len(client.authorization_urls)
                async with (
                    client.http() as http,
                    streamable_http_client(url, http_client=http) as (read, write),
                    ClientSession(read, write) as session,
                ):
                    await session.initialize()
                    assert text_of(await session.call_tool("add", {"a": 3, "b": 4})) == "7"
                    client.force_refresh()
                    assert text_of(await session.call_tool("add", {"a": 5, "b": 5})) == "10"
                assert len(client.authorization_urls) == logins
    finally:
        await person.close()
    assert person.logins == 1


# -- the TypeScript SDK -----------------------------------------------------------------------


def run_ts(node: Path, oauthd: OauthdProcess, url: str, *extra: str) -> dict[str, Any]:
    argv = [str(node), str(HERE / "ts_client.mjs"), "--url", url]
    argv += ["--username", INTEROP_USER, "--password", INTEROP_PASSWORD, *extra]
    proc = subprocess.run(argv, cwd=HERE, capture_output=True, text=True, timeout=60, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    result: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    if proc.returncode != 0 or not result.get("ok"):
        pytest.fail(
            f"ts_client.mjs failed (exit {proc.returncode})\nstdout:\n{proc.stdout[-6000:]}\n"
            f"stderr:\n{proc.stderr[-3000:]}\noauthd:\n{oauthd.log()[-6000:]}"
        )
    return result


@pytest.mark.timeout(120)
async def test_typescript_sdk_against_both_resources_and_across_a_restart(
    stack: OauthdProcess, tmp_path: Path
) -> None:
    node = ensure_node_packages()
    targets = {"oauthd-demo": stack.mcp_url, "oauthd-files": files_url(stack)}
    for name, url in targets.items():
        r = await anyio.to_thread.run_sync(
            lambda url=url, name=name: run_ts(  # type: ignore[misc]
                node, stack, url, "--save-state", str(tmp_path / f"{name}.json")
            )
        )
        [login] = r["authorizations"]
        assert login["resource"] == url and login["error"] is None
        assert r["server"]["name"] == name
        assert {"add", "countdown", "echo", "whoami"} <= set(r["tools"])
        assert r["add"] == "5" and r["after_refresh"] == "42" and r["countdown"] == "done"
        assert r["token_grants"] == [["authorization_code", 200], ["refresh_token", 200]]
        assert r["whoami_before"]["scopes"] in ("mcp", "files:read")

    await stack.restart(signal.SIGKILL)
    for name, url in targets.items():
        r = await anyio.to_thread.run_sync(
            lambda url=url, name=name: run_ts(  # type: ignore[misc]
                node, stack, url, "--resume", str(tmp_path / f"{name}.json")
            )
        )
        assert r["authorizations"] == []  # no login after the crash
        assert r["server"]["name"] == name
        assert r["add"] == "2" and r["after_refresh"] == "4"
        assert r["token_grants"] == [["refresh_token", 200]]
