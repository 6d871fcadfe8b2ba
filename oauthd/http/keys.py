"""Typed application state."""

from __future__ import annotations

from aiohttp import web

from oauthd.clock import Clock
from oauthd.config import Config
from oauthd.metrics import Metrics
from oauthd.oauth import AuthServer
from oauthd.proxy import McpProxy
from oauthd.store import Store

CONFIG = web.AppKey("config", Config)
CLOCK = web.AppKey("clock", Clock)
STORE = web.AppKey("store", Store)
AUTH = web.AppKey("auth", AuthServer)
PROXY = web.AppKey("proxy", McpProxy)
METRICS = web.AppKey("metrics", Metrics)
