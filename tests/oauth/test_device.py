"""RFC 8628, the device authorization grant: start, the user's side, polling."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest

from oauthd import crypto
from oauthd.model import DeviceFlow, consent_key
from oauthd.oauth.client_auth import ClientCredentials
from oauthd.oauth.clients import Registration
from oauthd.oauth.device import DEVICE_GRANT, DeviceFlows, device_key
from oauthd.oauth.errors import Delivery
from oauthd.oauth.tokens import TokenResponse
from tests.support.configs import USER
from tests.support.protocol import (
    ADDRESS,
    ISSUER,
    RESOURCE,
    SCOPES,
    Env,
    EnvFactory,
    credentials,
    refused,
)

USER_CODE = re.compile(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}")


async def _device_client(env: Env, **body: Any) -> Registration:
    body.setdefault("grant_types", [DEVICE_GRANT, "refresh_token"])
    body.setdefault("redirect_uris", [])
    return await env.register(**body)


async def _start(env: Env, registration: Registration, **form: str) -> dict[str, Any]:
    return await env.server.device_authorization(form, credentials(registration))


async def _poll(env: Env, registration: Registration, device_code: str) -> TokenResponse:
    return await env.token(registration, {"grant_type": DEVICE_GRANT, "device_code": device_code})


async def _decide(env: Env, typed: str, allow: bool, user: str = USER) -> None:
    """The user at /device: type the code, log in, approve or deny."""
    found = await env.server.find_device_flow(typed, ADDRESS)
    assert found is not None
    browser = crypto.new_secret()
    pending = await env.server.devices.pending_for(found, browser, typed)
    flow = await env.server.authorizer.flow(pending.id, browser)
    flow = await env.server.authorizer.logged_in(flow, user)
    assert await env.server.finish(flow, allow) is None  # the device polls for its tokens


async def _stored(env: Env, started: dict[str, Any]) -> DeviceFlow | None:
    return await env.store.devices.get(started["device_code"].split(".")[0])


async def test_start(env: Env) -> None:
    registration = await _device_client(env)
    started = await _start(env, registration)
    assert USER_CODE.fullmatch(started["user_code"])
    assert started["verification_uri"] == f"{ISSUER}/device"
    assert started["verification_uri_complete"] == (
        f"{ISSUER}/device?user_code={started['user_code']}"
    )
    assert started["expires_in"] == int(env.config.tokens.device_ttl)
    assert started["interval"] == 5
    key, secret = started["device_code"].split(".")
    assert key == device_key(started["user_code"].replace("-", ""), env.server.devices._key)
    flow = await env.store.devices.get(key)
    assert flow is not None
    assert (flow.status, flow.user, flow.client_id) == (
        "pending",
        None,
        registration.client.client_id,
    )
    assert flow.secret_hash == crypto.hash_secret(secret)
    assert (flow.scopes, flow.resource) == (SCOPES, RESOURCE)
    assert flow.deadline == env.clock.now() + env.config.tokens.device_ttl


async def test_user_codes_differ(env: Env) -> None:
    registration = await _device_client(env)
    codes = {(await _start(env, registration))["user_code"] for _ in range(20)}
    assert len(codes) == 20


async def test_start_scopes(env: Env) -> None:
    registration = await _device_client(env, scope="mcp files:read")
    started = await _start(env, registration, scope="files:read")
    flow = await _stored(env, started)
    assert flow is not None and flow.scopes == ("files:read",)
    wider = await _stored(env, await _start(env, registration, scope="files:write"))
    assert wider is not None and wider.scopes == ("files:write",)  # the registration: a default
    error = await refused(_start(env, registration, scope="files:admin"))
    assert (error.error, error.status) == ("invalid_scope", 400)


async def test_start_needs_the_device_grant(env: Env) -> None:
    registration = await env.register()
    error = await refused(_start(env, registration))
    assert (error.error, error.status) == ("unauthorized_client", 400)
    assert await env.store.devices.count() == 0


async def test_start_authenticates_the_client(env: Env) -> None:
    registration = await _device_client(env, token_endpoint_auth_method="client_secret_post")
    creds = ClientCredentials(registration.client.client_id, "wrong", "client_secret_post")
    error = await refused(env.server.device_authorization({}, creds))
    assert (error.error, error.status) == ("invalid_client", 401)
    assert (await _start(env, registration))["device_code"]


@pytest.mark.parametrize("spelling", [str.upper, str.lower, lambda c: c.replace("-", "")])
async def test_find_by_user_code_in_any_spelling(env: Env, spelling: Any) -> None:
    registration = await _device_client(env)
    started = await _start(env, registration)
    found = await env.server.find_device_flow(spelling(started["user_code"]), ADDRESS)
    assert found is not None
    assert found.device_key == started["device_code"].split(".")[0]
    spaced = started["user_code"].lower().replace("-", " ")
    assert await env.server.find_device_flow(f" {spaced} ", ADDRESS) is not None


@pytest.mark.parametrize("typed", ["", "BCDF-GHJ", "BCDF-GHJKL", "AEIO-UAEI", "BCDF-GHJ1"])
async def test_malformed_user_code(env: Env, typed: str) -> None:
    registration = await _device_client(env)
    await _start(env, registration)
    assert await env.server.find_device_flow(typed, ADDRESS) is None


async def test_polling_before_approval(env: Env) -> None:
    registration = await _device_client(env)
    started = await _start(env, registration)
    error = await refused(_poll(env, registration, started["device_code"]))
    assert (error.error, error.status) == ("authorization_pending", 400)
    env.clock.advance(5)
    error = await refused(_poll(env, registration, started["device_code"]))
    assert error.error == "authorization_pending"


async def test_polling_too_fast_slows_down(env: Env) -> None:
    registration = await _device_client(env)
    started = await _start(env, registration)
    code = started["device_code"]
    assert (await refused(_poll(env, registration, code))).error == "authorization_pending"
    env.clock.advance(1)
    assert (await refused(_poll(env, registration, code))).error == "slow_down"
    flow = await _stored(env, started)
    assert flow is not None and flow.interval == 10
    env.clock.advance(6)  # enough for the old interval, not for the new one
    assert (await refused(_poll(env, registration, code))).error == "slow_down"
    flow = await _stored(env, started)
    assert flow is not None and flow.interval == 15
    env.clock.advance(15)
    assert (await refused(_poll(env, registration, code))).error == "authorization_pending"
    flow = await _stored(env, started)
    assert flow is not None and flow.interval == 15  # stays longer


async def test_approval_gives_tokens_once(env: Env) -> None:
    registration = await _device_client(env)
    started = await _start(env, registration)
    await _decide(env, started["user_code"].lower(), allow=True)
    tokens = await _poll(env, registration, started["device_code"])
    assert tokens.expires_in == int(env.config.tokens.access_ttl)
    assert tokens.refresh_token
    grant = await env.server.verify_bearer(tokens.access_token)
    assert grant is not None
    assert (grant.user, grant.client_id, grant.scopes, grant.resource) == (
        USER,
        registration.client.client_id,
        SCOPES,
        RESOURCE,
    )
    error = await refused(_poll(env, registration, started["device_code"]))
    assert (error.error, error.status) == ("invalid_grant", 400)
    assert await env.server.verify_bearer(tokens.access_token) is not None
    form = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token}
    assert (await env.token(registration, form)).access_token
    consent = await env.store.consents.get(consent_key(USER, registration.client.client_id, "/mcp"))
    assert consent is not None and consent.scopes == SCOPES


async def test_approved_code_cannot_be_entered_again(env: Env) -> None:
    registration = await _device_client(env)
    started = await _start(env, registration)
    await _decide(env, started["user_code"], allow=True)
    assert await env.server.find_device_flow(started["user_code"], ADDRESS) is None


async def test_denied(env: Env) -> None:
    registration = await _device_client(env)
    started = await _start(env, registration)
    await _decide(env, started["user_code"], allow=False)
    error = await refused(_poll(env, registration, started["device_code"]))
    assert (error.error, error.status) == ("access_denied", 400)
    assert await env.store.grants.count() == 0
    error = await refused(_poll(env, registration, started["device_code"]))
    assert error.error == "invalid_grant"
    assert await env.store.consents.count() == 0


async def test_expired(env: Env) -> None:
    registration = await _device_client(env)
    started = await _start(env, registration)
    found = await env.server.find_device_flow(started["user_code"], ADDRESS)
    assert found is not None
    browser = crypto.new_secret()
    pending = await env.server.devices.pending_for(found, browser, started["user_code"])
    flow = await env.server.authorizer.logged_in(
        await env.server.authorizer.flow(pending.id, browser), USER
    )
    env.clock.advance(env.config.tokens.device_ttl)
    error = await refused(_poll(env, registration, started["device_code"]))
    assert (error.error, error.status) == ("expired_token", 400)
    assert await env.server.find_device_flow(started["user_code"], ADDRESS) is None
    error = await refused(env.server.finish(flow, allow=True))  # the page was left open
    assert (error.error, error.delivery) == ("expired_token", Delivery.PAGE)
    assert (await refused(_poll(env, registration, started["device_code"]))).error == (
        "expired_token"
    )
    env.clock.advance(3600)  # long after: the record is gone
    error = await refused(_poll(env, registration, started["device_code"]))
    assert error.error == "invalid_grant"


async def test_approval_just_before_the_deadline(env: Env) -> None:
    registration = await _device_client(env)
    started = await _start(env, registration)
    env.clock.advance(env.config.tokens.device_ttl - 1)
    await _decide(env, started["user_code"], allow=True)
    assert (await _poll(env, registration, started["device_code"])).access_token


async def test_device_code_of_another_client(env: Env) -> None:
    owner = await _device_client(env)
    other = await _device_client(env)
    started = await _start(env, owner)
    await _decide(env, started["user_code"], allow=True)
    error = await refused(_poll(env, other, started["device_code"]))
    assert (error.error, error.status) == ("invalid_grant", 400)
    assert await env.store.grants.count() == 0
    assert (await _poll(env, owner, started["device_code"])).access_token


@pytest.mark.parametrize("mangle", ["secret", "key", "format"])
async def test_forged_device_code(env: Env, mangle: str) -> None:
    registration = await _device_client(env)
    started = await _start(env, registration)
    await _decide(env, started["user_code"], allow=True)
    key = started["device_code"].split(".")[0]
    forged = {
        "secret": f"{key}.{crypto.new_secret()}",
        "key": f"{crypto.new_key()}.{started['device_code'].split('.')[1]}",
        "format": "not-a-device-code",
    }[mangle]
    error = await refused(_poll(env, registration, forged))
    assert (error.error, error.status) == ("invalid_grant", 400)
    assert (await _poll(env, registration, started["device_code"])).access_token


async def test_wrong_guesses_are_rate_limited(env: Env) -> None:
    registration = await _device_client(env)
    started = await _start(env, registration)
    wrong = "BCDF-GHJK" if started["user_code"] != "BCDF-GHJK" else "ZZZZ-ZZZZ"
    for _ in range(env.config.oauth.device_guesses_per_minute):
        assert await env.server.find_device_flow(wrong, ADDRESS) is None
    error = await refused(env.server.find_device_flow(started["user_code"], ADDRESS))
    assert (error.error, error.status, error.delivery) == ("too_many_requests", 429, Delivery.PAGE)
    assert error.headers["Retry-After"] == "60"
    assert await env.server.find_device_flow(started["user_code"], "198.51.100.7") is not None
    env.clock.advance(60)
    assert await env.server.find_device_flow(started["user_code"], ADDRESS) is not None


async def test_wrong_guesses_are_capped_over_every_address(env_with: EnvFactory) -> None:
    """`oauth.device_guesses_per_minute_total`: an attacker with many addresses gets no
    more guesses in all than the cap, each address under its own limit."""
    env = env_with(oauth={"device_guesses_per_minute": 3, "device_guesses_per_minute_total": 8})
    registration = await _device_client(env)
    started = await _start(env, registration)
    wrong = "BCDF-GHJK" if started["user_code"] != "BCDF-GHJK" else "ZZZZ-ZZZZ"
    for i in range(8):  # 2 from each of 4 addresses: no address at its own limit
        assert await env.server.find_device_flow(wrong, f"198.51.100.{i // 2}") is None
    error = await refused(env.server.find_device_flow(started["user_code"], "203.0.113.1"))
    assert (error.error, error.status, error.delivery) == ("too_many_requests", 429, Delivery.PAGE)
    assert 1 <= int(error.headers["Retry-After"]) <= 60
    env.clock.advance(60)
    assert await env.server.find_device_flow(started["user_code"], "203.0.113.1") is not None


async def test_right_guesses_are_not_counted(env: Env) -> None:
    registration = await _device_client(env)
    started = await _start(env, registration)
    for _ in range(env.config.oauth.device_guesses_per_minute + 5):
        assert await env.server.find_device_flow(started["user_code"], ADDRESS) is not None


async def test_the_stored_key_is_a_keyed_hash_of_the_user_code(env: Env) -> None:
    """34 bits of user code hashed without a key are reversible offline by anyone who can
    read the store: the record key is an HMAC under a key the store does not hold."""
    started = await _start(env, await _device_client(env))
    code = started["user_code"].replace("-", "")
    key = started["device_code"].split(".")[0]
    unkeyed = hashlib.sha256(f"oauthd-user-code:{code}".encode()).hexdigest()[:32]
    assert key != unkeyed
    assert key != device_key(code, bytes(32))
    assert await env.server.devices.find(started["user_code"]) is not None


async def test_an_instance_with_the_same_key_finds_the_flow_another_started(env: Env) -> None:
    """Instances on a shared backend derive one key (`oauthd.keyring.device_code_key`)."""
    key = bytes(range(32))
    first = DeviceFlows(env.config, env.store, env.clock, env.server.tokens, key)
    second = DeviceFlows(env.config, env.store, env.clock, env.server.tokens, key)
    stranger = DeviceFlows(env.config, env.store, env.clock, env.server.tokens, bytes(32))
    started = await first.start((await _device_client(env)).client, {})
    assert await second.find(started["user_code"]) is not None
    assert await stranger.find(started["user_code"]) is None
