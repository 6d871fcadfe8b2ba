"""The real daemon (`oauthd serve`) in a subprocess keeps what it promised across a clean
stop (SIGTERM) and a crash (SIGKILL): tokens, rotated tokens, registered clients,
remembered consents, pending device flows and the /account page's sign-ins."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from oauthd import crypto
from tests.support.browser import Browser
from tests.support.configs import (
    INTROSPECTION_ID,
    PASSWORD,
    USER,
    TomlValue,
    write_config,
    write_secret,
)
from tests.support.daemon import OauthdProcess
from tests.support.forms import parse_forms
from tests.support.http_client import OauthdClient, Pkce, user_code_as_typed
from tests.support.ports import free_port

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
REDIRECT = "http://127.0.0.1:45678/callback"
START_TIMEOUT = 15.0


def file_daemon(directory: Path) -> OauthdProcess:
    """File state in `<directory>/state`, an introspection client (`secret_of`)."""
    write_secret(directory / "introspection.secret", crypto.new_secret() + "\n")
    port = free_port()
    sections: dict[str, dict[str, TomlValue]] = {
        "storage": {"backend": "file", "path": "state"},
        "introspection": {
            "client_id": INTROSPECTION_ID,
            "client_secret": "file:introspection.secret",
        },
    }
    return OauthdProcess(directory, write_config(directory / "oauthd.toml", port, sections), port)


def secret_of(daemon: OauthdProcess) -> str:
    return (daemon.directory / "introspection.secret").read_text().strip()


async def check_state_survived(
    daemon: OauthdProcess,
    client: OauthdClient,
    app: dict[str, Any],
    tokens: dict[str, Any],
    device: dict[str, Any],
) -> dict[str, Any]:
    """Everything promised before the restart still holds; the newest token pair."""
    info = await client.introspect(tokens["access_token"], secret_of(daemon))
    assert info["active"] is True and info["client_id"] == app["client_id"]

    refreshed = await client.refresh(app, tokens["refresh_token"])
    assert refreshed.status == 200, refreshed.text
    newest: dict[str, Any] = refreshed.json()
    assert (await client.introspect(newest["access_token"], secret_of(daemon)))["active"] is True

    # The client is still registered, and alice's consent to it is remembered.
    params = client.authorize_params(app["client_id"], REDIRECT, Pkce.new())
    page = await client.browser().authorize(params)
    assert page.status == 200 and "username" in page.form().fields, page.text
    code_tokens = await client.tokens(app, REDIRECT, consent=False)
    assert code_tokens["token_type"] == "Bearer"

    # The pending device flow can still be approved and polled.
    await client.browser().approve_device(
        device["user_code"], user_code_as_typed(device["user_code"])
    )
    polled = await client.poll(app, device["device_code"])
    assert polled.status == 200, polled.text
    assert (await client.introspect(polled.json()["access_token"], secret_of(daemon)))["active"]
    return newest


async def test_state_survives_sigterm_and_sigkill(tmp_path: Path) -> None:
    daemon = file_daemon(tmp_path)
    try:
        await daemon.start()
        client = OauthdClient(daemon.url, daemon.url)
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
            client = OauthdClient(daemon.url, daemon.url)
            try:
                if sig is signal.SIGTERM:  # the second device flow is still pending
                    waiting = await client.poll(app, devices[1]["device_code"])
                    assert waiting.json()["error"] in ("authorization_pending", "slow_down")
                tokens = await check_state_survived(daemon, client, app, tokens, device)
            finally:
                await client.close()
        assert await daemon.stop(signal.SIGTERM) == 0
    finally:
        daemon.kill()


async def test_an_account_session_survives_sigterm_and_sigkill(tmp_path: Path) -> None:
    """The /account sign-in (#11 item 8) is kept in the state like every other login."""
    daemon = file_daemon(tmp_path)
    browser = Browser(daemon.url)
    try:
        await daemon.start()
        login = await browser.go("GET", "/account")
        page = await browser.submit(login, username=USER, password=PASSWORD)
        assert "Connected apps" in page.text, page.text
        for sig in (signal.SIGTERM, signal.SIGKILL):
            await daemon.stop(sig)
            await daemon.start()
            page = await browser.go("GET", "/account")
            assert "Connected apps" in page.text, f"signed out by {sig.name}"
        (logout,) = [f for f in parse_forms(page.text) if f.action == "/account/logout"]
        out = await browser.go(
            "POST", "/account/logout", data=logout.fields, headers={"Origin": daemon.url}
        )
        assert out.form().action == "/account/login"
        await daemon.stop(signal.SIGKILL)  # the sign-out is as durable as the sign-in
        await daemon.start()
        assert (await browser.go("GET", "/account")).form().action == "/account/login"
    finally:
        await browser.close()
        daemon.kill()
