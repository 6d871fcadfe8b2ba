"""The composition root: the daemon's services, each one entry of an `AsyncExitStack`,
built in order and unwound in reverse.

Start: key material (before the state: a bad key must not hold the state lock), the
state, the identity provider's client, the metadata-document fetcher, the key fetcher
(the JWKS of trusted issuers and clients), the session sealer (its fallback key lives in
the state dir), the signing key ring (loaded, its first key made on an empty ring, re-read
in the background), `AuthServer`, the MCP proxy, housekeeping, the admin socket. Stop,
after the app stopped accepting, ended the proxy's streams (`oauthd.http.web_app`) and
drained in-flight requests: the admin socket, housekeeping, the grant-ended work still
running (`AuthServer.drain`), the proxy, the key ring's background task, the key fetcher,
the metadata-document fetcher, the provider's client, then the state (the file backend's
final snapshot) last. A failure
half-way through start closes what was opened, in the same reverse order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

from aiohttp import web

from oauthd.admin import server as admin_server
from oauthd.audit import default_chain_name
from oauthd.clock import Clock, SystemClock
from oauthd.config import AuditConfig, Config
from oauthd.housekeeping import housekeeping
from oauthd.http import refusal_log, web_app
from oauthd.http.keys import AUTH, PROXY, STATE
from oauthd.keyring import device_code_key, known_browser_key, read_keyring, session_sealer
from oauthd.loop_lag import watching
from oauthd.metrics import Metrics
from oauthd.oauth import AuthServer, key_ring
from oauthd.outbound.cimd import CimdFetcher
from oauthd.outbound.idp import identity_provider
from oauthd.outbound.jwks import JwksFetcher
from oauthd.proxy import McpProxy
from oauthd.store import Store, Unavailable, open_store
from oauthd.store.traced import trace_tables
from oauthd.tracing import Tracing, start_tracing
from oauthd.users import Users

log = logging.getLogger("oauthd.assembly")

STORE = web.AppKey("store", Store)  # for the daemon's status line and for tests


@dataclass(slots=True, frozen=True)
class Services:
    store: Store
    auth: AuthServer
    proxy: McpProxy


@dataclass(slots=True, frozen=True)
class Start:
    """How the state is opened (the `serve` command's flags)."""

    accept_empty: bool = False
    recover: bool = False


def instance_audit(config: Config) -> AuditConfig:
    """`[audit]` with this instance's chain named: `chain`, else host name and port."""
    if config.audit.chain:
        return config.audit
    return replace(config.audit, chain=default_chain_name(config.server.listen.port))


@contextlib.asynccontextmanager
async def _state(
    config: Config, clock: Clock, metrics: Metrics, start: Start, tracing: Tracing | None
) -> AsyncIterator[Store]:
    store = await open_store(
        config.storage,
        clock,
        accept_empty=start.accept_empty,
        recover=start.recover,
        observer=metrics,
        audit=instance_audit(config),
    )
    if tracing is not None:
        trace_tables(store, tracing, config.storage.backend)
    await metrics.watch_records(store)
    metrics.watch_cache(getattr(store, "read_cache", None))  # redis, postgres
    log.info("state loaded", extra={"event": "state.loaded", "backend": store.status().backend})
    try:
        yield store
    finally:
        await metrics.watch_records(None)  # no census left running on a closed store
        await store.close()
        metrics.watch_cache(None)
        log.info("state saved and closed", extra={"event": "state.closed"})


@contextlib.asynccontextmanager
async def services(
    config: Config,
    clock: Clock,
    metrics: Metrics,
    start: Start,
    on_unavailable: Callable[[Unavailable, str], None],
    tracing: Tracing | None = None,
) -> AsyncIterator[Services]:
    """The daemon's services while the block runs; `on_unavailable`: where the proxy
    reports a request refused for a store outage; `tracing`: the spans' tracer, if on
    (flushed and shut down last)."""
    keyring = read_keyring(config)
    async with contextlib.AsyncExitStack() as stack:
        if tracing is not None:
            stack.push_async_callback(asyncio.to_thread, tracing.shutdown)
        store = await stack.enter_async_context(_state(config, clock, metrics, start, tracing))
        provider = identity_provider(config.login, keyring)
        if provider is not None:
            stack.push_async_callback(provider.close)
        fetcher = CimdFetcher(clock=clock.now)
        stack.push_async_callback(fetcher.close)
        # one key fetcher for every JWKS: the trusted issuers' hosts; a client's jwks_uri
        # host is permitted when that client authenticates
        jwks = JwksFetcher(_key_hosts(config), clock=clock.now)
        stack.push_async_callback(jwks.close)
        sealer = session_sealer(config, keyring)  # after the state: it may live in its dir
        keys = await stack.enter_async_context(key_ring(config, store, sealer, clock).running())
        auth = AuthServer(
            config,
            store,
            clock,
            Users(config.login.users),
            fetcher,
            provider,
            keyring=keyring,
            metrics=metrics,
            device_key=device_code_key(config, keyring),
            browser_key=known_browser_key(config, keyring),
            keys=keys,
            jwks=jwks,
        )
        proxy = McpProxy(
            config,
            auth,
            store,
            clock,
            sealer,
            metrics,
            on_unavailable=on_unavailable,
            authorization=keyring.upstream_authorization,
            tracing=tracing,
        )
        await proxy.start()
        stack.push_async_callback(proxy.close)
        stack.push_async_callback(auth.drain)  # before the proxy closes: its DELETEs finish
        await stack.enter_async_context(housekeeping(store, auth.remove_idle_clients))
        await stack.enter_async_context(watching(metrics.loop_lag))
        await stack.enter_async_context(admin_server.serving(config, store, auth, keys))
        yield Services(store, auth, proxy)


def _key_hosts(config: Config) -> list[str]:
    """The hosts the key fetcher may fetch from: the trusted issuers' key locations."""
    return [host for issuer in config.trusted_issuer for host in issuer.key_hosts]


def create_app(
    config: Config,
    *,
    clock: Clock | None = None,
    accept_empty: bool = False,
    recover: bool = False,
    tracing: Tracing | None = None,
) -> web.Application:
    """The daemon's app: the routes, and the services as one cleanup context (built when
    the app starts, before it listens; closed after it stopped and drained). `tracing`:
    the app's tracer (by default `[tracing]`'s, None while it is off)."""
    clock = clock or SystemClock()
    metrics = Metrics()
    tracing = tracing or start_tracing(config.tracing)
    app = web_app(config, clock, metrics, tracing)
    start = Start(accept_empty, recover)

    async def running(app: web.Application) -> AsyncIterator[None]:
        refusals = refusal_log(app)
        async with services(config, clock, metrics, start, refusals, tracing) as built:
            app[STORE] = built.store
            app[STATE] = built.store
            app[AUTH] = built.auth
            app[PROXY] = built.proxy
            yield

    app.cleanup_ctx.append(running)
    return app
