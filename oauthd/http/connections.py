"""Client connections: deadlines and limits aiohttp's server does not have by itself.

`GuardedRunner` is the daemon's `AppRunner`; its connections are `GuardedHandler`s:
- a request head must arrive whole within `server.header_timeout` of its first byte
  (else 408 and the connection closes);
- a request body must arrive whole within `server.body_timeout` of its head (else the
  connection closes, and the handler still reading it is cancelled);
- a connection with no request in progress closes after `server.idle_timeout` (aiohttp's
  keep-alive timeout, which also runs from the moment a connection opens);
- one peer address holds at most `server.max_connections_per_address` connections (0: no
  cap); one more is answered 503 and closed at once. A peer in `server.trusted_proxies`
  is exempt: its connections carry many clients, whose own cap is the proxy's job;
- a malformed request is logged as one `http.bad_request` line at info level, without the
  bytes the client sent (aiohttp logs an error with up to 100 of them);
- at shutdown, a request still unanswered when `server.shutdown_timeout` ends the drain is
  answered 503 with `Connection: close` (aiohttp would close it without a word), and its
  handler cancelled at once.

`AcceptFailures` is the event loop's exception handler: when `accept()` fails for lack of
descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), asyncio reports it once per
queued connection, thousands of times a second; this logs one line per interval with how
many there were.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from oauthd.config import ServerConfig
from oauthd.peers import in_networks

log = logging.getLogger("oauthd.http")

REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
TOO_MANY = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n"
    b"Content-Length: 0\r\n\r\n"
)
DRAIN_CUT = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n"
    b"Content-Length: 0\r\n\r\n"
)
CANCEL_GRACE = 0.5  # how long a cancelled handler may take to unwind after a cut drain
LOG_INTERVAL = 10.0  # seconds between two lines about the same kind of refusal


class Throttled:
    """A log line at most once per `interval`; how many were not written in between."""

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self._interval = interval
        self._next = 0.0
        self.suppressed = 0

    def due(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            self.suppressed += 1
            return False
        self._next = now + self._interval
        return True

    def take_suppressed(self) -> int:
        count, self.suppressed = self.suppressed, 0
        return count


@dataclass
class Limits:
    """What the handlers of one server share: the deadlines and the count per address."""

    header_timeout: float
    body_timeout: float
    per_address: int
    trusted_proxies: tuple[str, ...] = ()
    open: dict[str, int] = field(default_factory=dict)
    refused_log: Throttled = field(default_factory=Throttled)

    @classmethod
    def of(cls, server: ServerConfig) -> Limits:
        return cls(
            server.header_timeout,
            server.body_timeout,
            server.max_connections_per_address,
            server.trusted_proxies,
        )

    def capped(self, address: str) -> bool:
        return bool(self.per_address) and not in_networks(address, self.trusted_proxies)

    def admit(self, address: str) -> bool:
        count = self.open.get(address, 0)
        if self.per_address and count >= self.per_address:
            if self.refused_log.due():
                log.warning(
                    "connection refused: too many from one address",
                    extra={
                        "event": "http.too_many_connections",
                        "peer": address,
                        "limit": self.per_address,
                        "suppressed": self.refused_log.take_suppressed(),
                    },
                )
            return False
        self.open[address] = count + 1
        return True

    def left(self, address: str) -> None:
        count = self.open.get(address, 0) - 1
        if count > 0:
            self.open[address] = count
        else:
            self.open.pop(address, None)


class _NamelessResponse(web.Response):
    """aiohttp's own error answer without the `Server` header it adds (the app's answers
    lose it in `http/app.py`'s prepare hook, which these never meet)."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self.headers.popall("Server", None)


