"""The pages a person goes through: /authorize -> login -> consent -> back to the app, and
/device -> login -> approval. Each flow is bound to the browser that started it by a
cookie secret; every form carries a CSRF token derived from that secret."""

from __future__ import annotations

from aiohttp import web

from oauthd.audit import reasons
from oauthd.http import pages
from oauthd.http.cookies import (
    browser_secret,
    browser_secret_or_new,
    check_csrf,
    csrf_token,
    known_browser,
    remember_browser,
    set_browser_cookie,
    set_session_cookie,
    signed_in_session,
    start_session,
)
from oauthd.http.errors import Routes
from oauthd.http.forms import read_form, single_values
from oauthd.http.keys import AUTH, CONFIG, client_address, page_brand
from oauthd.oauth import Flow, OAuthError, is_loopback_redirect, page_error, redirect_host


def refused_page(response: web.Response, error: OAuthError) -> web.Response:
    """A form page shown again for `error`, with the error's headers (a 429's
    Retry-After)."""
    response.headers.update(error.headers)
    return response


async def read_page_form(request: web.Request) -> dict[str, str]:
    """`read_form` for a person's form: a missing or repeated field, a wrong body type or a
    body over the limit is an error page, not the API's JSON."""
    try:
        return await read_form(request)
    except OAuthError as exc:
        raise page_error(exc.error, exc.description, exc.status) from None


def html(body: str, status: int = 200, targets: tuple[str, ...] = ()) -> web.Response:
    return web.Response(
        text=body, status=status, content_type="text/html", headers=pages.page_headers(targets)
    )


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def _targets(flow: Flow) -> tuple[str, ...]:
    """Where a form on this flow's pages may end up (CSP form-action follows redirects)."""
    uri = flow.pending.redirect_uri
    return (uri,) if uri and uri.startswith(("http://", "https://")) else ()


# -- /authorize ------------------------------------------------------------------------------


async def authorize(request: web.Request) -> web.StreamResponse:
    try:
        params = single_values(request.query)
    except OAuthError as exc:
        raise page_error(exc.error, exc.description) from None
    secret, new = browser_secret_or_new(request)
    pending = await request.app[AUTH].begin_authorization(params, secret)
    response = web.Response(
        status=302,
        headers={"Location": f"/login?request={pending.id}", "Cache-Control": "no-store"},
    )
    if new:
        set_browser_cookie(request, response, secret)
    return response


# -- login -----------------------------------------------------------------------------------


def _login_page(
    brand: pages.Brand,
    flow: Flow,
    secret: str,
    username: str = "",
    error: str | None = None,
    status: int = 200,
) -> web.Response:
    view = pages.LoginView(
        action="/login",
        csrf=csrf_token(secret, flow.pending.id),
        hidden={"request": flow.pending.id},
        client_name=flow.client.client_name,
        username=username,
        error=error,
    )
    return html(pages.render_login(view, brand), status, _targets(flow))


async def _flow(request: web.Request, pending_id: str) -> tuple[Flow, str]:
    secret = browser_secret(request)
    flow = await request.app[AUTH].flow(pending_id, secret)
    assert secret is not None
    return flow, secret


async def login_page(request: web.Request) -> web.Response:
    """The password form; none when people sign in at an identity provider (the consent
    page comes first then), or when this browser is signed in already (one login for every
    resource): then straight to the consent page, which is always shown after such a
    sign-in, since no one typed anything (RFC 8252 s8.6: no silent approval)."""
    flow, secret = await _flow(request, request.query.get("request", ""))
    auth = request.app[AUTH]
    if auth.signs_in_upstream:
        return await _consent(request, flow, secret)
    session = await signed_in_session(request)
    if session is not None:
        flow, _ = await auth.signed_in(flow, session.user)
        return see_other(f"/consent?request={flow.pending.id}")
    return _login_page(page_brand(request), flow, secret)


