"""Local login: `check_login` and its limits for unknown browsers, per user and per address
(known browsers: tests/oauth/test_signin.py)."""

from __future__ import annotations

import pytest

from oauthd.oauth.errors import Delivery
from tests.support.configs import OTHER_PASSWORD, OTHER_USER, PASSWORD, USER
from tests.support.protocol import ADDRESS, Env, EnvFactory, refused

OTHER_ADDRESS = "198.51.100.7"


@pytest.fixture
def env3(env_with: EnvFactory) -> Env:
    """At most 3 failures per user and 12 per address, in a 15 minute window."""
    return env_with(login={"max_failures": 3, "max_failures_per_address": 12})


async def test_right_password(env: Env) -> None:
    assert await env.server.check_login(USER, PASSWORD, ADDRESS) == USER
    assert await env.server.check_login(OTHER_USER, OTHER_PASSWORD, ADDRESS) == OTHER_USER


@pytest.mark.parametrize(
    ("username", "password"),
    [(USER, "wrong"), (USER, ""), (USER, PASSWORD.upper()), ("mallory", PASSWORD), ("", "")],
)
async def test_wrong_credentials(env: Env, username: str, password: str) -> None:
    error = await refused(env.server.check_login(username, password, ADDRESS))
    assert (error.error, error.status, error.delivery) == ("access_denied", 401, Delivery.PAGE)
    assert error.description == "Wrong username or password."  # the same for unknown users


async def test_user_locked_out_after_max_failures(env3: Env) -> None:
    for _ in range(3):
        await refused(env3.server.check_login(USER, "wrong", ADDRESS))
    for address in (ADDRESS, OTHER_ADDRESS):  # a lock on the user, from anywhere
        error = await refused(env3.server.check_login(USER, PASSWORD, address))
        assert (error.error, error.status, error.delivery) == (
            "too_many_requests",
            429,
            Delivery.PAGE,
        )
    assert await env3.server.check_login(OTHER_USER, OTHER_PASSWORD, ADDRESS) == OTHER_USER
    env3.clock.advance(env3.config.login.failure_window)
    assert await env3.server.check_login(USER, PASSWORD, ADDRESS) == USER


async def test_user_lock_ignores_case_and_spaces(env3: Env) -> None:
    for typed in ("ALICE", " alice", "Alice "):
        await refused(env3.server.check_login(typed, PASSWORD, ADDRESS))
    error = await refused(env3.server.check_login(USER, PASSWORD, ADDRESS))
    assert error.error == "too_many_requests"


async def test_address_locked_out(env3: Env) -> None:
    for i in range(12):  # max_failures_per_address, spread over users so no user is locked
        await refused(env3.server.check_login(f"guess{i}", "wrong", ADDRESS))
    error = await refused(env3.server.check_login(USER, PASSWORD, ADDRESS))
    assert (error.error, error.status) == ("too_many_requests", 429)
    assert await env3.server.check_login(USER, PASSWORD, OTHER_ADDRESS) == USER
    env3.clock.advance(env3.config.login.failure_window)
    assert await env3.server.check_login(USER, PASSWORD, ADDRESS) == USER


async def test_a_success_does_not_reset_the_user_count(env3: Env) -> None:
    """Else a stranger's guesses would start again each time the user signs in: the bound
    holds per window, whatever the user does."""
    for _ in range(2):
        await refused(env3.server.check_login(USER, "wrong", ADDRESS))
    assert await env3.server.check_login(USER, PASSWORD, ADDRESS) == USER
    await refused(env3.server.check_login(USER, "wrong", ADDRESS))
    error = await refused(env3.server.check_login(USER, PASSWORD, ADDRESS))
    assert error.error == "too_many_requests"


async def test_blocked_attempts_are_not_checked(env3: Env) -> None:
    for _ in range(3):
        await refused(env3.server.check_login(USER, "wrong", ADDRESS))
    for _ in range(5):  # refused before the password is even checked
        error = await refused(env3.server.check_login(USER, PASSWORD, ADDRESS))
        assert error.error == "too_many_requests"
    env3.clock.advance(env3.config.login.failure_window)
    assert await env3.server.check_login(USER, PASSWORD, ADDRESS) == USER
