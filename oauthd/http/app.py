"""`create_app`: the aiohttp application, with the store as a cleanup context."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from oauthd.clock import Clock, SystemClock
from oauthd.config import Config, ConfigError, read_secret
from oauthd.crypto import Sealer, parse_key
from oauthd.http import browser, cimd, health, oauth_api
from oauthd.http.errors import error_middleware
from oauthd.http.housekeeping import housekeeping_context
from oauthd.http.keys import AUTH, CLOCK, CONFIG, STORE
from oauthd.http.oauth_api import cors_middleware
from oauthd.http.upstream_idp import identity_provider
from oauthd.oauth import AuthServer
from oauthd.oauth.clients import ClientDocumentError, FetchedDocument
from oauthd.store import open_store
from oauthd.users import Users

log = logging.getLogger("oauthd.http")


def _store_context(
    accept_empty: bool, recover: bool
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def store_context(app: web.Application) -> AsyncIterator[None]:
        config = app[CONFIG]
        sealer = _sealer(config)  # before the state: a bad key must not hold the lock
        users = Users(config.login.users)
        store = await open_store(
            config.storage, app[CLOCK], accept_empty=accept_empty, recover=recover
        )
        app[STORE] = store
        log.info("state loaded", extra={"event": "state.loaded", "backend": store.status().backend})
        fetcher = cimd.CimdFetcher(clock=app[CLOCK].now)
        provider = identity_provider(config.login)
        app[AUTH] = AuthServer(
            config, store, app[CLOCK], users, DocumentFetcherAdapter(fetcher), provider, sealer
        )
        try:
            yield
        finally:
            await fetcher.close()
            if provider is not None:
                await provider.close()
            await store.close()
            log.info("state saved and closed", extra={"event": "state.closed"})

    return store_context


def _sealer(config: Config) -> Sealer | None:
    """The AES-256-GCM key for upstream tokens; required (and checked) for upstream login."""
    ref = config.login.encryption_key
    if not ref:
        return None
    text = read_secret(ref)
    if text is None:
        raise ConfigError(f"{config.source}: login.encryption_key: cannot read {ref!r}")
    try:
        return Sealer(parse_key(text))
    except ValueError as exc:
        raise ConfigError(f"{config.source}: login.encryption_key: {exc}") from None


class DocumentFetcherAdapter:
    """The protocol's view of the SSRF-guarded fetcher."""

    def __init__(self, fetcher: cimd.CimdFetcher) -> None:
        self._fetcher = fetcher

    async def fetch(self, client_id: str) -> FetchedDocument:
        try:
            fetched = await self._fetcher.fetch(client_id)
        except cimd.CimdError as exc:
            raise ClientDocumentError(str(exc)) from None
        return FetchedDocument(fetched.metadata, fetched.expires_at)


def create_app(
    config: Config,
    *,
    clock: Clock | None = None,
    accept_empty: bool = False,
    recover: bool = False,
) -> web.Application:
    app = web.Application(middlewares=[cors_middleware, error_middleware], client_max_size=1 << 20)
    app[CONFIG] = config
    app[CLOCK] = clock or SystemClock()
    app.cleanup_ctx.append(_store_context(accept_empty, recover))
    app.cleanup_ctx.append(housekeeping_context)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    oauth_api.add_routes(app)
    browser.add_routes(app)
    return app
