"""The access log: one JSON line per request answered (`[log] access`), logger
`oauthd.access`, event `http.access`, at level info.

A line has the method, the path (never the query, which may carry codes and state), the
status, the time to answer in milliseconds, the request id, the client address (through
`server.trusted_proxies`) and, when a route learnt them, the user, client and resource
(`ACCESS_CALLER` on the request). `[log] access_mcp =
false` leaves the MCP resources' requests out (they can be most of the traffic). The
time is aiohttp's: until the response is sent, for a stream until it ended. Lines are
written past the logging machinery (`log.write_line`): a line per request must be cheap.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from oauthd.config import Config
from oauthd.log import timestamp, write_line
from oauthd.peers import client_address
from oauthd.proxy import ACCESS_CALLER, ACCESS_REQUEST_ID

LOGGER = "oauthd.access"


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access logger interface; built by aiohttp with the logger it is given.
    `access_log_arguments` makes the configured subclass."""

    trusted_proxies: tuple[str, ...] = ()
    skipped: frozenset[str] = frozenset()  # paths not logged

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        # As sent, without the query: decoding it (`request.path`) cost more than the line
        path = request.raw_path.partition("?")[0]
        if path in self.skipped:
            return
        get = request.get
        doc: dict[str, object] = {
            "ts": timestamp(),
            "level": "info",
            "logger": LOGGER,
            "msg": "request",
            "event": "http.access",
            "method": request.method,
            "path": path,
            "status": response.status,
            "duration_ms": int(time * 100_000) / 100,
            "request_id": get(ACCESS_REQUEST_ID) or response.headers.get("X-Request-Id"),
            "client_address": client_address(request.remote, request.headers, self.trusted_proxies),
        }
        if (caller := get(ACCESS_CALLER)) is not None:
            doc["user"], doc["client_id"], doc["resource"] = caller
        write_line(doc)


def access_log_arguments(config: Config) -> dict[str, Any]:
    """The daemon runner's access-log arguments: this JSON line, or none (`[log] access`)."""
    if not config.log.access:
        return {"access_log": None}
    skipped = frozenset() if config.log.access_mcp else frozenset(r.path for r in config.resources)
    attributes = {"trusted_proxies": config.server.trusted_proxies, "skipped": skipped}
    logger_class = type("ConfiguredAccessLogger", (AccessLogger,), attributes)
    return {"access_log": logging.getLogger(LOGGER), "access_log_class": logger_class}
