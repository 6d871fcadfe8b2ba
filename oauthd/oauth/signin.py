"""The password sign-in of /authorize's login and /account's, with limits that bound online
guessing without letting a stranger lock anyone out.

- A browser holding a valid known-browser cookie for the user it types
  (`oauthd.oauth.known_browsers`) is limited by that cookie alone: its failures count
  there, and only that browser is ever refused for them.
- Every other attempt counts against the user's "unknown browsers" limit and its client
  address's: once either is used up, unknown browsers are refused for that user (or from
  that address) until the window ends; known browsers are not.

Each attempt is counted before the password is checked (and taken back if it was right):
a refused attempt never reaches the hash, and however many arrive at once, no more than
the limit are checked. A success from an unknown browser does not reset the user's count
(else a stranger's bound would reset whenever the user signs in); a success from a known
browser resets that browser's."""

from __future__ import annotations

import asyncio

from oauthd.audit import reasons
from oauthd.metrics import Metrics
from oauthd.oauth.errors import OAuthError, page_error
from oauthd.oauth.known_browsers import KnownBrowsers
from oauthd.oauth.login import record_login
from oauthd.oauth.ratelimit import Limit, Limiter, Limits, too_many
from oauthd.store import Store
from oauthd.users import Users

REFUSED = "Too many failed sign-ins. Wait a few minutes and try again."


def user_key(username: str) -> str:
    """The name a user's count is kept under: typed names that differ only in case or
    surrounding spaces are one user's guesses."""
    return username.strip().lower()


class SignIns:
    def __init__(
        self,
        limiter: Limiter,
        limits: Limits,
        browsers: KnownBrowsers,
        metrics: Metrics,
        store: Store,
    ) -> None:
        self._store = store
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
        try:
            await self._admit(under)
        except OAuthError:
            await self._audit("rate_limited", username, address, client_id)
            raise
        user = await users.authenticate(username, password)
        if user is None:
            await self._audit("failure", username, address, client_id)
            raise page_error(
                "access_denied", "Wrong username or password.", 401, reasons.BAD_CREDENTIALS
            )
        limit, key = under[0]
        if limit is self._limits.sign_in_known_browser:
            await self._limiter.forget(limit, key)
        else:  # a right password is no guess: it does not use up the user's count
            await asyncio.gather(*(self._limiter.take_back(*counted) for counted in under))
        await self._audit("success", user, address, client_id)
        return user

    async def _admit(self, under: list[tuple[Limit, str]]) -> None:
        """Count the attempt under each limit, in order; at the first one used up, take
        back the counts already made (a refused attempt counts nowhere else: strangers'
        refused guesses do not use up their addresses' counts) and raise the 429."""
        admitted: list[tuple[Limit, str]] = []
        for limit, key in under:
            wait = await self._limiter.admit(limit, key)
            if wait is not None:
                for counted in admitted:
                    await self._limiter.take_back(*counted)
                raise too_many(REFUSED, wait, page=True)
            admitted.append((limit, key))

    async def _audit(self, result: str, user: str, address: str, client_id: str | None) -> None:
        await record_login(
            self._store,
            self._metrics,
            result,
            method="password",
            user=user,
            client_id=client_id,
            address=address,
        )
