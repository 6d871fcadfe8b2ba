"""No secret in clear: after every kind of flow, no token, code, client secret, device
code, cookie value or password the test was handed appears in any file of the state dir
or in the JSON log (at debug level)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.support.app import Running, Start
from tests.support.configs import PASSWORD
from tests.support.http_client import basic_auth, user_code_as_typed
from tests.support.secrets_scan import assert_no_secret, json_log, state_files

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@pytest.fixture
def debug_log() -> Iterator[None]:
    with json_log("debug"):
        yield


async def run_every_flow(oauthd: Running) -> dict[str, Any]:
    """Code flow, refresh (and a retry), /mcp calls, revocation, a confidential client, a
    failed login, the device flow and introspection; what it saw that is not in
    `client.seen`."""
    client = oauthd.client
    public = await client.register_public(
        client_name="Public", grant_types=["authorization_code", "refresh_token", DEVICE_GRANT]
    )
    tokens = await client.tokens(public)
    lost = (await client.refresh(public, tokens["refresh_token"])).json()
    retried = await client.refresh(public, tokens["refresh_token"])  # inside the grace window
    live = retried.json()
    await client.introspect(live["access_token"], oauthd.introspection_secret)
    assert (await client.call_mcp(live["access_token"])).status == 502
    assert (await client.call_mcp(lost["access_token"])).status == 401
    revoke = {"token": live["access_token"], "client_id": public["client_id"]}
    await client.call("POST", "/revoke", data=revoke)

    web = await client.register(redirect_uris=["https://app.example/cb"], client_name="Web")
    code, pkce = await client.authorization_code(web, "https://app.example/cb")
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": pkce.verifier,
        "redirect_uri": "https://app.example/cb",
    }
    headers = basic_auth(web["client_id"], web["client_secret"])
    web_tokens = (await client.token(headers=headers, **form)).json()
    assert (await client.token(headers=headers, **form)).status == 200  # retried: unused
    await client.call_mcp(web_tokens["access_token"])  # a voided token: refused, not used
    retried_code = (await client.token(headers=headers, **form)).json()
    await client.call_mcp(retried_code["access_token"])
    assert (await client.token(headers=headers, **form)).status == 400  # replayed code
    await client.token(headers=basic_auth(web["client_id"], "wrong-secret"), **form)
    await client.call(
        "POST", "/revoke", data={"token": web_tokens["refresh_token"]}, headers=headers
    )

    browser = client.browser()
    page = await browser.authorize(
        client.authorize_params(public["client_id"], "http://127.0.0.1:5/callback", pkce)
    )
    await browser.sign_in(page, password="a wrong password")

    started = await client.start_device(public)
    await client.poll(public, started["device_code"])
    code = started["user_code"]
    await client.browser().approve_device(code, user_code_as_typed(code))
    assert (await client.poll(public, started["device_code"])).status == 200
    return {"user_code": started["user_code"], "web_client_id": web["client_id"]}


async def test_no_secret_in_the_state_dir_or_the_log(
    start_oauthd: Start, debug_log: None, capsys: pytest.CaptureFixture[str]
) -> None:
    oauthd = await start_oauthd()
    extra = await run_every_flow(oauthd)
    state = oauthd.config.storage.path
    while_running = state_files(state)
    await oauthd.stop()  # the final snapshot
    after_stop = state_files(state)
    log = capsys.readouterr().out

    secrets = oauthd.client.secrets() | {PASSWORD, oauthd.introspection_secret}
    assert len(secrets) >= 15, secrets  # tokens, codes, secrets, cookies were all collected
    places = {**{f"{k} (running)": v for k, v in while_running.items()}, **after_stop}
    places["the log"] = log.encode()
    assert_no_secret(secrets, places)

    # The control: what was grepped is the real thing.
    assert any(extra["web_client_id"].encode() in content for content in after_stop.values())
    events = [orjson.loads(line).get("event") for line in log.splitlines() if line.strip()]
    assert "state.loaded" in events and "oauth.error" in events
