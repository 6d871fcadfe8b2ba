"""Typed application state. The services are set by the composition root
(`oauthd.assembly`) while the app starts; the routes only read them."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from oauthd.clock import Clock
from oauthd.config import Config
from oauthd.metrics import Metrics
from oauthd.oauth import AuthServer
from oauthd.proxy import McpProxy


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
