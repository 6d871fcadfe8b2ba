"""A sign-in at the identity provider that leads back to one of our pages
(`oauthd.oauth.page_signin`): only to our own return paths, bound to its browser, never
seen by the login and consent pages, single use, ending in an /account session. The whole
way through a real provider: tests/outbound/test_idp.py."""

from __future__ import annotations

import dataclasses

import pytest

from oauthd import crypto
from oauthd.oauth import is_return_path
from tests.support.configs import USER
from tests.support.protocol import Env, refused


@pytest.mark.parametrize(
    ("path", "ours"),
    [
        ("/upgrade?grant=g&scope=files%3Awrite", True),
        ("/upgrade", False),
        ("/account", False),
        ("https://evil.example/upgrade?x", False),
        ("//evil.example/upgrade?x", False),
        ("/upgrade?x\\y", False),
        ("/upgrade?x\r\nSet-Cookie: a=b", False),
    ],
)
def test_only_our_pages_are_return_paths(path: str, ours: bool) -> None:
    assert is_return_path(path) is ours


async def test_a_page_sign_in_is_found_only_by_the_providers_callback(env: Env) -> None:
    browser = crypto.new_secret()
    back = "/upgrade?grant=g&scope=files%3Awrite"
    pending = await env.server.page_sign_ins.begin(back, browser)
    error = await refused(env.server.flow(pending.id, browser))  # the login/consent pages
    assert error.status == 400
    flow = await env.server.authorizer.flow(pending.id, browser, pages=True)
    assert flow.returns_to == back
    other = await refused(env.server.authorizer.flow(pending.id, crypto.new_secret(), pages=True))
    assert other.status == 403  # bound to its browser


async def test_it_ends_in_an_account_session_once(env: Env) -> None:
    browser = crypto.new_secret()
    pending = await env.server.page_sign_ins.begin("/upgrade?grant=g&scope=s", browser)
    flow = await env.server.authorizer.flow(pending.id, browser, pages=True)
    unsigned = await refused(env.server.finish_page_sign_in(flow))  # the provider has not
    assert unsigned.status == 400
    pending = await env.server.page_sign_ins.begin("/upgrade?grant=g&scope=s", browser)
    await env.store.pending.update(pending.id, lambda p: dataclasses.replace(p, user=USER))
    flow = await env.server.authorizer.flow(pending.id, browser, pages=True)
    cookie = await env.server.finish_page_sign_in(flow)
    session = await env.server.account_session(cookie)
    assert session is not None and session.user == USER
    assert (await refused(env.server.finish_page_sign_in(flow))).status == 400  # used up


async def test_it_leads_only_to_our_pages(env: Env) -> None:
    error = await refused(env.server.page_sign_ins.begin("https://evil.example/", "secret"))
    assert error.status == 400
