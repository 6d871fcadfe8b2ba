"""Signing in at the identity provider to reach one of our own pages (the upgrade page),
when people sign in there rather than with a password.

It rides on the authorization flow's provider leg (`oauthd.oauth.upstream`): a
`PendingAuthorization` bound to the browser, with no client (`PAGE_SIGN_IN`) and the
page's path as its redirect URI, goes to the provider; its callback, instead of issuing a
code, ends the pending record (single use) and starts an /account session of the
provider's user (`Accounts.sign_in`), which the page then reads like a password sign-in's."""

from __future__ import annotations

from oauthd import crypto
from oauthd.clock import Clock
from oauthd.config import Config
from oauthd.model import PendingAuthorization
from oauthd.oauth.account import Accounts
from oauthd.oauth.authorize import PAGE_SIGN_IN, Flow
from oauthd.oauth.errors import page_error
from oauthd.oauth.upgrade import UPGRADE_PATH
from oauthd.store import Store

RETURN_PREFIXES = (UPGRADE_PATH + "?",)


def is_return_path(path: str) -> bool:
    """True for a path of ours a sign-in may lead back to (never another site's URL)."""
    return path.startswith(RETURN_PREFIXES) and path.isprintable() and "\\" not in path


class PageSignIns:
    def __init__(self, config: Config, store: Store, clock: Clock, accounts: Accounts) -> None:
        self._config = config
        self._store = store
        self._clock = clock
        self._accounts = accounts

    async def begin(self, return_to: str, browser_secret: str) -> PendingAuthorization:
        """The pending sign-in of this browser that leads back to `return_to`."""
        if not is_return_path(return_to):
            raise page_error("invalid_request", "This page cannot be reached by signing in.")
        now = self._clock.now()
        pending = PendingAuthorization(
            id=crypto.new_key(),
            client_id=PAGE_SIGN_IN,
            redirect_uri=return_to,
            scopes=(),
            resource="",
            state=None,
            code_challenge="",
            user=None,
            browser_hash=crypto.hash_secret(browser_secret),
            device_key=None,
            upstream=None,
            created_at=now,
            expires_at=now + self._config.tokens.pending_ttl,
        )
        await self._store.pending.add(pending)
        return pending

    async def finish(self, flow: Flow) -> str:
        """The provider signed the browser in: end the pending sign-in (once) and return
        the cookie value of a new /account session of its user."""
        pending = await self._store.pending.take(flow.pending.id)
        if pending is None or pending.user is None or flow.returns_to is None:
            raise page_error("invalid_request", "This sign-in has expired. Start again.")
        value, _ = await self._accounts.sign_in(pending.user)
        return value
