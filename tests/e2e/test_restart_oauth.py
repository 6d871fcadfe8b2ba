"""The real daemon (`oauthd serve`) in a subprocess keeps what it promised across a clean
stop (SIGTERM) and a crash (SIGKILL): tokens, rotated tokens, registered clients,
remembered consents and pending device flows."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from oauthd import crypto
from tests.support.configs import INTROSPECTION_ID, PASSWORD_HASH, USER
from tests.support.http_client import OauthdClient, Pkce, user_code_as_typed
from tests.support.ports import free_port

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
REDIRECT = "http://127.0.0.1:45678/callback"
START_TIMEOUT = 15.0


def oauthd_command() -> list[str]:
    script = Path(sys.executable).with_name("oauthd")
    if script.exists():
        return [str(script)]
    found = shutil.which("oauthd")
    return [found] if found else [sys.executable, "-m", "oauthd"]


class Daemon:
    """`oauthd serve --config <dir>/oauthd.toml`, with its log in `<dir>/daemon-<n>.log`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.secret = crypto.new_secret()
        (directory / "introspection.secret").write_text(self.secret + "\n")
        self.config = directory / "oauthd.toml"
        self.config.write_text(
            f"""
[server]
listen = "127.0.0.1:{self.port}"
issuer = "{self.base}"
shutdown_timeout = "2s"

[storage]
backend = "file"
path = "state"

[introspection]
client_id = "{INTROSPECTION_ID}"
client_secret = "file:introspection.secret"

[[login.users]]
username = "{USER}"
password_hash = "{PASSWORD_HASH}"
"""
        )
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        with (self.directory / f"daemon-{self.starts}.log").open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                *oauthd_command(),
                "serve",
                "--config",
                str(self.config),
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                cwd=self.directory,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + START_TIMEOUT
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    pytest.fail(f"oauthd exited with {self.process.returncode}:\n{self.log()}")
                try:
                    async with session.get(f"{self.base}/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        pytest.fail(f"oauthd was not ready within {START_TIMEOUT} s:\n{self.log()}")

    def log(self) -> str:
        return (self.directory / f"daemon-{self.starts}.log").read_text(errors="replace")

    async def stop(self, sig: signal.Signals) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        try:
            async with asyncio.timeout(15):
                return await self.process.wait()
        finally:
            self.process = None

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def approve_device(client: OauthdClient, user_code: str) -> None:
    browser = client.browser()
    login = await browser.enter_user_code(user_code_as_typed(user_code))
    approval = await browser.sign_in(login)
    assert user_code in approval.text, approval.text
    done = await browser.decide(approval)
    assert done.status == 200 and "Device connected" in done.text


async def check_state_survived(
    daemon: Daemon,
    client: OauthdClient,
    app: dict[str, Any],
    tokens: dict[str, Any],
    device: dict[str, Any],
) -> dict[str, Any]:
    """Everything promised before the restart still holds; the newest token pair."""
    info = await client.introspect(tokens["access_token"], daemon.secret)
    assert info["active"] is True and info["client_id"] == app["client_id"]

    refreshed = await client.refresh(app, tokens["refresh_token"])
    assert refreshed.status == 200, refreshed.text
    newest: dict[str, Any] = refreshed.json()
    assert (await client.introspect(newest["access_token"], daemon.secret))["active"] is True

    # The client is still registered, and alice's consent to it is remembered.
    params = client.authorize_params(app["client_id"], REDIRECT, Pkce.new())
    page = await client.browser().authorize(params)
    assert page.status == 200 and "username" in page.form().fields, page.text
    code_tokens = await client.tokens(app, REDIRECT, consent=False)
    assert code_tokens["token_type"] == "Bearer"

    # The pending device flow can still be approved and polled.
    await approve_device(client, device["user_code"])
    polled = await client.poll(app, device["device_code"])
    assert polled.status == 200, polled.text
    assert (await client.introspect(polled.json()["access_token"], daemon.secret))["active"]
    return newest


async def test_state_survives_sigterm_and_sigkill(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    try:
        await daemon.start()
        client = OauthdClient(daemon.base, daemon.base)
        try:
            app = await client.register_public(
                client_name="Restart test",
                grant_types=["authorization_code", "refresh_token", DEVICE_GRANT],
            )
            tokens = await client.tokens(app, REDIRECT)
            devices = [await client.start_device(app) for _ in range(2)]
            pending = await client.poll(app, devices[0]["device_code"])
            assert pending.json()["error"] == "authorization_pending"
        finally:
            await client.close()

        for sig, device in ((signal.SIGTERM, devices[0]), (signal.SIGKILL, devices[1])):
            code = await daemon.stop(sig)
            assert code == (0 if sig is signal.SIGTERM else -signal.SIGKILL), daemon.log()
            await daemon.start()
            client = OauthdClient(daemon.base, daemon.base)
            try:
                if sig is signal.SIGTERM:  # the second device flow is still pending
                    waiting = await client.poll(app, devices[1]["device_code"])
                    assert waiting.json()["error"] in ("authorization_pending", "slow_down")
                tokens = await check_state_survived(daemon, client, app, tokens, device)
            finally:
                await client.close()
        assert await daemon.stop(signal.SIGTERM) == 0
    finally:
        await daemon.kill()
