"""/account: "Connected apps". A person signs in (the same form, users and rate limits as
the authorization flow), sees their own grants and revokes them.

The sign-in is a small stateless session: a cookie `<user>.<expires>.<nonce>.<mac>`, the MAC
an HMAC-SHA256 keyed by a random key made when the process starts. Sessions therefore end
when oauthd restarts (and after SESSION_TTL); signing out remembers the session's nonce
until it would have expired anyway. Every form carries a CSRF token made from the browser
binding secret (see browser.py) and, once signed in, from the session's nonce."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from aiohttp import web

from oauthd import crypto
from oauthd.http import pages
from oauthd.http.browser import (
    browser_secret_or_new,
    check_csrf,
    csrf_token,
    html,
    known_browser,
    read_page_form,
    refused_page,
    remember_browser,
    see_other,
    set_browser_cookie,
)
from oauthd.http.errors import Routes
from oauthd.http.keys import AUTH, CLOCK, CONFIG, client_address, service_name
from oauthd.oauth import OAuthError, page_error

SESSION_TTL = 30 * 60.0
LOGIN_PURPOSE = "account-login"


@dataclass(slots=True, frozen=True)
class Session:
    user: str
    expires: int
    nonce: str


class AccountSessions:
    """Issues and checks the signed session cookies of this process."""

    def __init__(self, ttl: float = SESSION_TTL) -> None:
        self._key = crypto.new_secret()
        self._ttl = ttl
        self._ended: dict[str, int] = {}  # nonce -> expiry, of signed-out sessions

    def issue(self, user: str, now: float) -> tuple[str, Session]:
        session = Session(user, int(now + self._ttl), crypto.new_key())
        name = base64.urlsafe_b64encode(user.encode()).decode().rstrip("=")
        body = f"{name}.{session.expires}.{session.nonce}"
        return f"{body}.{crypto.keyed_digest(self._key, body)}", session

    def check(self, value: str | None, now: float) -> Session | None:
        if not value or len(value) > 1024:
            return None
        body, _, mac = value.rpartition(".")
        if not body or not crypto.texts_match(mac, crypto.keyed_digest(self._key, body)):
            return None
        try:  # signed by us, so well formed; checked all the same
            name, expires, nonce = body.split(".")
            user = base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()
            session = Session(user, int(expires), nonce)
        except ValueError:  # binascii.Error, UnicodeDecodeError included
            return None
        if session.expires <= now or nonce in self._ended:
            return None
        return session

    def end(self, session: Session, now: float) -> None:
        self._ended = {n: e for n, e in self._ended.items() if e > now}
        self._ended[session.nonce] = session.expires


SESSIONS = web.AppKey("account_sessions", AccountSessions)


def _secure(request: web.Request) -> bool:
    return request.app[CONFIG].server.issuer.startswith("https://")


def cookie_name(request: web.Request) -> str:
    return "__Host-oauthd_account" if _secure(request) else "oauthd_account"


def _session(request: web.Request) -> Session | None:
    """The signed-in session, if valid and its user is still configured (a user removed by
    a reload is signed out at once)."""
    value = request.cookies.get(cookie_name(request))
    session = request.app[SESSIONS].check(value, request.app[CLOCK].now())
    return session if session is not None and request.app[AUTH].is_user(session.user) else None


def _local_login_only(request: web.Request) -> None:
    if request.app[AUTH].signs_in_upstream:
        raise page_error(
            "invalid_request",
            "Connected apps can only be shown for local accounts, and this server signs "
            "people in through an identity provider.",
            404,
        )


def _session_csrf(secret: str, session: Session) -> str:
    return csrf_token(secret, f"account:{session.nonce}")


def _login_page(
    service: str, secret: str, username: str = "", error: str | None = None, status: int = 200
) -> web.Response:
    view = pages.LoginView(
        action="/account/login",
        csrf=csrf_token(secret, LOGIN_PURPOSE),
        hidden={},
        client_name=None,
        username=username,
        error=error,
        lead="Sign in to see the apps connected to your account.",
    )
    return html(pages.render_login(view, service), status)


async def account_page(request: web.Request) -> web.Response:
    _local_login_only(request)
    secret, new = browser_secret_or_new(request)
    session = _session(request)
    if session is None:
        response = _login_page(service_name(request), secret)
    else:
        now = request.app[CLOCK].now()
        apps = await request.app[AUTH].connected_apps(session.user)
        rows = tuple(
            pages.AppRow(a.grant_id, a.client_name, a.scopes, a.created_at, a.last_used_at)
            for a in apps
        )
        notice = None
        if request.query.get("revoked") == "1":
            notice = "Access revoked. That app's tokens no longer work."
        view = pages.AccountView(session.user, _session_csrf(secret, session), rows, now, notice)
        response = html(pages.render_account(view, service_name(request)))
    if new:
        set_browser_cookie(request, response, secret)
    return response


async def login_submit(request: web.Request) -> web.Response:
    _local_login_only(request)
    form = await read_page_form(request)
    secret = check_csrf(request, form, LOGIN_PURPOSE)
    username = form.get("username", "")[:200]
    address = client_address(request)
    try:
        user = await request.app[AUTH].check_login(
            username, form.get("password", ""), address, browser_cookie=known_browser(request)
        )
    except OAuthError as exc:
        page = _login_page(service_name(request), secret, username, exc.description, exc.status)
        return refused_page(page, exc)
    value, _ = request.app[SESSIONS].issue(user, request.app[CLOCK].now())
    response = see_other("/account")
    remember_browser(request, response, user)
    response.set_cookie(
        cookie_name(request),
        value,
        max_age=int(SESSION_TTL),
        path="/",
        httponly=True,
        samesite="Lax",
        secure=_secure(request),
    )
    return response


async def _signed_in_form(request: web.Request) -> tuple[Session, dict[str, str]]:
    form = await read_page_form(request)
    session = _session(request)
    if session is None:
        raise page_error("login_required", "Your session has ended. Sign in again.", 403)
    check_csrf(request, form, f"account:{session.nonce}")
    return session, form


async def revoke_submit(request: web.Request) -> web.Response:
    _local_login_only(request)
    session, form = await _signed_in_form(request)
    ended = await request.app[AUTH].revoke_connected_app(session.user, form.get("grant", ""))
    return see_other("/account?revoked=1" if ended is not None else "/account")


async def logout_submit(request: web.Request) -> web.Response:
    form = await read_page_form(request)
    session = _session(request)
    if session is not None:  # else: already ended; just clear the cookie
        check_csrf(request, form, f"account:{session.nonce}")
        request.app[SESSIONS].end(session, request.app[CLOCK].now())
    response = see_other("/account")
    response.del_cookie(
        cookie_name(request), path="/", secure=_secure(request), httponly=True, samesite="Lax"
    )
    return response


def add_routes(app: web.Application) -> None:
    app[SESSIONS] = AccountSessions()
    routes = Routes(app, pages=True)
    routes.get("/account", account_page)
    routes.post("/account/login", login_submit)
    routes.post("/account/revoke", revoke_submit)
    routes.post("/account/logout", logout_submit)
