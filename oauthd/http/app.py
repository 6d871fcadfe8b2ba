"""`create_app`: the aiohttp application, with the store as a cleanup context."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from oauthd.admin import server as admin_server
from oauthd.clock import Clock, SystemClock
from oauthd.config import Config, ConfigError, read_secret
from oauthd.crypto import Sealer, parse_key
from oauthd.http import account, browser, cimd, health, oauth_api
from oauthd.http import metrics as metrics_route
from oauthd.http.errors import REFUSALS, Routes
from oauthd.http.housekeeping import housekeeping_context
from oauthd.http.keys import AUTH, CLOCK, CONFIG, METRICS, PROXY, STORE
from oauthd.http.upstream_idp import identity_provider
from oauthd.metrics import Metrics
from oauthd.oauth import AuthServer
from oauthd.oauth.clients import ClientDocumentError, FetchedDocument
from oauthd.proxy import McpProxy
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
        metrics = app[METRICS]
        store = await open_store(
            config.storage,
            app[CLOCK],
            accept_empty=accept_empty,
            recover=recover,
            observer=metrics,
        )
        app[STORE] = store
        metrics.watch_records(store)
        log.info("state loaded", extra={"event": "state.loaded", "backend": store.status().backend})
        fetcher = cimd.CimdFetcher(clock=app[CLOCK].now)
        provider = identity_provider(config.login)
        auth = AuthServer(
            config,
            store,
            app[CLOCK],
            users,
            DocumentFetcherAdapter(fetcher),
            provider,
            sealer,
            metrics=metrics,
        )
        app[AUTH] = auth
        proxy = McpProxy(
            config,
            auth,
            store,
            app[CLOCK],
            sealer or _session_sealer(config),
            metrics,
            on_unavailable=app[REFUSALS].refused,
        )
        await proxy.start()
        app[PROXY] = proxy
        try:
            yield
        finally:
            await proxy.close()
            await fetcher.close()
            if provider is not None:
                await provider.close()
            await store.close()
            metrics.watch_records(None)
            log.info("state saved and closed", extra={"event": "state.closed"})

    return store_context


def _session_sealer(config: Config) -> Sealer:
    """Without `login.encryption_key`, MCP session ids are sealed with a key kept in the
    state dir (0600), so that a revocation after a restart can still close them upstream;
    with the memory backend, a key for this process only. A shared backend needs the
    configured key (the config check refuses it without): every instance must open the ids
    the others sealed."""
    backend = config.storage.backend
    if backend == "memory":
        return Sealer(os.urandom(32))
    if backend != "file":
        raise ConfigError(
            f"{config.source}: login.encryption_key: required when storage.backend = "
            f'"{backend}" (instances on a shared backend seal MCP session ids for each other)'
        )
    path = config.storage.path / "session.key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return Sealer(bytes.fromhex(path.read_text().strip()))
    try:
        os.write(fd, os.urandom(32).hex().encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return Sealer(bytes.fromhex(path.read_text().strip()))


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


async def _admin_context(app: web.Application) -> AsyncIterator[None]:
    """The admin socket (oauthd sessions|clients ...): after the state, closed before it."""
    async with admin_server.serving(app[CONFIG], app[STORE], app[AUTH]):
        yield


async def _end_streams(app: web.Application) -> None:
    proxy = app.get(PROXY)
    if proxy is not None:
        await proxy.end_streams()


async def _proxy_handler(request: web.Request) -> web.StreamResponse:
    return await request.app[PROXY].handle(request)


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
    app = web.Application(client_max_size=1 << 20)  # no middlewares: see `Routes`
    app[CONFIG] = config
    app[CLOCK] = clock or SystemClock()
    app[METRICS] = Metrics()
    app.cleanup_ctx.append(_store_context(accept_empty, recover))
    app.cleanup_ctx.append(housekeeping_context)
    app.cleanup_ctx.append(_admin_context)
    app.on_shutdown.append(_end_streams)
    app.router.add_route("*", "/mcp", _proxy_handler)  # the proxy renders its own answers
    routes = Routes(app)
    routes.get("/healthz", health.healthz)
    routes.get("/readyz", health.readyz)
    metrics_route.add_routes(app)
    oauth_api.add_routes(app)
    browser.add_routes(app)
    account.add_routes(app)
    return app
