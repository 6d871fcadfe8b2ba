"""The /account session's cookie: set by /account's password sign-in and by a sign-in at
the identity provider that leads back to a page of ours (`/login/callback`); read by
/account and the upgrade page."""

from __future__ import annotations

from aiohttp import web

from oauthd.http.keys import CONFIG
from oauthd.oauth import ACCOUNT_SESSION_TTL


def account_cookie_name(request: web.Request) -> str:
    """The /account session's cookie (`oauthd.http.account`), which the upgrade page reads."""
    secure = request.app[CONFIG].server.issuer.startswith("https://")
    return "__Host-oauthd_account" if secure else "oauthd_account"


def set_account_cookie(request: web.Request, response: web.StreamResponse, value: str) -> None:
    response.set_cookie(
        account_cookie_name(request),
        value,
        max_age=int(ACCOUNT_SESSION_TTL),
        path="/",
        httponly=True,
        samesite="Lax",
        secure=request.app[CONFIG].server.issuer.startswith("https://"),
    )
