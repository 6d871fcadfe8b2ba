"""`create_app`: the aiohttp application, with the store as a cleanup context."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from oauthd.clock import Clock, SystemClock
from oauthd.config import Config
from oauthd.http import health
from oauthd.http.errors import error_middleware
from oauthd.http.housekeeping import housekeeping_context
from oauthd.http.keys import CLOCK, CONFIG, STORE
from oauthd.store import open_store

log = logging.getLogger("oauthd.http")


def _store_context(
    accept_empty: bool, recover: bool
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def store_context(app: web.Application) -> AsyncIterator[None]:
        store = await open_store(
            app[CONFIG].storage, app[CLOCK], accept_empty=accept_empty, recover=recover
        )
        app[STORE] = store
        log.info("state loaded", extra={"event": "state.loaded", "backend": store.status().backend})
        try:
            yield
        finally:
            await store.close()
            log.info("state saved and closed", extra={"event": "state.closed"})

    return store_context


def create_app(
    config: Config,
    *,
    clock: Clock | None = None,
    accept_empty: bool = False,
    recover: bool = False,
) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=1 << 20)
    app[CONFIG] = config
    app[CLOCK] = clock or SystemClock()
    app.cleanup_ctx.append(_store_context(accept_empty, recover))
    app.cleanup_ctx.append(housekeeping_context)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    return app
