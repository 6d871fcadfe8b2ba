"""Sign-in limits that cannot be turned against a user: a browser that signed in as a user
before (its known-browser cookie) is limited by its own count alone."""

from __future__ import annotations

import asyncio
import socket

import pytest

from oauthd.oauth.errors import Delivery, OAuthError
from tests.support.configs import OTHER_PASSWORD, OTHER_USER, PASSWORD, USER
from tests.support.protocol import ADDRESS, Env, EnvFactory, refused

STRANGER = "203.0.113.66"


@pytest.fixture
def env3(env_with: EnvFactory) -> Env:
    """3 failures per user from unknown browsers, 12 per address, 3 per known browser."""
    return env_with(
        login={
            "max_failures": 3,
            "max_failures_per_address": 12,
            "max_failures_per_known_browser": 3,
        }
    )


async def known_cookie(env: Env, user: str = USER, password: str = PASSWORD) -> str:
    """A known-browser cookie, as a browser gets it from a sign-in."""
    assert await env.server.check_login(user, password, ADDRESS) == user
    return env.server.remember_browser(user)


async def lock_out_strangers(env: Env, user: str = USER, attempts: int = 3) -> None:
    for _ in range(attempts):
        await refused(env.server.check_login(user, "guess", STRANGER))


def assert_too_many(error: OAuthError) -> None:
    assert (error.error, error.status, error.delivery) == ("too_many_requests", 429, Delivery.PAGE)
    assert int(error.headers["Retry-After"]) >= 1


async def test_a_known_browser_signs_in_while_strangers_are_refused(env3: Env) -> None:
    cookie = await known_cookie(env3)
    await lock_out_strangers(env3, attempts=50)  # 3 counted, the rest refused unchecked
    assert_too_many(await refused(env3.server.check_login(USER, PASSWORD, STRANGER)))
    assert_too_many(await refused(env3.server.check_login(USER, PASSWORD, ADDRESS)))
    signed_in = await env3.server.check_login(USER, PASSWORD, ADDRESS, browser_cookie=cookie)
    assert signed_in == USER
    # from the stranger's own address too: a known browser is not limited by address
    assert await env3.server.check_login(USER, PASSWORD, STRANGER, browser_cookie=cookie) == USER


async def test_strangers_get_the_stated_number_of_guesses_checked(env3: Env) -> None:
    checked = 0
    real = env3.server.users.authenticate

    async def counting(username: str, password: str) -> str | None:
        nonlocal checked
        checked += 1
        return await real(username, password)

    env3.server.users.authenticate = counting  # type: ignore[method-assign]
    for i in range(40):
        await refused(env3.server.check_login(USER, f"guess{i}", f"198.51.100.{i}"))
    assert checked == 3  # max_failures per window, from 40 addresses
    env3.clock.advance(env3.config.login.failure_window)
    await refused(env3.server.check_login(USER, "guess", STRANGER))
    assert checked == 4  # the next window


async def test_a_known_browsers_failures_count_against_its_cookie_only(env3: Env) -> None:
    cookie = await known_cookie(env3)
    other_browser = env3.server.remember_browser(USER)
    for _ in range(3):
        await refused(env3.server.check_login(USER, "typo", ADDRESS, browser_cookie=cookie))
    assert_too_many(
        await refused(env3.server.check_login(USER, PASSWORD, ADDRESS, browser_cookie=cookie))
    )
    # the user's other browser, and unknown browsers, are not affected
    assert (
        await env3.server.check_login(USER, PASSWORD, ADDRESS, browser_cookie=other_browser) == USER
    )
    assert await env3.server.check_login(USER, PASSWORD, STRANGER) == USER


async def test_a_known_browsers_success_resets_its_count(env3: Env) -> None:
    cookie = await known_cookie(env3)
    for _ in range(3):
        for _ in range(2):
            await refused(env3.server.check_login(USER, "typo", ADDRESS, browser_cookie=cookie))
        assert await env3.server.check_login(USER, PASSWORD, ADDRESS, browser_cookie=cookie) == USER


async def test_another_users_cookie_makes_no_browser_known(env3: Env) -> None:
    cookie = await known_cookie(env3, OTHER_USER, OTHER_PASSWORD)
    await lock_out_strangers(env3)
    error = await refused(env3.server.check_login(USER, PASSWORD, ADDRESS, browser_cookie=cookie))
    assert_too_many(error)
    typed_otherwise = await refused(
        env3.server.check_login(USER.upper(), PASSWORD, ADDRESS, browser_cookie=cookie)
    )
    assert_too_many(typed_otherwise)  # "ALICE" counts as alice, and is not the cookie's user


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: c[:-2] + ("AA" if not c.endswith("AA") else "BB"),  # the MAC
        lambda c: c.replace(c.split(".")[1], str(int(c.split(".")[1]) + 10**6)),  # expiry
        lambda c: "x" * 2000,
        lambda c: "",
        lambda c: "a.b.c",
    ],
)
async def test_a_forged_cookie_makes_no_browser_known(env3: Env, tamper: object) -> None:
    cookie = await known_cookie(env3)
    await lock_out_strangers(env3)
    forged = tamper(cookie)  # type: ignore[operator]
    error = await refused(env3.server.check_login(USER, PASSWORD, ADDRESS, browser_cookie=forged))
    assert_too_many(error)


