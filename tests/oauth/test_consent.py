"""What the consent page asks (`AuthServer.consent_request`): the resource by name, the
scopes in words, and on a step-up only the scopes not allowed before."""

from __future__ import annotations

import pytest

from oauthd.oauth.authorize import Flow
from oauthd.oauth.consent import ScopeWords
from tests.support.configs import USER
from tests.support.protocol import FILES, Env, EnvFactory, two_resources

WORDS = (("files:read", "Read your files"), ("files:write", "Change your files"))


@pytest.fixture
def env2(env_with: EnvFactory) -> Env:
    return env_with(resources=two_resources, oauth={"scope_descriptions": WORDS})


async def _asked(env: Env, client_id: str, scope: str, resource: str = FILES) -> Flow:
    client = await env.server.clients.find(client_id)
    assert client is not None
    started = await env.begin(client, resource=resource, scope=scope)
    flow = await env.server.flow(started.pending.id, started.browser)
    flow, _ = await env.server.signed_in(flow, USER)
    return flow


async def test_a_first_consent_asks_every_scope_in_words(env2: Env) -> None:
    registration = await env2.register()
    flow = await _asked(env2, registration.client.client_id, "files:read files:write")
    request = await env2.server.consent_request(flow)
    assert (request.resource_name, request.resource_path) == ("Files", "/files/mcp")
    assert request.asked == (
        ScopeWords("files:read", "Read your files"),
        ScopeWords("files:write", "Change your files"),
    )
    assert request.allowed == () and not request.step_up


async def test_a_scope_without_words_is_shown_by_its_name(env2: Env) -> None:
    registration = await env2.register()
    flow = await _asked(env2, registration.client.client_id, "mcp", resource=f"{FILES[:-10]}/mcp")
    request = await env2.server.consent_request(flow)
    assert request.resource_name == "Notes"
    assert request.asked == (ScopeWords("mcp", "mcp"),)


async def test_a_step_up_asks_only_for_the_added_scopes(env2: Env) -> None:
    registration = await env2.register()
    client_id = registration.client.client_id
    first = await _asked(env2, client_id, "files:read")
    await env2.server.finish(first, allow=True)
    more = await _asked(env2, client_id, "files:read files:write")
    request = await env2.server.consent_request(more)
    assert request.step_up
    assert request.asked == (ScopeWords("files:write", "Change your files"),)
    assert request.allowed == (ScopeWords("files:read", "Read your files"),)
    await env2.server.finish(more, allow=True)
    again = await _asked(env2, client_id, "files:read files:write")
    request = await env2.server.consent_request(again)
    # all of it allowed before (a page confirming a sign-in): the whole list, no step-up
    assert [w.scope for w in request.asked] == ["files:read", "files:write"]
    assert not request.step_up


async def test_the_hierarchy_counts_as_allowed(env_with: EnvFactory) -> None:
    env = env_with(
        resources=two_resources,
        oauth={"scope_implies": (("files:write", ("files:read",)),)},
    )
    registration = await env.register()
    client_id = registration.client.client_id
    await env.server.finish(await _asked(env, client_id, "files:write"), allow=True)
    client = await env.server.clients.find(client_id)
    assert client is not None
    started = await env.begin(client, resource=FILES, scope="files:read")
    flow = await env.server.flow(started.pending.id, started.browser)
    _, consented = await env.server.signed_in(flow, USER)
    assert consented  # files:write implies files:read: nothing to ask
