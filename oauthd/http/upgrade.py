"""/upgrade: the owner of a grant approves scopes its access token lacks (issue #12 item
5). The proxy's 403 `insufficient_scope` names this page (`oauthd.oauth.upgrade_url`).

A person is signed in the way /account signs them in (its session cookie): with a
password, the same form (`account.login_page`) leading back here; through an identity
provider, the provider's sign-in (`AuthServer.begin_page_sign_in`) leading back here.
The Approve/Cancel form carries a CSRF token made from the browser secret and the
session; the protocol (`AuthServer.upgrade_offer`, `upgrade_grant`) decides everything
else, and says the same about an unknown, ended or another user's grant."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from aiohttp import web

from oauthd.audit import reasons
from oauthd.http.account import login_page
from oauthd.http.browser import html, read_page_form, see_other
from oauthd.http.cookies import (
    browser_secret_or_new,
    check_csrf,
    csrf_token,
    set_browser_cookie,
    signed_in_session,
)
from oauthd.http.errors import Routes
from oauthd.http.forms import single_values
from oauthd.http.keys import AUTH, page_brand
from oauthd.http.upgrade_pages import (
    UpgradeView,
    render_cancelled,
    render_nothing_to_add,
    render_upgrade,
    render_upgraded,
)
from oauthd.model import AccountSession
from oauthd.oauth import UPGRADE_PATH, OAuthError, UpgradeOffer, page_error


def _purpose(session: AccountSession) -> str:
    return f"upgrade:{session.session_key}"


def _asked(params: dict[str, str]) -> tuple[str, str]:
    return params.get("grant", ""), params.get("scope", "")


def _scopes(scope: str) -> tuple[str, ...]:
    return tuple(scope.split())


async def upgrade_page(request: web.Request) -> web.StreamResponse:
    try:
        grant, scope = _asked(single_values(request.query))
    except OAuthError as exc:
        raise page_error(exc.error, exc.description) from None
    secret, new = browser_secret_or_new(request)
    session = await signed_in_session(request)
    if session is None:
        response = await _sign_in(request, grant, scope, secret)
    else:
        response = await _offer_page(request, session, secret, grant, scope)
    if new:
        set_browser_cookie(request, response, secret)
    return response


async def _sign_in(request: web.Request, grant: str, scope: str, secret: str) -> web.StreamResponse:
    """The sign-in that leads back to this page: the provider's, or the password form."""
    back = f"{UPGRADE_PATH}?{urlencode({'grant': grant, 'scope': scope}, quote_via=quote)}"
    auth = request.app[AUTH]
    if auth.signs_in_upstream:
        return see_other(await auth.begin_page_sign_in(back, secret))
    return login_page(page_brand(request), secret, back=back)


async def _offer_page(
    request: web.Request, session: AccountSession, secret: str, grant: str, scope: str
) -> web.Response:
    offer = await request.app[AUTH].upgrade_offer(session.user, grant, _scopes(scope))
    brand = page_brand(request)
    if not offer.added:
        return html(render_nothing_to_add(offer.client_name, offer.resource.name, brand))
    view = UpgradeView(
        action=UPGRADE_PATH,
        csrf=csrf_token(secret, _purpose(session)),
        hidden={"grant": grant, "scope": scope},
        client_name=offer.client_name,
        resource_name=offer.resource.name,
        user=session.user,
        added=tuple((w.scope, w.words) for w in request.app[AUTH].describe_scopes(offer.added)),
        unverified=offer.unverified,
    )
    return html(render_upgrade(view, brand))


async def upgrade_submit(request: web.Request) -> web.Response:
    form = await read_page_form(request)
    session = await signed_in_session(request)
    if session is None:
        raise page_error(
            "login_required",
            "Your sign-in has ended. Open the link from the app again.",
            403,
            reasons.SIGN_IN_ENDED,
        )
    check_csrf(request, form, _purpose(session))
    decision = form.get("decision")
    if decision not in ("allow", "deny"):
        raise page_error("invalid_request", 'decision must be "allow" or "deny"')
    grant, scope = _asked(form)
    auth, brand = request.app[AUTH], page_brand(request)
    offer: UpgradeOffer
    if decision == "deny":
        offer = await auth.upgrade_offer(session.user, grant, _scopes(scope))
        return html(render_cancelled(offer.client_name, brand))
    offer = await auth.upgrade_grant(session.user, grant, _scopes(scope))
    if not offer.added:
        return html(render_nothing_to_add(offer.client_name, offer.resource.name, brand))
    return html(render_upgraded(offer.client_name, offer.resource.name, brand))


def add_routes(app: web.Application) -> None:
    routes = Routes(app, pages=True)
    routes.get(UPGRADE_PATH, upgrade_page)
    routes.post(UPGRADE_PATH, upgrade_submit)
