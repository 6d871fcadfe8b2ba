"""kill -9 of the daemon under mixed load, on each backend (issue #14): after the kills and
a restart, every token a client received and every tool call the upstream received has
its audit record, and `oauthd audit verify` passes.

Clients refresh their grants (and sign in again when a refresh is refused) and call a
tool through `/mcp`, all at once, while the daemon is SIGKILLed at a random moment, KILLS
times. A token counts as received when its 200 answer was read whole; a call counts when
the upstream got it (its `X-Request-Id` names the `call_decided` record: `<id>.1`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.support.backends import open_harness
from tests.support.configs import TomlValue, write_config, write_secret
from tests.support.daemon import OauthdProcess
from tests.support.http_client import LOOPBACK_REDIRECT, OauthdClient, Pkce
from tests.support.ports import free_port
from tests.support.upstream import FakeUpstream

KILLS = 20
CLIENTS = 3
TOKEN_EVENTS = {"token_issued", "token_refreshed", "token_reissued"}
CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo"}}
REDIRECT = LOOPBACK_REDIRECT
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


@pytest.fixture(params=["file", "redis", "postgres"])
async def storage(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[dict[str, TomlValue]]:
    if request.param == "file":
        yield {"backend": "file", "path": str(tmp_path / "state")}
        return
    async with contextlib.aclosing(open_harness(request.param, tmp_path)) as opened:
        async for harness in opened:  # its namespace (prefix, schema) and its cleanup
            yield {**harness.storage(), "path": str(tmp_path / "state"), "timeout": "5s"}


@dataclass
class App:
    """One client: its registration, its newest tokens, the tokens it received."""

    registration: dict[str, Any]
    refresh_token: str = ""
    access_token: str = ""
    received: int = 0

    @property
    def client_id(self) -> str:
        return str(self.registration["client_id"])

    def took(self, body: dict[str, Any]) -> None:
        self.refresh_token, self.access_token = body["refresh_token"], body["access_token"]
        self.received += 1


@dataclass
class Load:
    client: OauthdClient
    apps: list[App]
    calls: list[str] = field(default_factory=list)  # request ids the upstream got

    async def sign_in(self, app: App) -> None:
        """The code flow (the consent page only when not remembered) and the exchange."""
        pkce = Pkce.new()
        params = self.client.authorize_params(app.client_id, REDIRECT, pkce)
        browser = self.client.browser()
        answer = await browser.sign_in(await browser.authorize(params))
        if answer.status == 200:
            answer = await browser.decide(answer)
        assert answer.status == 303, answer.text
        code = answer.redirect_query()["code"]
        resource = self.client.resource
        exchanged = await self.client.exchange(
            app.registration, code, pkce, REDIRECT, resource=resource
        )
        assert exchanged.status == 200, exchanged.text
        app.took(exchanged.json())

    async def run(self, app: App) -> None:
        """Refresh and call, in turn, until the daemon is gone (a connection error)."""
        while True:
            answer = await self.client.refresh(app.registration, app.refresh_token)
            if answer.status == 200:
                app.took(answer.json())
            elif answer.status == 400 and answer.json().get("error") == "invalid_grant":
                await self.sign_in(app)  # a rotation lost in a kill, past the grace
            else:
                raise AssertionError(f"refresh: {answer.status} {answer.text}")
            headers = {**MCP_HEADERS, "Authorization": f"Bearer {app.access_token}"}
            reply = await self.client.call("POST", "/mcp", json=CALL, headers=headers)
            assert reply.status == 200, reply.text


def daemon_for(directory: Path, storage: dict[str, TomlValue], upstream: str) -> OauthdProcess:
    port = free_port()
    write_secret(directory / "encryption.key", secrets.token_hex(32))
    sections: dict[str, dict[str, TomlValue]] = {
        "upstream": {"url": upstream},
        "storage": storage,
        "audit": {"calls": True},
        "login": {"encryption_key": f"file:{directory / 'encryption.key'}"},
    }
    return OauthdProcess(directory, write_config(directory / "oauthd.toml", port, sections), port)


async def load_then_kill(daemon: OauthdProcess, load: Load, rng: random.Random) -> None:
    """Start the daemon, load it for a random while, SIGKILL it mid-load."""
    await daemon.start()
    for app in load.apps:
        if not app.refresh_token:
            await load.sign_in(app)
    tasks = [asyncio.ensure_future(load.run(app)) for app in load.apps]
    await asyncio.sleep(rng.uniform(0.05, 0.6))
    for task in tasks:
        assert not task.done() or task.exception() is None, task.exception()
    daemon.kill()
    for task in tasks:  # each ends on its broken connection; a wrong answer fails here
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            await task


async def test_every_token_and_call_has_its_record_after_kills(
    tmp_path: Path, storage: dict[str, TomlValue]
) -> None:
    rng = random.Random()
    async with FakeUpstream() as upstream:
        daemon = daemon_for(tmp_path, storage, upstream.url)
        await daemon.start()
        client = OauthdClient(daemon.url, daemon.issuer)
        try:
            apps = [
                App(await client.register_public([REDIRECT], client_name=f"app {n}"))
                for n in range(CLIENTS)
            ]
            await daemon.stop()
            load = Load(client, apps)
            for _ in range(KILLS):
                await load_then_kill(daemon, load, rng)
            await daemon.start()  # recovery moves what the journal holds into the trail
            await daemon.stop()
        finally:
            await client.close()
            if daemon.running:
                daemon.kill()
        calls = [
            seen.headers["X-Request-Id"]
            for seen in upstream.of_method("POST")
            if seen.body and orjson.loads(seen.body).get("method") == "tools/call"
        ]

    verified = await daemon.command("audit", "verify")
    assert verified.code == 0, verified.out + verified.err
    exported = await daemon.command("audit", "export", "--format", "jsonl")
    assert exported.code == 0, exported.err
    records = [orjson.loads(line) for line in exported.out.splitlines() if line]

    assert sum(app.received for app in apps) > KILLS and len(calls) > KILLS  # a real load
    tokens = Counter(r["client_id"] for r in records if r["event"] in TOKEN_EVENTS)
    for app in apps:  # at most one answer per app was cut off by each kill
        assert app.received <= tokens[app.client_id] <= app.received + KILLS, app.client_id
    decided = {r["call"] for r in records if r["event"] == "call_decided"}
    missing = [rid for rid in calls if f"{rid}.1" not in decided]
    assert calls and not missing, f"{len(missing)} of {len(calls)} calls have no record"
