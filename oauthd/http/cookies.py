"""The cookies of a person's browser and the checks of their forms.

- the browser binding secret (`oauthd_browser`): binds each pending flow to the browser
  that started it; every form's CSRF token is derived from it;
- the known-browser cookie (`oauthd_known`, `oauthd.oauth.known_browsers`): the sign-in
  rate limits' own bucket for a browser that signed in before;
- the sign-in session (`oauthd_account`, an `AccountSession` in the store): a person who
  signed in with a password, on the authorization pages or at /account, is signed in for
  `ACCOUNT_SESSION_TTL` in this browser: one login for every resource and for /account.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from oauthd import crypto
from oauthd.audit import reasons
from oauthd.http.keys import AUTH, CONFIG
from oauthd.model import AccountSession
from oauthd.oauth import ACCOUNT_SESSION_TTL, page_error

COOKIE_MAX_AGE = 24 * 3600
_DEFAULT_PORTS = {"http": 80, "https": 443}


def cookie_name(request: web.Request) -> str:
    secure = request.app[CONFIG].server.issuer.startswith("https://")
    return "__Host-oauthd_browser" if secure else "oauthd_browser"


def browser_secret(request: web.Request) -> str | None:
    value = request.cookies.get(cookie_name(request))
    return value if value and len(value) <= 128 else None


def browser_secret_or_new(request: web.Request) -> tuple[str, bool]:
    """This browser's secret, or a fresh one (True) that the response must set."""
    secret = browser_secret(request)
    return (secret, False) if secret is not None else (crypto.new_secret(), True)


def set_browser_cookie(request: web.Request, response: web.StreamResponse, secret: str) -> None:
    response.set_cookie(
        cookie_name(request),
        secret,
        max_age=COOKIE_MAX_AGE,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=request.app[CONFIG].server.issuer.startswith("https://"),
    )


def known_browser_cookie_name(request: web.Request) -> str:
    secure = request.app[CONFIG].server.issuer.startswith("https://")
    return "__Host-oauthd_known" if secure else "oauthd_known"


def known_browser(request: web.Request) -> str | None:
    """The browser's known-browser cookie (`oauthd.oauth.known_browsers`), if it sent one."""
    return request.cookies.get(known_browser_cookie_name(request))


def remember_browser(request: web.Request, response: web.StreamResponse, user: str) -> None:
    """Give the browser that just signed in as `user` its known-browser cookie: sent only
    to our own pages (SameSite=Strict: the sign-in forms are posted from them), never to
    scripts, for `login.known_browser_ttl`."""
    auth = request.app[AUTH]
    response.set_cookie(
        known_browser_cookie_name(request),
        auth.remember_browser(user),
        max_age=int(auth.known_browser_ttl),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.app[CONFIG].server.issuer.startswith("https://"),
    )


def secure(request: web.Request) -> bool:
    return request.app[CONFIG].server.issuer.startswith("https://")


def session_cookie_name(request: web.Request) -> str:
    return "__Host-oauthd_account" if secure(request) else "oauthd_account"


async def signed_in_session(request: web.Request) -> AccountSession | None:
    """The browser's live sign-in session, if its user is still configured."""
    cookie = request.cookies.get(session_cookie_name(request))
    return await request.app[AUTH].account_session(cookie)


async def start_session(request: web.Request, response: web.StreamResponse, user: str) -> None:
    """Sign this browser in as `user` (whose password was just checked) for
    ACCOUNT_SESSION_TTL: a new session in the store, its cookie on `response` (SameSite=Lax:
    sent when an app sends the browser to /authorize)."""
    value, _ = await request.app[AUTH].sign_in_to_account(user)
    set_session_cookie(request, response, value)


def set_session_cookie(request: web.Request, response: web.StreamResponse, value: str) -> None:
    """The sign-in session's cookie: `value` is what `AuthServer.sign_in_to_account` (or
    `finish_page_sign_in`, for a sign-in at the identity provider) returned."""
    response.set_cookie(
        session_cookie_name(request),
        value,
        max_age=int(ACCOUNT_SESSION_TTL),
        path="/",
        httponly=True,
        samesite="Lax",
        secure=secure(request),
    )


def end_session_cookie(request: web.Request, response: web.StreamResponse) -> None:
    response.del_cookie(
        session_cookie_name(request),
        path="/",
        secure=secure(request),
        httponly=True,
        samesite="Lax",
    )


def csrf_token(secret: str, purpose: str) -> str:
    return crypto.keyed_digest(secret, f"csrf:{purpose}")


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, default ports filled in; None if it is not one."""
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError:
        return None
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    return scheme, host, port or _DEFAULT_PORTS[scheme]


def check_same_origin(request: web.Request) -> None:
    """Defence in depth beside the CSRF token: a form POST that says it comes from another
    site is refused. `Sec-Fetch-Site: cross-site` or `same-site` says so; so does an
    `Origin` (or, without one, a `Referer`) naming another origin. Our pages send
    `Referrer-Policy: no-referrer`, under which browsers send `Origin: null` and no Referer
    even on our own forms: "null" says nothing then (Sec-Fetch-Site still does). No header
    at all (old browsers, privacy tools): allowed, the CSRF token still holds."""
    site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
    origin = request.headers.get("Origin")
    sent = origin if origin is not None and origin.strip() != "null" else None
    if sent is None and origin is None:
        sent = request.headers.get("Referer")
    foreign = site in ("cross-site", "same-site") or (
        sent is not None and _origin(sent) != _origin(request.app[CONFIG].server.issuer)
    )
    if foreign:
        raise page_error(
            "invalid_request",
            "This form was sent from another site, not from this one. "
            "Start again from the application.",
            403,
            reasons.CROSS_SITE_FORM,
        )


def check_csrf(request: web.Request, form: dict[str, str], purpose: str) -> str:
    """The browser secret, if the form's CSRF token was made from it for `purpose` and the
    form came from our own origin (`check_same_origin`)."""
    check_same_origin(request)
    secret = browser_secret(request)
    given = form.get("csrf_token", "")
    if secret is None or not crypto.texts_match(given, csrf_token(secret, purpose)):
        raise page_error(
            "invalid_request",
            "This form expired or did not come from this site (CSRF check failed). "
            "Start again from the application.",
            403,
            reasons.CSRF_FAILED,
        )
    return secret