async def login_submit(request: web.Request) -> web.Response:
    form = await read_page_form(request)
    flow, secret = await _flow(request, form.get("request", ""))
    check_csrf(request, form, flow.pending.id)
    username = form.get("username", "")[:200]
    auth = request.app[AUTH]
    try:
        user = await auth.check_login(
            username,
            form.get("password", ""),
            client_address(request),
            flow.client.client_id,
            browser_cookie=known_browser(request),
        )
    except OAuthError as exc:
        page = _login_page(page_brand(request), flow, secret, username, exc.description, exc.status)
        return refused_page(page, exc)
    flow, consented = await auth.signed_in(flow, user)
    if consented:
        response = await _finish(request, flow, allow=True, remembered=True)
    else:
        response = see_other(f"/consent?request={flow.pending.id}")
    remember_browser(request, response, user)
    await start_session(request, response, user)
    return response


# -- consent ---------------------------------------------------------------------------------


async def _signed_in_flow(request: web.Request, pending_id: str) -> tuple[Flow, str]:
    flow, secret = await _flow(request, pending_id)
    if flow.pending.user is None:
        raise page_error("login_required", "Sign in first.", 403, reasons.SIGN_IN_ENDED)
    return flow, secret


async def consent_page(request: web.Request) -> web.Response:
    flow, secret = await _signed_in_flow(request, request.query.get("request", ""))
    return await _consent(request, flow, secret)


async def _consent(request: web.Request, flow: Flow, secret: str) -> web.Response:
    """The consent (or device approval) page. With an upstream identity provider it comes
    before the login, so the user is not known yet and the form leads to the provider."""
    pending, client = flow.pending, flow.client
    csrf, hidden = csrf_token(secret, pending.id), {"request": pending.id}
    user = pending.user or "the account you sign in with next"
    targets = _targets(flow)
    auth = request.app[AUTH]
    if auth.signs_in_upstream and pending.user is None:
        targets = (*targets, await auth.upstream_form_target())
    asked = await auth.consent_request(flow)
    words = {w.scope: w.words for w in (*asked.asked, *asked.allowed)}
    if pending.device_key is not None:
        approve = pages.DeviceApproveView(
            "/consent",
            csrf,
            hidden,
            client.client_name,
            pending.scopes,
            user,
            pending.state or "",
            unverified=client.source == "dcr",
            resource_name=asked.resource_name,
            descriptions=words,
        )
        return html(pages.render_device_approve(approve, page_brand(request)), targets=targets)
    uri = pending.redirect_uri
    consent = pages.ConsentView(
        "/consent",
        csrf,
        hidden,
        client.client_name,
        redirect_host(uri),
        tuple(w.scope for w in asked.asked),
        user,
        loopback_warning=is_loopback_redirect(uri),
        unverified=client.source == "dcr",
        redirect_uri=uri,
        resource_name=asked.resource_name,
        descriptions=words,
        allowed=tuple(w.scope for w in asked.allowed),
    )
    return html(pages.render_consent(consent, page_brand(request)), targets=targets)


async def consent_submit(request: web.Request) -> web.Response:
    form = await read_page_form(request)
    auth = request.app[AUTH]
    if auth.signs_in_upstream:
        flow, _ = await _flow(request, form.get("request", ""))
    else:
        flow, _ = await _signed_in_flow(request, form.get("request", ""))
    check_csrf(request, form, flow.pending.id)
    decision = form.get("decision")
    if decision not in ("allow", "deny"):
        raise page_error("invalid_request", 'decision must be "allow" or "deny"')
    if auth.signs_in_upstream and flow.pending.user is None and decision == "allow":
        return see_other(await auth.begin_upstream_login(flow))  # consent, then the provider
    return await _finish(request, flow, allow=decision == "allow")