async def test_an_expired_cookie_makes_no_browser_known(env3: Env) -> None:
    cookie = await known_cookie(env3)
    env3.clock.advance(env3.config.login.known_browser_ttl - 60)
    await lock_out_strangers(env3)
    assert await env3.server.check_login(USER, PASSWORD, ADDRESS, browser_cookie=cookie) == USER
    env3.clock.advance(60)
    error = await refused(env3.server.check_login(USER, PASSWORD, ADDRESS, browser_cookie=cookie))
    assert_too_many(error)


async def test_a_cookie_from_another_deployment_makes_no_browser_known(
    env3: Env, env_with: EnvFactory
) -> None:
    other = env_with(login={"max_failures": 3})  # another AuthServer: another key
    cookie = await known_cookie(other)
    await lock_out_strangers(env3)
    error = await refused(env3.server.check_login(USER, PASSWORD, ADDRESS, browser_cookie=cookie))
    assert_too_many(error)


async def test_the_cookie_names_the_user_but_no_secret(env3: Env) -> None:
    cookie = await known_cookie(env3)
    assert PASSWORD not in cookie and len(cookie.split(".")) == 4
    assert env3.server.remember_browser(USER) != cookie  # a new nonce each time


async def test_the_counters_hold_no_cookie_nonce(env3: Env) -> None:
    cookie = await known_cookie(env3)
    await refused(env3.server.check_login(USER, "typo", ADDRESS, browser_cookie=cookie))
    nonce = cookie.split(".")[2]
    keys = [k for k in env3.store.counters._windows if k.startswith("login-browser:")]
    assert len(keys) == 1 and nonce not in keys[0]
    assert all(nonce not in k and cookie not in k for k in env3.store.counters._windows)


async def test_concurrent_guesses_get_no_more_checks_than_the_limit(env3: Env) -> None:
    """Each attempt is counted before its password is checked: fifty at once from fifty
    addresses get three checked, not fifty."""
    checked = 0
    real = env3.server.users.authenticate

    async def counting(username: str, password: str) -> str | None:
        nonlocal checked
        checked += 1
        await asyncio.sleep(0.01)  # the hash takes time: the others arrive meanwhile
        return await real(username, password)

    env3.server.users.authenticate = counting  # type: ignore[method-assign]
    errors = await asyncio.gather(
        *(refused(env3.server.check_login(USER, "guess", f"198.51.100.{i}")) for i in range(50))
    )
    assert checked == 3
    assert sorted(e.status for e in errors) == [401] * 3 + [429] * 47


async def test_refused_guesses_do_not_use_up_their_addresses(env3: Env) -> None:
    """Once the user's count is used up, a stranger's further guesses count nowhere: the
    address stays usable for other users."""
    await lock_out_strangers(env3, attempts=3)
    for _ in range(30):
        assert_too_many(await refused(env3.server.check_login(USER, "guess", STRANGER)))
    assert await env3.server.check_login(OTHER_USER, OTHER_PASSWORD, STRANGER) == OTHER_USER


async def test_a_right_password_from_an_unknown_browser_uses_up_nothing(env3: Env) -> None:
    for _ in range(10):
        assert await env3.server.check_login(USER, PASSWORD, STRANGER) == USER
    await lock_out_strangers(env3, attempts=2)
    assert await env3.server.check_login(USER, PASSWORD, STRANGER) == USER


async def test_a_backend_that_cannot_count_neither_lifts_the_limits_nor_fails(
    env3: Env,
) -> None:
    """Redis unreachable (a closed port): each sign-in tries it (within the store's
    timeout), then counts in this process; no error reaches the person."""
    from oauthd.store.redis import RedisStore

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    down = RedisStore(env3.clock, f"redis://127.0.0.1:{closed}/0", timeout=0.2, cache_size=0)
    env3.server.limiter._shared = down.counters
    try:
        cookie = await known_cookie(env3)
        await lock_out_strangers(env3)
        assert_too_many(await refused(env3.server.check_login(USER, PASSWORD, STRANGER)))
        assert await env3.server.check_login(USER, PASSWORD, ADDRESS, browser_cookie=cookie) == USER
    finally:
        await down.close()
