"""The server span of every request (`[tracing]`): an aiohttp middleware, added to the app
only when tracing is on (`web_app`), so that with tracing off no request pays a layer.

The span is named `METHOD route` (the route as registered: `/token`, `/mcp`,
`/.well-known/oauth-protected-resource/mcp`, the catch-all's pattern for an unknown path),
its parent is the request's `traceparent` header, and it carries the HTTP semantic-convention
attributes (`http.request.method`, `http.route`, `url.path`, `url.scheme`, `server.address`,
`server.port`, `http.response.status_code`); the issuer names the server, never the Host
header. The query is never recorded. The span lasts until the handler returns: for a relayed
stream, until the stream ended."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from yarl import URL

from oauthd.tracing import Attributes, Tracing, finish_http


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def tracing_middleware(tracing: Tracing, issuer: str) -> Middleware:
    """The middleware of an app whose server is `issuer` (`server.issuer`)."""
    url = URL(issuer)
    server: Attributes = {
        "url.scheme": url.scheme,
        "server.address": url.host or "",
        "server.port": url.port or 0,
    }

    @web.middleware
    async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = _route(request)
        attributes: Attributes = {
            **server,
            "http.request.method": request.method,
            "http.route": route,
            "url.path": request.path,
        }
        name = f"{request.method} {route}"
        answered: web.HTTPException | None = None
        with tracing.server_span(name, request.headers, attributes) as span:
            try:
                response = await handler(request)
            except web.HTTPException as exc:  # aiohttp's own answers (404, 405, redirects)
                finish_http(span, exc.status)
                answered = exc  # raised outside the span: not an error of it
            except Exception:  # named on the span (error.type); aiohttp answers 500
                finish_http(span, 500)
                raise
            else:
                finish_http(span, response.status)
        if answered is not None:
            raise answered
        return response

    return traced
