"""The password sign-in of /authorize's login and /account's, with limits that bound online
guessing without letting a stranger lock anyone out.

- A browser holding a valid known-browser cookie for the user it types
  (`oauthd.oauth.known_browsers`) is limited by that cookie alone: its failures count
  there, and only that browser is ever refused for them.
- Every other attempt counts against the user's "unknown browsers" limit and its client
  address's: once either is used up, unknown browsers are refused for that user (or from
  that address) until the window ends; known browsers are not.

The checks come before the password is: a refused attempt never reaches the hash, so the
limit bounds the guesses checked, not only the failures reported. A success from an
unknown browser does not reset the user's count (else a stranger's bound would reset
whenever the user signs in); a success from a known browser resets that browser's."""

from __future__ import annotations

import asyncio

from oauthd.metrics import Metrics
from oauthd.oauth.errors import page_error
from oauthd.oauth.known_browsers import KnownBrowsers
from oauthd.oauth.login import record_login
from oauthd.oauth.ratelimit import Limit, Limiter, Limits, too_many
from oauthd.users import Users

REFUSED = "Too many failed sign-ins. Wait a few minutes and try again."


def user_key(username: str) -> str:
    """The name a user's count is kept under: typed names that differ only in case or
    surrounding spaces are one user's guesses."""
    return username.strip().lower()


class SignIns:
    def __init__(
        self, limiter: Limiter, limits: Limits, browsers: KnownBrowsers, metrics: Metrics
    ) -> None:
        self._limiter = limiter
        self._limits = limits
        self.browsers = browsers
        self._metrics = metrics

    def _counted_under(
        self, username: str, address: str, browser_cookie: str | None
    ) -> list[tuple[Limit, str]]:
        limits = self._limits
        browser = self.browsers.recognise(browser_cookie, username)
        if browser is not None:
            return [(limits.sign_in_known_browser, browser)]
        return [(limits.sign_in_user, user_key(username)), (limits.sign_in_address, address)]

    async def check(
        self,
        users: Users,
        username: str,
        password: str,
        address: str,
        *,
        client_id: str | None = None,
        browser_cookie: str | None = None,
    ) -> str:
        """The user, if the password is right and no limit it counts under is used up; a
        page error otherwise (429 with Retry-After, or 401). Counted and audited."""
        under = self._counted_under(username, address, browser_cookie)
        waits = await asyncio.gather(*(self._limiter.over(limit, key) for limit, key in under))
        wait = max((w for w in waits if w is not None), default=None)
        if wait is not None:
            self._audit("rate_limited", username, address, client_id)
            raise too_many(REFUSED, wait, page=True)
        user = await users.authenticate(username, password)
        if user is None:
            await asyncio.gather(*(self._limiter.count(limit, key) for limit, key in under))
            self._audit("failure", username, address, client_id)
            raise page_error("access_denied", "Wrong username or password.", 401)
        known = under[0]
        if known[0] is self._limits.sign_in_known_browser:
            await self._limiter.forget(*known)
        self._audit("success", user, address, client_id)
        return user

    def _audit(self, result: str, user: str, address: str, client_id: str | None) -> None:
        record_login(
            self._metrics,
            result,
            method="password",
            user=user,
            client_id=client_id,
            address=address,
        )
