"""A grant keeps the user's groups at sign-in (`Grant.groups`, for policy rules): a local
user's `[[login.users]] groups`, carried by the pending authorization, the code or the
device flow to the grant; an identity provider's user's from its identity. And
`AuthServer.groups_of`: the groups policy rules see for a grant's user."""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import parse_qs, urlsplit

from oauthd import crypto
from oauthd.config import LocalUser
from oauthd.oauth.upstream import UpstreamIdentity, UpstreamLogin
from oauthd.users import Users
from tests.support.configs import OTHER_PASSWORD_HASH, OTHER_USER, PASSWORD_HASH, USER
from tests.support.protocol import ADDRESS, ISSUER, RESOURCE, Env, EnvFactory, credentials
from tests.support.records import make_grant

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def _env(env_with: EnvFactory) -> Env:
    users = (
        LocalUser(USER, PASSWORD_HASH, ("ops", "staff")),
        LocalUser(OTHER_USER, OTHER_PASSWORD_HASH),
    )
    return env_with(login={"users": users})


async def test_a_code_flow_grant_has_the_local_users_groups(env_with: EnvFactory) -> None:
    env = _env(env_with)
    registration = await env.register()
    for user, groups in ((USER, ("ops", "staff")), (OTHER_USER, ())):
        started = await env.begin(registration.client)
        flow = await env.server.flow(started.pending.id, started.browser)
        flow, _ = await env.server.signed_in(flow, user)
        assert flow.pending.groups == groups
        location = await env.server.finish(flow, allow=True)
        assert location is not None
        code = parse_qs(urlsplit(location).query)["code"][0]
        stored = await env.store.codes.get(code.split(".")[0])
        assert stored is not None and stored.groups == groups
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": started.verifier,
            "redirect_uri": started.pending.redirect_uri,
        }
        tokens = await env.token(registration, form)
        grant = await env.server.verify_bearer(tokens.access_token, RESOURCE)
        assert grant is not None and grant.user == user and grant.groups == groups


async def test_a_device_grant_has_the_local_users_groups(env_with: EnvFactory) -> None:
    env = _env(env_with)
    registration = await env.register(grant_types=[DEVICE_GRANT], redirect_uris=[])
    started = await env.server.device_authorization({}, credentials(registration))
    found = await env.server.find_device_flow(started["user_code"], ADDRESS)
    assert found is not None
    browser = crypto.new_secret()
    pending = await env.server.device_pending(found, browser, started["user_code"])
    flow, _ = await env.server.signed_in(await env.server.flow(pending.id, browser), USER)
    assert await env.server.finish(flow, allow=True) is None
    form = {"grant_type": DEVICE_GRANT, "device_code": started["device_code"]}
    tokens = await env.token(registration, form)
    grant = await env.server.verify_bearer(tokens.access_token, RESOURCE)
    assert grant is not None and grant.groups == ("ops", "staff")


class GroupsProvider:
    """An identity provider whose user has groups (the OIDC claim, read by
    `oauthd.outbound.idp.claimed_groups`)."""

    async def authorization_endpoint(self) -> str:
        return "https://idp.example/auth"

    async def authorization_url(self, *, state: str, **_: str) -> str:
        return f"https://idp.example/auth?state={state}"

    async def identify(self, **_: str) -> UpstreamIdentity:
        return UpstreamIdentity("carol@example.test", {"access_token": "idp"}, ("ops",))

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        raise AssertionError("not used")

    async def close(self) -> None:
        pass


async def test_an_identity_providers_user_has_the_providers_groups(env: Env) -> None:
    login = UpstreamLogin(
        env.store, env.server.authorizer, GroupsProvider(), crypto.Sealer(b"k" * 32), ISSUER
    )
    registration = await env.register()
    started = await env.begin(registration.client)
    flow = await env.server.flow(started.pending.id, started.browser)
    url = await login.begin(flow)
    state = parse_qs(urlsplit(url).query)["state"][0]
    flow = await login.complete(state, "idp-code", started.browser)
    assert (flow.pending.user, flow.pending.groups) == ("carol@example.test", ("ops",))
    location = await env.server.finish(flow, allow=True)
    assert location is not None
    code = parse_qs(urlsplit(location).query)["code"][0]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": started.verifier,
        "redirect_uri": started.pending.redirect_uri,
    }
    tokens = await env.token(registration, form)
    grant = await env.server.verify_bearer(tokens.access_token, RESOURCE)
    assert grant is not None and grant.groups == ("ops",)


def test_a_local_users_groups_follow_the_user_list(env: Env) -> None:
    auth = env.server
    grant = make_grant(user=USER)
    auth.replace_users(Users([LocalUser(USER, PASSWORD_HASH, ("ops",))]))
    assert auth.groups_of(grant) == frozenset({"ops"})
    auth.replace_users(Users([LocalUser(USER, PASSWORD_HASH)]))
    assert auth.groups_of(grant) == frozenset()


def test_users_of_an_identity_provider_have_their_sign_ins_groups(env: Env) -> None:
    auth = env.server
    auth.replace_users(Users([LocalUser(USER, PASSWORD_HASH, ("ops",))]))
    login = dataclasses.replace(auth.config.login, provider="oidc")
    auth.config = dataclasses.replace(auth.config, login=login)
    assert auth.groups_of(dataclasses.replace(make_grant(user=USER), groups=())) == frozenset()
    grant = dataclasses.replace(make_grant(user=USER), groups=("dev", "staff"))
    assert auth.groups_of(grant) == frozenset({"dev", "staff"})
