"""`AuthServer`: failed client authentication at /token, /revoke, /introspect and
/device_authorization, limited per client address; a working client never touches a
counter."""

from __future__ import annotations

from typing import Any

import pytest

from oauthd.oauth.client_auth import ClientCredentials
from oauthd.store import Count, Counters
from tests.support.protocol import (
    INTROSPECTION_SECRET,
    Env,
    EnvFactory,
    credentials,
    refused,
)

ATTACKER = "203.0.113.9"
CLIENT_HOST = "198.51.100.20"


@pytest.fixture
def env3(env_with: EnvFactory) -> Env:
    return env_with(oauth={"client_auth_failures_per_minute": 3})


def wrong_secret(creds: ClientCredentials) -> ClientCredentials:
    return ClientCredentials(creds.client_id, "not-the-secret", creds.method)


def refresh_form(refresh_token: str) -> dict[str, str]:
    return {"grant_type": "refresh_token", "refresh_token": refresh_token}


async def test_failures_from_an_address_are_limited_across_endpoints(env3: Env) -> None:
    registration = await env3.register_confidential()
    issued = await env3.code_flow(registration)
    good = credentials(registration)
    bad = wrong_secret(good)
    server, token = env3.server, issued.tokens.refresh_token or ""
    for call in (
        server.token(refresh_form(token), bad, address=ATTACKER),
        server.revoke({"token": token}, bad, address=ATTACKER),
        server.introspect({"token": token}, bad, address=ATTACKER),
    ):
        assert (await refused(call)).error == "invalid_client"
    # used up: refused before anything is checked, even the right secret, from there only
    for call in (
        server.token(refresh_form(token), good, address=ATTACKER),
        server.device_authorization({}, bad, address=ATTACKER),
    ):
        error = await refused(call)
        assert (error.error, error.status) == ("too_many_requests", 429)
        assert 1 <= int(error.headers["Retry-After"]) <= 60
    refreshed = await server.token(refresh_form(token), good, address=CLIENT_HOST)
    assert refreshed.access_token
    env3.clock.advance(60)
    assert (await refused(server.token(refresh_form(token), bad, address=ATTACKER))).status == 401


async def test_other_errors_are_not_counted(env3: Env) -> None:
    registration = await env3.register_confidential()
    good = credentials(registration)
    for _ in range(5):
        error = await refused(env3.server.token(refresh_form("bogus"), good, address=ATTACKER))
        assert error.error == "invalid_grant"
    issued = await env3.code_flow(registration)
    form = refresh_form(issued.tokens.refresh_token or "")
    assert (await env3.server.token(form, good, address=ATTACKER)).access_token


class SpyCounters(Counters):
    def __init__(self, inner: Counters) -> None:
        self.inner = inner
        self.calls: list[str] = []

    async def add(self, key: str, window: float) -> Count:
        self.calls.append(f"add {key}")
        return await self.inner.add(key, window)

    async def take_back(self, key: str) -> None:
        self.calls.append(f"take_back {key}")
        await self.inner.take_back(key)

    async def read(self, key: str) -> Count:
        self.calls.append(f"read {key}")
        return await self.inner.read(key)

    async def reset(self, key: str) -> None:
        self.calls.append(f"reset {key}")
        await self.inner.reset(key)


async def test_a_working_client_never_touches_a_counter(env: Env) -> None:
    """The hot paths (a bearer check, a token refresh, an introspection) cost no counter:
    only failures and registrations do."""
    registration = await env.register_confidential()
    spy = SpyCounters(env.store.counters)
    env.server.limiter._shared = spy
    issued = await env.code_flow(registration)
    token = issued.tokens.access_token
    assert await env.server.verify_bearer(token) is not None
    refreshed = await env.refresh(issued)
    introspector = ClientCredentials(
        env.config.introspection.client_id, INTROSPECTION_SECRET, "client_secret_basic"
    )
    body: dict[str, Any] = await env.server.introspect(
        {"token": refreshed.access_token}, introspector, address=CLIENT_HOST
    )
    assert body["active"] is True
    await env.server.revoke({"token": refreshed.access_token}, credentials(registration))
    assert spy.calls == []
