"""`web_app`: the aiohttp application and its routes. The services the routes use (the
keys in `oauthd.http.keys`) are built and set by the composition root, `oauthd.assembly`."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from oauthd.clock import Clock
from oauthd.config import Config
from oauthd.http import account, browser, forward_auth, health, notfound, oauth_api, upgrade
from oauthd.http import metrics as metrics_route
from oauthd.http.errors import REFUSALS, Routes
from oauthd.http.keys import CLOCK, CONFIG, METRICS, PROXY, TRACING
from oauthd.http.tracing import tracing_middleware
from oauthd.metrics import Metrics
from oauthd.store import Unavailable
from oauthd.tracing import Tracing


async def _end_streams(app: web.Application) -> None:
    proxy = app.get(PROXY)
    if proxy is not None:
        await proxy.end_streams()


async def _no_server_header(request: web.Request, response: web.StreamResponse) -> None:
    """aiohttp names itself and its version (`Server: Python/3.11 aiohttp/...`) on every
    answer; oauthd does not tell strangers what it runs on."""
    response.headers.popall("Server", None)


async def _proxy_handler(request: web.Request) -> web.StreamResponse:
    return await request.app[PROXY].handle(request)


def web_app(
    config: Config, clock: Clock, metrics: Metrics, tracing: Tracing | None = None
) -> web.Application:
    """The app with every route mounted. At shutdown, after it stops accepting, the
    proxy's streams end (`on_shutdown`) so that the drain does not wait for them. With
    `tracing`, every request has a server span (the one middleware: see `Routes`)."""
    traced = [] if tracing is None else [tracing_middleware(tracing, config.server.issuer)]
    app = web.Application(client_max_size=1 << 20, middlewares=traced)
    if tracing is not None:
        app[TRACING] = tracing
    app[CONFIG] = config
    app[CLOCK] = clock
    app[METRICS] = metrics
    app.on_shutdown.append(_end_streams)
    app.on_response_prepare.append(_no_server_header)
    for resource in config.resources:  # each MCP server at its path (proxy/mounts.py)
        app.router.add_route("*", resource.path, _proxy_handler)  # renders its own answers
    forward_auth.add_routes(app)
    routes = Routes(app)
    routes.get("/healthz", health.healthz)
    routes.get("/readyz", health.readyz)
    metrics_route.add_routes(app)
    oauth_api.add_routes(app)
    browser.add_routes(app)
    account.add_routes(app)
    upgrade.add_routes(app)
    notfound.add_route(app)  # last: whatever no route above has
    return app


def refusal_log(app: web.Application) -> Callable[[Unavailable, str], None]:
    """Where a room outside the routes (the proxy) reports a request refused because the
    store is unavailable, so that it is logged like the routes' own refusals."""
    return app[REFUSALS].refused
