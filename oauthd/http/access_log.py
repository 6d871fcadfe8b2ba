"""The access log: one JSON line per request answered (`[log] access`), logger
`oauthd.access`, event `http.access`, at level info.

A line has the method, the path (never the query, which may carry codes and state), the
status, the time to answer in milliseconds, the request id, the client address (through
`server.trusted_proxies`) and, when a route learnt them, the user, client and resource
(`ACCESS_USER`, `ACCESS_CLIENT`, `ACCESS_RESOURCE` on the request). `[log] access_mcp =
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
from oauthd.log import write_line
from oauthd.peers import client_address
from oauthd.proxy import ACCESS_CLIENT, ACCESS_REQUEST_ID, ACCESS_RESOURCE, ACCESS_USER

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
        path = request.path
        if path in self.skipped:
            return
        extra: dict[str, object] = {
            "event": "http.access",
            "method": request.method,
            "path": path,
            "status": response.status,
            "duration_ms": round(time * 1000, 2),
            "request_id": request.get(ACCESS_REQUEST_ID) or response.headers.get("X-Request-Id"),
            "client_address": client_address(request.remote, request.headers, self.trusted_proxies),
        }
        for key, name in ((ACCESS_USER, "user"), (ACCESS_CLIENT, "client_id")):
            value = request.get(key)
            if value is not None:
                extra[name] = value
        if (resource := request.get(ACCESS_RESOURCE)) is not None:
            extra["resource"] = resource
        write_line(LOGGER, "request", extra)


def access_log_arguments(config: Config) -> dict[str, Any]:
    """The daemon runner's access-log arguments: this JSON line, or none (`[log] access`)."""
    if not config.log.access:
        return {"access_log": None}
    skipped = frozenset() if config.log.access_mcp else frozenset(r.path for r in config.resources)
    attributes = {"trusted_proxies": config.server.trusted_proxies, "skipped": skipped}
    logger_class = type("ConfiguredAccessLogger", (AccessLogger,), attributes)
    return {"access_log": logging.getLogger(LOGGER), "access_log_class": logger_class}
