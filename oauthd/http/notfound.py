"""The answer for a path that no route has: a styled page for a person, and for API clients
(JSON wanted, or a path under the API's own prefixes) the bare 404 they always had.

A catch-all route added last, not a middleware (see `Routes`): the routes that match pay
nothing. aiohttp walks a path's prefixes down to "/", so the catch-all also catches a known
path asked with a method it lacks; that answer stays a 405 naming the allowed methods."""

from __future__ import annotations

from aiohttp import web

from oauthd.http import pages
from oauthd.http.errors import Routes
from oauthd.http.keys import page_brand

CATCH_ALL = "/{tail:.*}"
API_PREFIXES = (
    "/.well-known/",
    "/mcp",
    "/register",
    "/token",
    "/revoke",
    "/introspect",
    "/device_authorization",
    "/healthz",
    "/readyz",
    "/metrics",
)


def wants_json(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    if "application/json" in accept and "text/html" not in accept:
        return True
    return request.path.startswith(API_PREFIXES)


async def _allowed_elsewhere(request: web.Request) -> set[str]:
    allowed: set[str] = set()
    catch_all = request.match_info.route.resource
    for resource in request.app.router.resources():
        if resource is not catch_all:
            _, methods = await resource.resolve(request)
            allowed |= methods
    return allowed


async def not_found(request: web.Request) -> web.StreamResponse:
    allowed = await _allowed_elsewhere(request)
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    if wants_json(request):
        raise web.HTTPNotFound()
    view = pages.ErrorView(
        "Page not found",
        "There is no page at this address.",
        404,
        hint="Check the address, or go back to the app you came from.",
    )
    return web.Response(
        text=pages.render_error(view, page_brand(request)),
        status=404,
        content_type="text/html",
        headers=pages.PAGE_HEADERS,
    )


def add_route(app: web.Application) -> None:
    """Last of all the routes."""
    Routes(app, pages=True).add("*", CATCH_ALL, not_found)
