"""Client registry hygiene (#11 item 7): `created_at` and `last_used_at`, never-used
registrations expiring, the cap on an app's never-used registrations, idle clients swept,
and the rules' exceptions (a live grant, a metadata document)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from oauthd.keyring import read_keyring
from oauthd.model import Client, redirect_set
from oauthd.oauth.hygiene import LAST_USED_RESOLUTION, group_key
from oauthd.oauth.server import AuthServer
from oauthd.users import Users
from tests.support.backends import CONTRACT_BACKENDS, StoreHarness, open_harness
from tests.support.protocol import (
    ADDRESS,
    CIMD_CLIENT_ID,
    LOOPBACK_REDIRECT,
    Env,
    EnvFactory,
    credentials,
    protocol_config,
    refused,
)

HOUR = 3600.0
DAY = 86_400.0


async def stored(env: Env, client: Client) -> Client | None:
    return await env.store.clients.get(client.client_id)


async def test_a_registration_records_when_it_was_made_and_that_it_is_unused(env: Env) -> None:
    client = (await env.register()).client
    assert client.created_at == env.clock.now() and client.last_used_at is None
    assert client.expires_at == client.created_at + DAY  # oauth.unused_client_lifetime


async def test_a_registration_never_used_is_gone_after_a_day(env: Env) -> None:
    client = (await env.register()).client
    env.clock.advance(DAY - 1)
    assert await stored(env, client) is not None
    env.clock.advance(1)
    assert await stored(env, client) is None
    assert await env.store.purge_expired() >= 1 and await env.store.clients.count() == 0


async def test_the_first_use_keeps_it_and_records_when(env: Env) -> None:
    registration = await env.register()
    env.clock.advance(HOUR)
    await env.begin(registration.client)  # /authorize
    used = await stored(env, registration.client)
    assert used is not None
    assert used.last_used_at == env.clock.now() and used.expires_at is None
    env.clock.advance(400 * DAY)  # past every lifetime but the idle sweep's
    assert await stored(env, registration.client) is not None


async def test_last_used_is_written_at_most_once_an_hour(env: Env) -> None:
    issued = await env.code_flow()
    client = issued.registration.client
    first = await stored(env, client)
    assert first is not None and first.last_used_at == env.clock.now()
    writes: list[str] = []
    real_update = env.store.clients.update

    async def counting(key: str, change):  # type: ignore[no-untyped-def]
        writes.append(key)
        return await real_update(key, change)

    env.store.clients.update = counting  # type: ignore[method-assign]
    tokens = issued.tokens
    for _ in range(20):  # /token refreshes within the hour: no write of the client
        env.clock.advance(60)
        tokens = await env.refresh(issued, tokens.refresh_token)
    assert writes == [] and (await stored(env, client)) == first
    env.clock.advance(LAST_USED_RESOLUTION)
    await env.refresh(issued, tokens.refresh_token)
    assert writes == [client.client_id]
    later = await stored(env, client)
    assert later is not None and later.last_used_at == env.clock.now()


async def test_a_wrong_secret_is_not_a_use(env: Env) -> None:
    registration = await env.register_confidential()
    client = registration.client
    wrong = dataclasses.replace(credentials(registration), secret="wrong")
    await refused(env.server.device_authorization({}, wrong))
    again = await stored(env, client)
    assert again is not None and again.last_used_at is None


async def test_an_app_keeps_at_most_its_cap_of_never_used_registrations(
    env_with: EnvFactory,
) -> None:
    env = env_with(oauth={"unused_registrations_per_app": 3})
    made = []
    for port in range(5):  # Claude Code: a new loopback port on every registration
        uri = f"http://localhost:{50000 + port}/callback"
        made.append((await env.register(client_name="Claude Code", redirect_uris=[uri])).client)
        env.clock.advance(1)
    live = [c for c in made if await stored(env, c) is not None]
    assert live == made[2:]  # the two oldest went first
    other = (await env.register(client_name="Other app")).client  # another app: own cap
    assert await stored(env, other) is not None and len(await live_clients(env)) == 4


async def test_a_used_registration_is_never_evicted_by_the_cap(env_with: EnvFactory) -> None:
    env = env_with(oauth={"unused_registrations_per_app": 2})
    used = await env.code_flow()
    for _ in range(5):
        await env.register()
    assert await stored(env, used.registration.client) is not None
    assert len(await live_clients(env)) == 3  # the used one and the two newest


async def test_concurrent_identical_registrations_stay_within_the_cap(
    env_with: EnvFactory,
) -> None:
    env = env_with(oauth={"unused_registrations_per_app": 20, "registrations_per_minute": 2000})
    body = {"client_name": "Claude", "redirect_uris": [LOOPBACK_REDIRECT]}
    done = await asyncio.gather(*(env.server.register(dict(body), ADDRESS) for _ in range(1000)))
    assert len(done) == 1000
    assert len(await live_clients(env)) == 20
    (group,) = [g async for g in env.store.registration_groups.scan()]
    assert len(group.client_ids) == 20 and group.key == group_key(done[0].client)


async def test_idle_clients_without_a_live_grant_are_swept(env: Env) -> None:
    holding = await env.code_flow()  # used, and holds a grant
    idle = await env.code_flow()
    await env.server.revoke_grant(idle.tokens.access_token.split(".")[0], by="test")
    # the holding grant lives on (as if refreshed by its MCP use elsewhere all along)
    grant_id = holding.tokens.access_token.split(".")[0]
    await env.store.grants.update(
        grant_id, lambda g: dataclasses.replace(g, expires_at=env.clock.now() + 365 * DAY)
    )
    env.clock.advance(90 * DAY - 1)
    assert await env.server.remove_idle_clients() == 0  # not idle for 90 days yet
    env.clock.advance(1)
    assert await env.server.remove_idle_clients() == 1
    assert await stored(env, idle.registration.client) is None
    assert await stored(env, holding.registration.client) is not None


async def test_the_sweep_rechecks_a_client_used_meanwhile(env: Env) -> None:
    client = (await env.code_flow()).registration.client
    env.clock.advance(91 * DAY)
    real_scan = env.store.grants.scan

    async def used_during_the_scan():  # type: ignore[no-untyped-def]
        await env.begin(client)  # the app comes back while the sweep looks at the grants
        async for grant in real_scan():
            yield grant

    env.store.grants.scan = used_during_the_scan  # type: ignore[method-assign]
    assert await env.server.remove_idle_clients() == 0
    assert await stored(env, client) is not None


async def test_metadata_documents_are_left_to_their_cache_lifetime(env: Env) -> None:
    env.fetcher.documents[CIMD_CLIENT_ID] = {
        "client_id": CIMD_CLIENT_ID,
        "client_name": "Doc client",
        "redirect_uris": [LOOPBACK_REDIRECT],
    }
    env.fetcher.lifetime = 400 * DAY
    client = await env.server.clients.find(CIMD_CLIENT_ID)
    assert client is not None and client.last_used_at is None
    env.clock.advance(200 * DAY)
    assert await env.server.remove_idle_clients() == 0
    assert await stored(env, client) is not None


@pytest.mark.parametrize(
    "settings",
    [{"unused_client_lifetime": 0.0}, {"idle_client_lifetime": 0.0}],
)
async def test_each_rule_can_be_turned_off(
    env_with: EnvFactory, settings: dict[str, float]
) -> None:
    env = env_with(oauth=settings)
    client = (await env.register()).client
    env.clock.advance(400 * DAY)
    if "unused_client_lifetime" in settings:
        assert client.expires_at is None and await stored(env, client) is not None
        assert await env.server.remove_idle_clients() == 1  # the idle rule still holds
    else:
        assert await stored(env, client) is None  # the unused rule still holds
        assert await env.server.remove_idle_clients() == 0


def test_the_redirect_set_ignores_loopback_ports_and_order() -> None:
    assert redirect_set(["http://localhost:53127/callback", "https://a.example/cb"]) == (
        "http://localhost:*/callback",
        "https://a.example/cb",
    )
    assert redirect_set(["http://127.0.0.1/cb"]) == redirect_set(["http://127.0.0.1:9/cb"])
    assert redirect_set(["http://localhost.evil.example:9/cb"]) == (
        "http://localhost.evil.example:9/cb",
    )
    assert redirect_set(["https://localhost:9/cb"]) == ("https://localhost:9/cb",)


async def live_clients(env: Env) -> list[Client]:
    return [c async for c in env.store.clients.scan()]


@pytest.fixture(params=CONTRACT_BACKENDS)
async def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async for harness in open_harness(request.param, tmp_path):
        yield harness


async def test_the_cap_holds_under_concurrency_on_every_backend(
    shared_store: StoreHarness, tmp_path: Path
) -> None:
    """On Redis and PostgreSQL the app's group is updated by compare-and-swap: concurrent
    registrations (as from several instances) each land in it once."""
    config = protocol_config(
        tmp_path, oauth={"unused_registrations_per_app": 5, "registrations_per_minute": 1000}
    )
    store = shared_store.store
    server = AuthServer(config, store, shared_store.clock, Users(()), keyring=read_keyring(config))
    body = {"client_name": "Claude", "redirect_uris": [LOOPBACK_REDIRECT]}
    made = await asyncio.gather(*(server.register(dict(body), ADDRESS) for _ in range(100)))
    live = [c async for c in store.clients.scan()]
    assert len(made) == 100 and len(live) == 5
    (group,) = [g async for g in store.registration_groups.scan()]
    assert sorted(group.client_ids) == sorted(c.client_id for c in live)
