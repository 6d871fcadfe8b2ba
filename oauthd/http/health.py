"""/healthz (the process answers) and /readyz (state loaded, persistence healthy)."""

from __future__ import annotations

from aiohttp import web

from oauthd.http.keys import STORE

NO_STORE = {"Cache-Control": "no-store"}


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"}, headers=NO_STORE)


async def readyz(request: web.Request) -> web.Response:
    store = request.app.get(STORE)
    if store is None:
        return web.json_response({"status": "loading"}, status=503, headers=NO_STORE)
    status = store.status()
    body = {"status": "ready" if status.healthy else "degraded", "backend": status.backend}
    if status.detail:
        body["detail"] = status.detail
    return web.json_response(body, status=200 if status.healthy else 503, headers=NO_STORE)
