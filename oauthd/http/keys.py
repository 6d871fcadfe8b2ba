"""Typed application state. The services are set by the composition root
(`oauthd.assembly`) while the app starts; the routes only read them."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from oauthd.clock import Clock
from oauthd.config import Config
from oauthd.http.pages import LOGO_PATH, NO_BRAND, Brand
from oauthd.metrics import Metrics
from oauthd.oauth import AuthServer
from oauthd.peers import client_address as _client_address
from oauthd.proxy import McpProxy
from oauthd.tracing import Tracing


class StateStatus(Protocol):
    @property
    def backend(self) -> str: ...
    @property
    def healthy(self) -> bool: ...
    @property
    def detail(self) -> str | None: ...


class StateCheck(Protocol):
    """What /readyz asks of the store (`Store.check`): backend and health, never raises."""

    async def check(self) -> StateStatus: ...


CONFIG = web.AppKey("config", Config)
CLOCK = web.AppKey("clock", Clock)
METRICS = web.AppKey("metrics", Metrics)
AUTH = web.AppKey("auth", AuthServer)
PROXY = web.AppKey("proxy", McpProxy)
STATE = web.AppKey("state", StateCheck)
TRACING = web.AppKey("tracing", Tracing)  # only while tracing is on


def client_address(request: web.Request) -> str:
    """The request's client address (`oauthd.peers`: the peer's, or the one a trusted
    proxy reports); every rate limit, audit line and allow-list of the routes uses it."""
    trusted = request.app[CONFIG].server.trusted_proxies
    return _client_address(request.remote, request.headers, trusted)


def page_brand(request: web.Request) -> Brand:
    """What the operator puts on the pages (config `pages.service_name` and `pages.logo`);
    none in an app without a config (rendering an error must not fail for want of one)."""
    config = request.app.get(CONFIG)
    if config is None:
        return NO_BRAND
    logo = config.pages.logo
    logo_url = None if logo is None else f"{LOGO_PATH}?v={logo.digest}"
    return Brand(config.pages.service_name, logo_url)
