"""`AuthServer.groups_of`: the groups policy rules see for a grant's user."""

from __future__ import annotations

import dataclasses

from oauthd.config import LocalUser
from oauthd.users import Users
from tests.support.configs import PASSWORD_HASH, USER
from tests.support.protocol import Env
from tests.support.records import make_grant


def test_a_local_users_groups_follow_the_user_list(env: Env) -> None:
    auth = env.server
    grant = make_grant(user=USER)
    auth.replace_users(Users([LocalUser(USER, PASSWORD_HASH, ("ops",))]))
    assert auth.groups_of(grant) == frozenset({"ops"})
    auth.replace_users(Users([LocalUser(USER, PASSWORD_HASH)]))
    assert auth.groups_of(grant) == frozenset()


def test_users_of_an_identity_provider_have_none_yet(env: Env) -> None:
    auth = env.server
    auth.replace_users(Users([LocalUser(USER, PASSWORD_HASH, ("ops",))]))
    login = dataclasses.replace(auth.config.login, provider="oidc")
    auth.config = dataclasses.replace(auth.config, login=login)
    assert auth.groups_of(make_grant(user=USER)) == frozenset()
