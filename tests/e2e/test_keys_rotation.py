"""A key rotation under load (issue #13): `oauthd serve` signs each proxied request's
identity (`signed_identity`); the demo MCP server verifies every one with PyJWT's caching
`PyJWKClient` (`--verify-identity`) while `oauthd keys rotate` runs and the next key is
promoted after `jwks_max_age` (2 s here): no request fails. `oauthd keys list|rotate|
retire` (text, --json, the refusals' exit codes); a restart keeps the keys; no private key
in clear in the state dir or in any log."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from oauthd.clock import FakeClock
from oauthd.crypto import Sealer
from oauthd.store import FileStore
from oauthd.store.file import make_engine
from tests.support.configs import PASSWORD_HASH, USER
from tests.support.daemon import OauthdProcess, proxy_daemon
from tests.support.http_client import OauthdClient
from tests.support.secrets_scan import assert_no_secret, private_key_forms, state_files
from tests.support.upstream import DemoUpstream

pytestmark = pytest.mark.timeout(120)
MAX_AGE = 2


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[OauthdProcess, DemoUpstream]]:
    demo = DemoUpstream(tmp_path / "demo.log", stateless=True)
    daemon = proxy_daemon(
        tmp_path,
        demo.url,
        users=[(USER, PASSWORD_HASH)],
        upstream={"url": demo.url, "read_timeout": "60s", "signed_identity": True},
        keys={"jwks_max_age": MAX_AGE},
    )
    demo.verify_identity = f"{daemon.url}/.well-known/jwks.json"
    demo.jwks_lifespan = MAX_AGE  # as a verifier should: no longer than oauthd says
    try:
        await daemon.start()
        demo.start()
        yield daemon, demo
    finally:
        daemon.kill()
        demo.stop()


async def access_token(daemon: OauthdProcess) -> str:
    client = OauthdClient(daemon.url, daemon.issuer)
    try:
        app = await client.register_public(client_name="rotation")
        return str((await client.tokens(app))["access_token"])
    finally:
        await client.close()


class Load:
    """whoami over and over through oauthd, as one MCP client; what each call saw."""

    def __init__(self, daemon: OauthdProcess, token: str) -> None:
        self.daemon, self.token = daemon, token
        self.kids: list[str] = []
        self.failures: list[str] = []
        self.stop = asyncio.Event()

    async def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with (
            httpx2.AsyncClient(headers=headers) as http,
            streamable_http_client(self.daemon.mcp_url, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            while True:  # at least one call
                try:
                    me = await session.call_tool("whoami", {})
                    assert not me.is_error, me
                    assert me.structured_content is not None
                    assert me.structured_content["identity"]["sub"] == USER
                    self.kids.append(me.structured_content["identity_kid"])
                except Exception as exc:  # counted, not raised: the test asserts none
                    self.failures.append(repr(exc))
                if self.stop.is_set():
                    return
                await asyncio.sleep(0.02)


async def cli(daemon: OauthdProcess, *args: str, code: int = 0) -> str:
    done = await daemon.command("keys", *args)
    assert done[0] == code, f"keys {args}: exit {done[0]}: {done[2]}"
    return done[1] if code == 0 else done[2]


async def jwks(daemon: OauthdProcess) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{daemon.url}/.well-known/jwks.json") as answer,
    ):
        assert answer.headers["Cache-Control"] == f"public, max-age={MAX_AGE}"
        doc: dict[str, Any] = await answer.json()
        return doc


async def test_rotation_under_load_restart_and_no_key_in_clear(
    stack: tuple[OauthdProcess, DemoUpstream],
) -> None:
    daemon, demo = stack
    token = await access_token(daemon)
    load = Load(daemon, token)
    with anyio.fail_after(60):
        task = asyncio.create_task(load.run())
        await wait_for(lambda: len(load.kids) >= 10, load)
        rotated = await cli(daemon, "rotate")
        assert rotated.startswith("created next key k2 (ES256): published now, signs from ")
        assert [k["kid"] for k in (await jwks(daemon))["keys"]] == ["k2", "k1"]
        await wait_for(lambda: "k2" in load.kids, load)
        seen = len(load.kids)
        await wait_for(lambda: len(load.kids) >= seen + 20, load)
        load.stop.set()
        await task
    assert load.failures == [], load.failures[:3]
    switch = load.kids.index("k2")
    assert set(load.kids[:switch]) == {"k1"} and set(load.kids[switch:]) == {"k2"}
    assert switch >= 10 and len(load.kids) - switch >= 20

    listed = json.loads(await cli(daemon, "list", "--json"))
    assert [(k["kid"], k["state"]) for k in listed] == [("k2", "active"), ("k1", "retired")]
    k1 = listed[1]
    assert k1["expires_at"] == pytest.approx(k1["retired_at"] + 60 + 2 * MAX_AGE)
    text = await cli(daemon, "list")
    assert text.splitlines()[0].split() == [
        "KID", "ALG", "STATE", "CREATED", "SIGNS", "FROM", "RETIRED", "UNPUBLISHED"
    ]  # fmt: skip
    assert text.endswith("\n2 keys\n")
    await refusals(daemon)

    before = await jwks(daemon)
    await daemon.stop()
    await daemon.start()
    assert await jwks(daemon) == before  # a restart keeps the keys
    again = Load(daemon, token)
    again.stop.set()  # one call
    await again.run()
    assert again.failures == [] and again.kids == ["k2"]
    await daemon.stop()
    await no_private_key_in_clear(daemon, demo)


async def refusals(daemon: OauthdProcess) -> None:
    assert "no signing key 'k9'" in await cli(daemon, "retire", "k9", code=66)
    assert "no next key" in await cli(daemon, "retire", "k2", code=1)
    assert "retired already" in await cli(daemon, "retire", "k1", code=1)
    created = json.loads(await cli(daemon, "rotate", "--json"))["created"]
    assert (created["kid"], created["state"]) == ("k3", "next")
    assert "already waiting" in await cli(daemon, "rotate", code=1)
    dropped = json.loads(await cli(daemon, "retire", "k3", "--json"))
    assert dropped["retired"]["state"] == "retired" and dropped["promoted"] is None


async def wait_for(condition: Any, load: Load) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert not load.failures, load.failures[:3]
        assert time.monotonic() < deadline, f"timed out; kids seen: {load.kids[-5:]}"
        await asyncio.sleep(0.05)


async def no_private_key_in_clear(daemon: OauthdProcess, demo: DemoUpstream) -> None:
    """Open the stopped daemon's state offline, unseal its keys with its session key, and
    look for them everywhere: the state dir, the daemon's logs, the upstream's log."""
    state = daemon.directory / "state"
    sealer = Sealer(bytes.fromhex((state / "session.key").read_text().strip()))
    store = await FileStore.open(
        make_engine(state, journaled=True, interval=30, debounce=0.05, max_wait=0.2),
        FakeClock(time.time()),
    )
    try:
        keys = [k async for k in store.signing_keys.scan()]
    finally:
        await store.close()
    assert {k.kid for k in keys} == {"k1", "k2", "k3"}
    forms = {f for k in keys for f in private_key_forms(sealer.open(k.sealed_private, k.kid))}
    places: dict[str, bytes | str] = {**state_files(state)}
    places["daemon log"] = daemon.logs() + "".join(daemon.stderr(n) for n in (1, 2))
    places["upstream log"] = demo.logs()
    assert "audit.key_rotated" in str(places["daemon log"])
    assert_no_secret(forms, places)
