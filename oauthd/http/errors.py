"""The one place where errors become HTTP responses.

An `OAuthError` becomes JSON, a redirect to the client (with `state` and `iss`) or an HTML
page, as it says. Store trouble (`Unavailable`) is a 503 with Retry-After, whatever the
endpoint (an HTML page for a browser, JSON `temporarily_unavailable` for the rest); during
an outage it is logged once every few seconds with a count, not once per request. Anything
unexpected is a 500 `server_error` naming the request id, with the traceback only in the
log."""

from __future__ import annotations

import functools
import logging
import math
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable

from aiohttp import web

from oauthd.audit import reasons
from oauthd.http import pages
from oauthd.http.keys import CONFIG, METRICS, page_brand
from oauthd.log import request_id_var
from oauthd.metrics import Metrics
from oauthd.oauth import Delivery, OAuthError, add_query
from oauthd.proxy import ACCESS_REQUEST_ID
from oauthd.store import Unavailable

log = logging.getLogger("oauthd.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Wrapper = Callable[[Handler], Handler]
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def json_error(
    status: int, error: str, description: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = {"error": error, "error_description": description}
    return web.json_response(body, status=status, headers={**NO_STORE, **(headers or {})})


def unavailable(
    exc: Unavailable, *, page: bool = False, brand: pages.Brand = pages.NO_BRAND
) -> web.Response:
    retry = str(max(1, math.ceil(exc.retry_after)))
    if page:  # a person in a browser: a page, not JSON
        view = pages.ErrorView(
            "Temporarily unavailable",
            "This service cannot reach its storage right now.",
            503,
            hint=f"Nothing was lost. Please try again in {retry} seconds or a little later.",
        )
        return web.Response(
            text=pages.render_error(view, brand),
            status=503,
            content_type="text/html",
            headers={**pages.PAGE_HEADERS, "Retry-After": retry},
        )
    return json_error(
        503,
        "temporarily_unavailable",
        "the service cannot save state right now; retry later",
        {"Retry-After": retry},
    )


class RefusalLog:
    """Logs requests refused for an unavailable store: the first at once, then at most one
    line every `every` seconds, counting those refused in between (an outage under load
    would otherwise write a line per request)."""

    def __init__(self, every: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self._clock = clock
        self._logged_at = -math.inf
        self._unlogged = 0

    def refused(self, exc: Unavailable, path: str) -> None:
        now = self._clock()
        if now - self._logged_at < self.every:
            self._unlogged += 1
            return
        log.warning(
            "request refused: store unavailable",
            extra={
                "event": "http.unavailable",
                "reason": exc.reason,
                "path": path,
                "also_refused": self._unlogged,  # since the last such line
            },
        )
        self._logged_at, self._unlogged = now, 0


def _endpoint(request: web.Request) -> str:
    """A bounded label: the route's path as registered (a path no route has is "other")."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "other"


def address_refused(request: web.Request, what: str) -> web.Response:
    """403 for a client address outside an `allow` list (/metrics, /forward-auth): logged
    and counted with its reason like every 403."""
    log.info(
        "request refused",
        extra={
            "event": "http.address_refused",
            "reason": reasons.ADDRESS_NOT_ALLOWED,
            "path": request.path,
        },
    )
    metrics = request.app.get(METRICS)
    if metrics is not None:
        metrics.refusal(_endpoint(request), "access_denied", reasons.ADDRESS_NOT_ALLOWED)
    return json_error(403, "access_denied", f"{what} not served to this address")


REFUSALS = web.AppKey("refusals", RefusalLog)  # one per app (added by `Routes`)


PAGE_TITLES = {
    "invalid_client": "This application is not known here",
    "too_many_requests": "Too many attempts",
    "access_denied": "Access denied",
    "login_required": "Please sign in",
}


def oauth_error(request: web.Request, error: OAuthError) -> web.Response:
    if error.delivery is Delivery.REDIRECT and error.redirect is not None:
        target = error.redirect
        location = add_query(
            target.redirect_uri,
            {
                "error": error.error,
                "error_description": error.description,
                "state": target.state,
                "iss": request.app[CONFIG].server.issuer,
            },
        )
        status = 302 if request.method == "GET" else 303
        return web.Response(status=status, headers={"Location": location, **NO_STORE})
    if error.delivery is Delivery.PAGE:
        title = PAGE_TITLES.get(error.error, "This sign-in link is not valid")
        view = pages.ErrorView(title, error.description, error.status)
        page = pages.render_error(view, page_brand(request))
        return web.Response(
            text=page,
            status=error.status,
            content_type="text/html",
            headers={**pages.PAGE_HEADERS, **error.headers},  # a 429's Retry-After
        )
    return json_error(error.status, error.error, error.description, error.headers)


class Routes:
    """Where every route but `/mcp` is added: its handler runs under a request id, what
    it raises is rendered here (`OAuthError`, `Unavailable`, anything unexpected), and its
    answer is counted by route (`Metrics.http_request`, when the app has metrics).

    A wrapper per route, not an aiohttp middleware: middlewares run for every request, and
    the `/mcp` proxy, which answers for itself in JSON-RPC, would pay two layers per call.
    `outer` wraps the rendered handler (CORS headers on the API's answers, errors included).
    `pages`: the routes are a person's browser pages, so an unavailable store is a page
    (decided by the route, not by sniffing `Accept`: API clients may accept text/html).
    """

    def __init__(self, app: web.Application, *, pages: bool = False) -> None:
        self._router = app.router
        self._pages = pages
        self._metrics = app.get(METRICS)
        if REFUSALS not in app:
            app[REFUSALS] = RefusalLog()

    def get(self, path: str, handler: Handler, outer: Wrapper | None = None) -> None:
        self._router.add_get(path, self._rendered(path, handler, outer))  # HEAD too

    def post(self, path: str, handler: Handler, outer: Wrapper | None = None) -> None:
        self._router.add_post(path, self._rendered(path, handler, outer))

    def add(self, method: str, path: str, handler: Handler, outer: Wrapper | None = None) -> None:
        self._router.add_route(method, path, self._rendered(path, handler, outer))

    def _rendered(self, path: str, handler: Handler, outer: Wrapper | None) -> Handler:
        rendered = rendering_errors(handler, pages=self._pages, route=path, metrics=self._metrics)
        final = outer(rendered) if outer is not None else rendered
        RENDERED.add(final)
        return final


RENDERED: weakref.WeakSet[Handler] = weakref.WeakSet()  # what `Routes` added (for a test)


def rendering_errors(
    handler: Handler, *, pages: bool = False, route: str = "", metrics: Metrics | None = None
) -> Handler:
    """`handler` with its errors rendered; with `metrics`, its answers counted under
    `route` (the path as registered)."""

    @functools.wraps(handler)
    async def rendered(request: web.Request) -> web.StreamResponse:
        if metrics is None:
            return await _render_errors(request, handler, pages)
        try:
            response = await _render_errors(request, handler, pages)
        except web.HTTPException as exc:  # aiohttp's answers: 404, 405, redirects
            metrics.http_request(route, exc.status)
            raise
        metrics.http_request(route, response.status)
        return response

    return rendered


async def _render_errors(request: web.Request, handler: Handler, pages: bool) -> web.StreamResponse:
    request_id = request.headers.get("X-Request-Id", "")[:64] or secrets.token_hex(8)
    request[ACCESS_REQUEST_ID] = request_id
    token = request_id_var.set(request_id)
    try:
        response = await handler(request)
    except web.HTTPException:
        raise
    except OAuthError as exc:
        log.info(
            "request refused",
            extra={
                "event": "oauth.error",
                "error": exc.error,
                "description": exc.description,
                "reason": exc.reason,
                "path": request.path,
            },
        )
        metrics = request.app.get(METRICS)
        if metrics is not None:
            metrics.refusal(_endpoint(request), exc.error, exc.reason)
        response = oauth_error(request, exc)
    except Unavailable as exc:
        request.app[REFUSALS].refused(exc, request.path)
        response = unavailable(exc, page=pages, brand=page_brand(request))
    except Exception:
        log.exception("unhandled error", extra={"event": "http.error", "path": request.path})
        response = json_error(500, "server_error", f"internal error (request id {request_id})")
    finally:
        request_id_var.reset(token)
    response.headers.setdefault("X-Request-Id", request_id)
    return response