async def upstream_callback(request: web.Request) -> web.Response:
    """The identity provider sends the browser back here with `state` and `code`."""
    auth = request.app[AUTH]
    if not auth.signs_in_upstream:
        raise page_error("invalid_request", "Sign-in through an identity provider is off.", 404)
    params = single_values(request.query)
    state, secret = params.get("state", ""), browser_secret(request)
    if "error" in params or not params.get("code"):
        flow = await auth.upstream_flow(state, secret)
        if flow.returns_to is not None:
            raise page_error(
                "access_denied",
                "The identity provider did not sign you in.",
                403,
                reasons.PROVIDER_REFUSED,
            )
        return await _finish(request, flow, allow=False)
    flow = await auth.complete_upstream_login(state, params["code"], secret)
    if flow.returns_to is not None:  # a sign-in to reach one of our pages (/upgrade)
        response = see_other(flow.returns_to)
        set_session_cookie(request, response, await auth.finish_page_sign_in(flow))
        return response
    return await _finish(request, flow, allow=True)


async def _finish(
    request: web.Request, flow: Flow, allow: bool, remembered: bool = False
) -> web.Response:
    location = await request.app[AUTH].finish(flow, allow, remembered=remembered)
    if location is None:
        done = pages.DeviceDoneView(approved=allow)
        return html(pages.render_device_done(done, page_brand(request)))
    return see_other(location)


# -- /device ---------------------------------------------------------------------------------


def _device_page(
    brand: pages.Brand,
    secret: str,
    user_code: str = "",
    error: str | None = None,
    status: int = 200,
) -> web.Response:
    view = pages.DeviceCodeView("/device", csrf_token(secret, "device"), error, user_code)
    return html(pages.render_device_code(view, brand), status)


async def device_page(request: web.Request) -> web.Response:
    secret, new = browser_secret_or_new(request)
    response = _device_page(page_brand(request), secret, request.query.get("user_code", "")[:16])
    if new:
        set_browser_cookie(request, response, secret)
    return response


async def device_submit(request: web.Request) -> web.Response:
    form = await read_page_form(request)
    secret = check_csrf(request, form, "device")
    typed = form.get("user_code", "")[:16]
    auth = request.app[AUTH]
    try:
        device = await auth.find_device_flow(typed, client_address(request))
    except OAuthError as exc:
        page = _device_page(page_brand(request), secret, typed, exc.description, exc.status)
        return refused_page(page, exc)
    if device is None:
        return _device_page(
            page_brand(request),
            secret,
            typed,
            "That code is not valid or has expired. Check it and try again.",
            400,
        )
    pending = await auth.device_pending(device, secret, typed)
    return see_other(f"/login?request={pending.id}")


async def stylesheet(request: web.Request) -> web.Response:
    return web.Response(body=pages.STYLESHEET, headers=pages.STYLESHEET_HEADERS)


# The logo is only ever an image: were its URL opened on its own, an SVG logo could carry
# script; this policy runs none (sandbox, no sources) and allows only its inline styles.
LOGO_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox"


async def logo(request: web.Request) -> web.Response:
    """The operator's logo (`pages.logo`, read at start). Its URL on the pages carries the
    content's digest, so it is cached for a year; a changed logo is a new URL."""
    image = request.app[CONFIG].pages.logo
    assert image is not None  # the route is only there with a logo
    etag = f'"{image.digest}"'
    headers = {
        "Content-Type": image.content_type,
        "Cache-Control": "public, max-age=31536000, immutable",
        "ETag": etag,
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": LOGO_CSP,
        "Cross-Origin-Resource-Policy": "same-origin",
    }
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=image.data, headers=headers)


def add_routes(app: web.Application) -> None:
    routes = Routes(app, pages=True)
    routes.get("/authorize", authorize)
    routes.get("/login", login_page)
    routes.post("/login", login_submit)
    routes.get("/consent", consent_page)
    routes.post("/consent", consent_submit)
    routes.get("/login/callback", upstream_callback)
    routes.get("/device", device_page)
    routes.post("/device", device_submit)
    routes.get(pages.STYLESHEET_PATH, stylesheet)
    if app[CONFIG].pages.logo is not None:
        routes.get(pages.LOGO_PATH, logo)
