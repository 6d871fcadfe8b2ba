"""/metrics: the Prometheus text exposition, only for the client addresses in
`metrics.allow` (behind a trusted proxy, the client's, not the proxy's: `oauthd.peers`).
Served on the main listener, or, with `metrics.listen`, only on a listener of its own
(`metrics_app`)."""

from __future__ import annotations

from aiohttp import web

from oauthd.config import Config
from oauthd.http.errors import Routes, address_refused
from oauthd.http.keys import CONFIG, METRICS, client_address
from oauthd.metrics import CONTENT_TYPE, Metrics
from oauthd.peers import in_networks


def allowed(remote: str | None, allow: tuple[str, ...]) -> bool:
    """True if `remote` (a client address) is in one of the networks. An IPv4 client of a
    dual-stack socket (`::ffff:10.1.2.3`) counts as its IPv4 address; a peer without an IP
    address (a Unix socket) is never allowed."""
    return in_networks(remote or "", allow)


async def metrics(request: web.Request) -> web.Response:
    if not allowed(client_address(request), request.app[CONFIG].metrics.allow):
        return address_refused(request, "metrics are")
    body = await request.app[METRICS].render()
    return web.Response(
        body=body, headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"}
    )


def add_routes(app: web.Application) -> None:
    """/metrics on the main app, unless `metrics.listen` gives it a listener of its own."""
    if app[CONFIG].metrics.listen is None:
        Routes(app).get("/metrics", metrics)


def metrics_app(config: Config, registry: Metrics) -> web.Application:
    """The app of the `metrics.listen` listener: /metrics and nothing else."""
    app = web.Application(client_max_size=1 << 16)
    app[CONFIG] = config
    app[METRICS] = registry
    Routes(app).get("/metrics", metrics)
    return app
