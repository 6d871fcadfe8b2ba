"""`McpProxy`: every `/mcp` request passes the gate, is bound to its MCP session, carries
its caller's identity upstream, and is relayed without buffering, in both directions."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Callable

from aiohttp import web

from oauthd.clock import Clock
from oauthd.config import Config
from oauthd.crypto import Sealer
from oauthd.log import request_id_var
from oauthd.metrics import Metrics
from oauthd.model import Grant
from oauthd.proxy.answers import (
    ProxyRefusal,
    body_too_large,
    header_mismatch,
    internal_error,
    not_json,
    session_not_found,
    store_unavailable,
)
from oauthd.proxy.authority import Authority
from oauthd.proxy.forward_auth import ForwardAuth
from oauthd.proxy.gate import Gate
from oauthd.proxy.identity import Identity
from oauthd.proxy.messages import (
    PROTOCOL_VERSION_HEADER,
    Mismatch,
    NotJson,
    check_headers,
    parse,
    request_id,
    validates_headers,
)
from oauthd.proxy.relay import Relay
from oauthd.proxy.request_keys import ACCESS_CLIENT, ACCESS_REQUEST_ID, ACCESS_RESOURCE, ACCESS_USER
from oauthd.proxy.sessions import SESSION_HEADER, SessionBindings
from oauthd.proxy.streams import OpenStreams
from oauthd.store import Store, Unavailable

log = logging.getLogger("oauthd.proxy")


def _log_unavailable(exc: Unavailable, path: str) -> None:
    log.warning(
        "request refused: store unavailable",
        extra={"event": "http.unavailable", "reason": exc.reason, "path": path},
    )


class McpProxy:
    def __init__(
        self,
        config: Config,
        auth: Authority,
        store: Store,
        clock: Clock,
        sealer: Sealer,
        metrics: Metrics | None = None,
        on_unavailable: Callable[[Unavailable, str], None] | None = None,
        *,
        authorization: str | None,
    ) -> None:
        """`authorization`: the static `Authorization` value for the upstream
        (`upstream.authorization`, resolved at start by `oauthd.keyring`)."""
        self._metrics = metrics or Metrics()
        self._on_unavailable = on_unavailable or _log_unavailable
        self._gate = Gate(config, config.resources[0], auth.verify_bearer)
        self.sessions = SessionBindings(store, clock, sealer, config.tokens.refresh_ttl)
        self._identity = Identity(config, auth.upstream_access_token, authorization)
        self._forward_auth = ForwardAuth(self._gate, self._identity)
        self.streams = OpenStreams(store.grants, clock)
        self._relay = Relay(
            config.upstream, self._metrics, self._gate.add_cors, self._observe, self.streams
        )
        self._watch: asyncio.Task[None] | None = None
        self._max_request_bytes = config.upstream.max_request_bytes
        self._id_prefix, self._ids = secrets.token_hex(4) + "-", itertools.count(1)
        auth.on_grant_ended(self.close_sessions_of)

    async def start(self) -> None:
        await self._relay.start()
        self._watch = asyncio.create_task(self.streams.watch(), name="proxy-stream-watch")

    async def end_streams(self) -> None:
        """At shutdown: end the long-lived GET streams now (clients reconnect, with
        Last-Event-ID, to the next instance), so that the drain waits only for requests
        that finish by themselves (tool calls and their SSE answers)."""
        self.streams.end_long_lived()

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self._relay.close()

    # -- the request path ------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        # The request id of this request's log lines: the client's, else a counter (cheaper
        # than random bytes per request, and unique within the process).
        request_id = request.headers.get("X-Request-Id", "")[:64] or (
            f"{self._id_prefix}{next(self._ids):x}"
        )
        token = request_id_var.set(request_id)
        request[ACCESS_REQUEST_ID] = request_id
        try:
            self._gate.check_origin(request)
            if request.method == "OPTIONS":
                response = self._gate.preflight(request)
                self._observe(request, response.status, started)
                return response
            grant = await self._gate.authenticate(request)
            request[ACCESS_USER], request[ACCESS_CLIENT] = grant.user, grant.client_id
            request[ACCESS_RESOURCE] = grant.resource
            session_id = request.headers.get(SESSION_HEADER)
            if session_id is not None and not await self.sessions.belongs_to(session_id, grant):
                raise session_not_found()
            body = None
            if request.method == "POST" and validates_headers(
                request.headers.get(PROTOCOL_VERSION_HEADER)
            ):
                body = await self._checked_body(request)
            return await self._forward(request, grant, session_id, started, body)
        except ProxyRefusal as refusal:
            return self._refused(request, refusal, started)
        except Unavailable as exc:
            self._on_unavailable(exc, request.path)
            return self._refused(request, store_unavailable(exc), started)
        except Exception:  # a bug; anything after the headers went out is the relay's
            log.exception("unhandled error", extra={"event": "http.error", "path": "/mcp"})
            return self._refused(request, internal_error(request_id), started)
        finally:
            request_id_var.reset(token)

    async def _checked_body(self, request: web.Request) -> bytes:
        """The body of a POST whose headers must mirror it (2026-07-28 on), read and
        checked (400 -32020 on a mismatch)."""
        if (request.content_length or 0) > self._max_request_bytes:
            raise body_too_large()
        body = await self._relay.read_body(request)
        try:
            message = parse(body)
        except NotJson:
            raise not_json() from None
        try:
            check_headers(request.headers, message)
        except Mismatch as exc:
            log.info(
                "request refused: headers disagree with the body",
                extra={"event": "proxy.header_mismatch", "reason": str(exc)},
            )
            raise header_mismatch(str(exc), request_id(message)) from None
        return body

    async def _forward(
        self,
        request: web.Request,
        grant: Grant,
        session_id: str | None,
        started: float,
        body: bytes | None = None,
    ) -> web.StreamResponse:
        """The request upstream with its caller's identity, the answer back to the client;
        the sessions follow what the answer did to `session_id`. `body`: the body, if it
        was read already."""
        length = request.content_length
        if (length or 0) > self._max_request_bytes:
            raise body_too_large()
        headers = self._identity.request_headers(request, grant)
        if self._identity.forwards_idp_token:
            await self._identity.add_idp_token(headers, grant)
        watch = self._relay.watch()
        call = request.method != "GET"  # a GET stream takes no call slot
        try:
            if call:
                await self._relay.take_slot()
            try:
                upstream = await self._relay.send(request, length, headers, watch, body)
                async with upstream:
                    new_id = upstream.headers.get(SESSION_HEADER)
                    if (new_id and new_id != session_id) or request.method == "DELETE":
                        await self.sessions.track(
                            request.method, upstream.status, grant, session_id, new_id
                        )
                    # Streams end with their grant; a JSON answer ends by itself.
                    stream = not call or upstream.content_type == "text/event-stream"
                    if stream:
                        self.streams.opened(grant.id, upstream, not call)
                    try:
                        return await self._relay.stream_back(request, upstream, started, watch)
                    finally:
                        if stream:
                            self.streams.closed(grant.id, upstream)
            finally:
                if call:
                    self._relay.free_slot()
        finally:
            self._relay.release(watch)

    async def forward_auth(self, request: web.Request) -> web.StreamResponse:
        """Another proxy's question about a request to the MCP server it fronts
        (`proxy/forward_auth.py`): 200 with the identity headers, or `/mcp`'s refusal."""
        try:
            return await self._forward_auth.check(request)
        except ProxyRefusal as refusal:
            return refusal.response
        except Unavailable as exc:
            self._on_unavailable(exc, request.path)
            return store_unavailable(exc).response

    def _refused(
        self, request: web.Request, refusal: ProxyRefusal, started: float
    ) -> web.StreamResponse:
        self._gate.add_cors(request, refusal.response)
        self._observe(request, refusal.response.status, started)
        return refusal.response

    def _observe(self, request: web.Request, status: int, started: float) -> None:
        """The latency metric: until the response headers go out (not a stream's life)."""
        self._metrics.proxy_request(request.method, status, time.perf_counter() - started)

    # -- revocation -------------------------------------------------------------------------

    async def close_sessions_of(self, grant: Grant) -> None:
        """A grant ended: end its streams, close its MCP sessions upstream (DELETE) and
        forget them."""
        self.streams.end_grant(grant.id)
        for session_id in await self.sessions.release_all(grant):
            await self._relay.delete(self._identity.session_close_headers(grant, session_id))
