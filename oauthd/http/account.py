"""/account: "Connected apps". A person signs in (the same form, users and rate limits as
the authorization flow), sees their own grants and revokes them.

The sign-in is the browser's sign-in session (`http/cookies.py`; the same one a sign-in on
the authorization pages starts), a session in the store (`AuthServer.sign_in_to_account`):
the cookie holds `<key>.<secret>`, the store a digest of the secret. It survives a restart,
works on every instance of a shared backend, ends after ACCOUNT_SESSION_TTL, and signing
out ends it for every copy of the cookie. Every form carries a CSRF token made from the
browser binding secret (see cookies.py) and, once signed in, from the session's key."""

from __future__ import annotations

from aiohttp import web

from oauthd.audit import reasons
from oauthd.http import pages
from oauthd.http.browser import html, read_page_form, refused_page, see_other
from oauthd.http.cookies import (
    browser_secret_or_new,
    check_csrf,
    csrf_token,
    end_session_cookie,
    known_browser,
    remember_browser,
    set_browser_cookie,
    signed_in_session,
    start_session,
)
from oauthd.http.errors import Routes
from oauthd.http.keys import AUTH, CLOCK, client_address, page_brand
from oauthd.model import AccountSession
from oauthd.oauth import (
    ACCOUNT_SESSION_TTL,
    UPGRADE_PATH,
    OAuthError,
    is_return_path,
    page_error,
)

SESSION_TTL = ACCOUNT_SESSION_TTL
LOGIN_PURPOSE = "account-login"
ACCOUNT_LEAD = "Sign in to see the apps connected to your account."
BACK_LEADS = {UPGRADE_PATH: "Sign in to approve more access for an app you use."}


def _local_login_only(request: web.Request) -> None:
    if request.app[AUTH].signs_in_upstream:
        raise page_error(
            "invalid_request",
            "Connected apps can only be shown for local accounts, and this server signs "
            "people in through an identity provider.",
            404,
        )


def _session_csrf(secret: str, session: AccountSession) -> str:
    return csrf_token(secret, f"account:{session.session_key}")


def login_page(
    brand: pages.Brand,
    secret: str,
    username: str = "",
    error: str | None = None,
    status: int = 200,
    *,
    back: str = "",
) -> web.Response:
    """The sign-in form; `back`: the page of ours to return to (`is_return_path`), else
    /account."""
    view = pages.LoginView(
        action="/account/login",
        csrf=csrf_token(secret, LOGIN_PURPOSE),
        hidden={"next": back} if back else {},
        client_name=None,
        username=username,
        error=error,
        lead=BACK_LEADS.get(back.partition("?")[0], ACCOUNT_LEAD),
    )
    return html(pages.render_login(view, brand), status)


async def account_page(request: web.Request) -> web.Response:
    _local_login_only(request)
    secret, new = browser_secret_or_new(request)
    session = await signed_in_session(request)
    if session is None:
        response = login_page(page_brand(request), secret)
    else:
        now = request.app[CLOCK].now()
        apps = await request.app[AUTH].connected_apps(session.user)
        rows = tuple(
            pages.AppRow(
                a.grant_id, a.client_name, a.scopes, a.created_at, a.last_used_at, a.resource_name
            )
            for a in apps
        )
        notice = None
        if request.query.get("revoked") == "1":
            notice = "Access revoked. That app's tokens no longer work."
        view = pages.AccountView(session.user, _session_csrf(secret, session), rows, now, notice)
        response = html(pages.render_account(view, page_brand(request)))
    if new:
        set_browser_cookie(request, response, secret)
    return response


async def login_submit(request: web.Request) -> web.Response:
    _local_login_only(request)
    form = await read_page_form(request)
    secret = check_csrf(request, form, LOGIN_PURPOSE)
    back = form.get("next", "")
    back = back if is_return_path(back) else ""
    username = form.get("username", "")[:200]
    address = client_address(request)
    try:
        user = await request.app[AUTH].check_login(
            username, form.get("password", ""), address, browser_cookie=known_browser(request)
        )
    except OAuthError as exc:
        brand = page_brand(request)
        page = login_page(brand, secret, username, exc.description, exc.status, back=back)
        return refused_page(page, exc)
    response = see_other(back or "/account")
    remember_browser(request, response, user)
    await start_session(request, response, user)
    return response


async def _signed_in_form(request: web.Request) -> tuple[AccountSession, dict[str, str]]:
    form = await read_page_form(request)
    session = await signed_in_session(request)
    if session is None:
        raise page_error(
            "login_required", "Your session has ended. Sign in again.", 403, reasons.SIGN_IN_ENDED
        )
    check_csrf(request, form, f"account:{session.session_key}")
    return session, form


async def revoke_submit(request: web.Request) -> web.Response:
    _local_login_only(request)
    session, form = await _signed_in_form(request)
    ended = await request.app[AUTH].revoke_connected_app(session.user, form.get("grant", ""))
    return see_other("/account?revoked=1" if ended is not None else "/account")


async def logout_submit(request: web.Request) -> web.Response:
    form = await read_page_form(request)
    session = await signed_in_session(request)
    if session is not None:  # else: already ended; just clear the cookie
        check_csrf(request, form, f"account:{session.session_key}")
        await request.app[AUTH].sign_out_of_account(session)
    response = see_other("/account")
    end_session_cookie(request, response)
    return response


def add_routes(app: web.Application) -> None:
    routes = Routes(app, pages=True)
    routes.get("/account", account_page)
    routes.post("/account/login", login_submit)
    routes.post("/account/revoke", revoke_submit)
    routes.post("/account/logout", logout_submit)
