"""/healthz (the process answers) and /readyz (state loaded, persistence healthy, backend
reachable)."""

from __future__ import annotations

from aiohttp import web

from oauthd.http.keys import STATE

NO_STORE = {"Cache-Control": "no-store"}
# Every 503 carries Retry-After; /readyz may change at the next probe, a second later.
NOT_READY = {**NO_STORE, "Retry-After": "1"}


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"}, headers=NO_STORE)


async def readyz(request: web.Request) -> web.Response:
    """200 while the store can serve; 503 with the reason while it cannot. For redis and
    postgres that is a ping of the server (within `storage.timeout`, at most one a second,
    `Store.check`), so an instance that a load balancer took out of rotation for a backend
    outage reports ready again by itself, with no request needed to find out."""
    state = request.app.get(STATE)
    if state is None:
        return web.json_response({"status": "loading"}, status=503, headers=NOT_READY)
    status = await state.check()
    body = {"status": "ready" if status.healthy else "degraded", "backend": status.backend}
    if status.detail:
        body["detail"] = status.detail
    if status.healthy:
        return web.json_response(body, headers=NO_STORE)
    return web.json_response(body, status=503, headers=NOT_READY)