class GuardedHandler(RequestHandler):
    """aiohttp's connection protocol with the deadlines and the cap of `Limits`."""

    def __init__(self, manager: Server, limits: Limits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._peer: str | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._malformed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if not self._limits.capped(address):
            return
        if not self._limits.admit(address):
            if self.transport is not None:
                self.transport.write(TOO_MANY)
            self.force_close()
            return
        self._peer = address

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._peer is not None:
            self._limits.left(self._peer)
            self._peer = None
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Timers only for what did not arrive whole: a head in one packet (the usual
        case) or a body complete with its head arms none."""
        count = self._request_count
        super().data_received(data)
        arrived = self._request_count - count
        if arrived:
            self._stop_head_timer()
            messages = self._messages  # a deque: index from the end, no copy
            for index in range(max(0, len(messages) - arrived), len(messages)):
                payload = messages[index][1]
                if not payload.is_eof():
                    timer = self._loop.call_later(
                        self._limits.body_timeout, self._body_too_slow, payload
                    )
                    payload.on_eof(timer.cancel)
        elif (
            self._head_timer is None
            and not self._request_in_progress
            and not self._messages
            and self._payload_parser is None
            and self.transport is not None
        ):  # part of a head: it must be whole by the deadline
            self._head_timer = self._loop.call_later(
                self._limits.header_timeout, self._head_too_slow
            )

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._request_in_progress or self._messages or self.transport is None:
            return
        log.info("request head too slow: connection closed", extra={"event": "http.slow_head"})
        self.transport.write(REQUEST_TIMEOUT)
        self.force_close()

    def _body_too_slow(self, payload: Any) -> None:
        if payload.is_eof() or self.transport is None:
            return
        log.info("request body too slow: connection closed", extra={"event": "http.slow_body"})
        self.force_close()

    async def shutdown(self, timeout: float | None = 15.0) -> None:  # noqa: ASYNC109 (aiohttp's signature)
        """The drain: wait up to `timeout` for the request in progress; if it is still
        unanswered then, answer 503 and close (a stream already started is just closed)."""
        self.close()  # no further request on this connection
        if self._request_in_progress and timeout:
            waiter = self._handler_waiter = self._loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(waiter), timeout)
            except TimeoutError:
                self._handler_waiter = None
                self._cut_drain()
        await super().shutdown(CANCEL_GRACE)

    def _cut_drain(self) -> None:
        request = self._current_request
        if self.transport is not None and request is not None:
            answered = request.writer.output_size > 0
            if not answered:
                self.transport.write(DRAIN_CUT)
            log.warning(
                "shutdown: request cut off by server.shutdown_timeout",
                extra={"event": "http.drain_cut", "path": request.path, "answered": answered},
            )
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, HttpProcessingError):
            # The exception's text quotes what the client sent: neither logged nor echoed.
            log.info(
                "malformed request",
                extra={"event": "http.bad_request", "status": status, "error": type(exc).__name__},
            )
            self._malformed = True
            exc, message = None, f"{status}: Bad Request"
        response = super().handle_error(request, status, exc, message)
        if type(response) is web.Response:
            response.__class__ = _NamelessResponse  # no app, so no on_response_prepare hook
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        if self._malformed:  # handle_error's own line for a request logged above
            self._malformed = False
            return
        super().log_exception(*args, **kw)


class GuardedServer(Server):
    def __init__(
        self, limits: Limits, handler: Callable[[BaseRequest], Awaitable[Any]], **kwargs: Any
    ) -> None:
        super().__init__(handler, **kwargs)
        self._limits = limits

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, self._limits, loop=self._loop, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """An `AppRunner` whose connections are `GuardedHandler`s; `idle_timeout` is aiohttp's
    keep-alive timeout."""

    def __init__(self, app: web.Application, server: ServerConfig, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=server.idle_timeout, **kwargs)
        self._limits = Limits.of(server)

    async def _make_server(self) -> Server:
        made = await super()._make_server()  # the app's start-up runs here
        return GuardedServer(
            self._limits,
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **made._kwargs,  # what aiohttp's own server would give its handlers
        )


ACCEPT_FAILURE = "socket.accept() out of system resource"


class AcceptFailures:
    """The loop's exception handler: accept failures logged once per interval, anything
    else passed on to asyncio's default handler."""

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self._throttled = Throttled(interval)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != ACCEPT_FAILURE:
            loop.default_exception_handler(context)
            return
        if not self._throttled.due():
            return
        exc = context.get("exception")
        log.error(
            "cannot accept connections: out of file descriptors or memory",
            extra={
                "event": "http.accept_failed",
                "error": getattr(exc, "strerror", None) or type(exc).__name__,
                "suppressed": self._throttled.take_suppressed(),
            },
        )
