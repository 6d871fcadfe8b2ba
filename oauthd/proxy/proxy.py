"""`McpProxy`: every request to a resource's path (`/mcp`, `/files/mcp`, ...) meets that
resource's mount (`proxy/mounts.py`): it passes the gate and, when the resource has rules,
its policy; it is bound to its MCP session, carries its caller's identity upstream, and is
relayed without buffering, in both directions (listings filtered by policy)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from oauthd.audit import AuditEvent
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
    jsonrpc_error,
    not_json,
    session_not_found,
    store_unavailable,
)
from oauthd.proxy.authority import Authority
from oauthd.proxy.call_audit import CallAudit, Decided, allowed_calls
from oauthd.proxy.forward_auth import ForwardAuth
from oauthd.proxy.listings import ListingFilter
from oauthd.proxy.messages import (
    PROTOCOL_VERSION_HEADER,
    Mismatch,
    NotJson,
    check_headers,
    parse,
    request_id,
    validates_headers,
)
from oauthd.proxy.mounts import Mount, Mounts
from oauthd.proxy.policing import Listed
from oauthd.proxy.request_keys import ACCESS_CALLER, ACCESS_REQUEST_ID, Caller
from oauthd.proxy.sessions import SESSION_HEADER, SessionBindings
from oauthd.proxy.streams import OpenStreams
from oauthd.store import Store, Unavailable
from oauthd.tracing import Tracing

log = logging.getLogger("oauthd.proxy")

MCP_METHODS = frozenset({"GET", "POST", "DELETE"})  # (OPTIONS is answered before)
ALLOW = "GET, POST, DELETE, OPTIONS"


def _log_unavailable(exc: Unavailable, path: str) -> None:
    log.warning(
        "request refused: store unavailable",
        extra={"event": "http.unavailable", "reason": exc.reason, "path": path},
    )


FORWARD_AUTH_ENDPOINT = "/forward-auth"  # its refusals' label: the route, not the resource


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
        authorization: Mapping[str, str | None],
        tracing: Tracing | None = None,
    ) -> None:
        """`authorization`: each resource's static `Authorization` value for its upstream,
        by path (resolved at start by `oauthd.keyring`); `tracing`: the hops' spans, if on."""
        self._metrics = metrics or Metrics()
        self._on_unavailable = on_unavailable or _log_unavailable
        self.sessions = SessionBindings(
            store, clock, sealer, config.tokens.refresh_ttl, config.server.issuer
        )
        self.streams = OpenStreams(store.grants, clock)
        self.mounts = Mounts(
            config, auth, self._metrics, self.streams, self._observe, authorization, tracing
        )
        self._forward_auth = ForwardAuth(self.mounts)
        # With one resource (the shorthand) its mount is every request's: no lookup.
        self._only = self.mounts.default if len(self.mounts) == 1 else None
        self._watch: asyncio.Task[None] | None = None
        self._id_prefix, self._ids = secrets.token_hex(4) + "-", itertools.count(1)
        self._trail = store.audit
        audited = config.audit.enabled and config.audit.calls
        self._calls = CallAudit(store.audit) if audited else None
        auth.on_grant_ended(self.close_sessions_of)

    async def start(self) -> None:
        for mount in self.mounts:
            await mount.relay.start()
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
        for mount in self.mounts:
            await mount.relay.close()

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
        # The routes are the resources' paths: the request's is one of them.
        mount = self._only or self.mounts.at(request.path) or self.mounts.default
        try:
            mount.gate.check_origin(request)
            if request.method == "OPTIONS":
                response = mount.gate.preflight(request)
                self._observe(request, response.status, started)
                return response
            grant = await mount.gate.authenticate(request)
            request[ACCESS_CALLER] = Caller(grant.user, grant.client_id, grant.resource)
            session_id = request.headers.get(SESSION_HEADER)
            if session_id is not None and not await self.sessions.belongs_to(session_id, grant):
                raise session_not_found()
            body, message, listed, call_ids = None, None, None, None
            if mount.policing is not None and request.method not in MCP_METHODS:
                # a body policy never sees: the transport uses GET, POST and DELETE only
                raise jsonrpc_error(405, -32000, "method not allowed", {"Allow": ALLOW})
            if request.method == "GET" and mount.policing is not None:
                newer = validates_headers(request.headers.get(PROTOCOL_VERSION_HEADER))
                listed = mount.policing.stream_listings(grant, newer)
            elif request.method == "POST":
                newer = validates_headers(request.headers.get(PROTOCOL_VERSION_HEADER))
                if mount.policing is not None or newer or self._calls is not None:
                    body, message, listed, call_ids = await self._read_post(
                        request, mount, grant, newer
                    )
            return await self._forward(
                request, mount, grant, session_id, started, body, listed, message, call_ids
            )
        except ProxyRefusal as refusal:
            return self._refused(request, mount, refusal, started)
        except Unavailable as exc:
            self._on_unavailable(exc, request.path)
            return self._refused(request, mount, store_unavailable(exc), started)
        except Exception:  # a bug; anything after the headers went out is the relay's
            log.exception("unhandled error", extra={"event": "http.error", "path": request.path})
            return self._refused(request, mount, internal_error(request_id), started)
        finally:
            request_id_var.reset(token)

    def _message(self, request: web.Request, body: bytes, mirrored: bool) -> Any:
        """A POST's JSON-RPC message; `mirrored`: a 2026-07-28 request, whose
        `Mcp-Method`/`Mcp-Name` headers must agree with the body (400 -32020 on a
        mismatch)."""
        try:
            message = parse(body)
        except NotJson:
            raise not_json() from None
        if not mirrored:
            return message
        try:
            check_headers(request.headers, message)
        except Mismatch as exc:
            log.info(
                "request refused: headers disagree with the body",
                extra={"event": "proxy.header_mismatch", "reason": str(exc)},
            )
            raise header_mismatch(str(exc), request_id(message)) from None
        return message

    async def _read_post(
        self, request: web.Request, mount: Mount, grant: Grant, newer: bool
    ) -> tuple[bytes, Any, Listed | None, list[str] | None]:
        """A POST's body read whole and its message, each of its messages decided by the
        resource's rules if it has any (`proxy/policing.py`), its calls recorded with their
        decisions before anything reaches the upstream (`[audit] calls`, refused calls
        too); the listings whose answers are filtered, and the recorded calls' ids."""
        # Read to record its calls too: a body that is not JSON is refused (-32700), as
        # with rules, since a call the upstream might still parse would go unrecorded.
        length = request.content_length
        if (length or 0) > mount.max_request_bytes:
            raise body_too_large()
        body = await mount.relay.read_body(request, length)
        message = self._message(request, body, newer)
        decided: list[Decided] = []
        listed, refusal = None, None
        if mount.policing is not None:
            try:
                listed = mount.policing.check(grant, message, private=newer, decided=decided)
            except ProxyRefusal as exc:
                refusal = exc
        elif self._calls is not None:
            decided = allowed_calls(message)
        ids: list[str] | None = None
        if self._calls is not None and decided:
            path, request_id = mount.resource.path, request[ACCESS_REQUEST_ID]
            ids, durable = self._calls.decided(grant, path, decided, request_id)
            if durable is not None:
                await durable
        if refusal is not None:
            refusal.grant = grant
            raise refusal
        return body, message, listed, ids

    async def _forward(
        self,
        request: web.Request,
        mount: Mount,
        grant: Grant,
        session_id: str | None,
        started: float,
        body: bytes | None = None,
        listed: Listed | None = None,
        message: Any = None,
        call_ids: list[str] | None = None,
    ) -> web.StreamResponse:
        """The request upstream with its caller's identity, the answer back to the client;
        the sessions follow what the answer did to `session_id`. `body`: the body, if it
        was read already, and `message` its JSON-RPC message (named on the trace); `listed`:
        the listings it asks for, filtered on the way back."""
        length = request.content_length
        if (length or 0) > mount.max_request_bytes:
            raise body_too_large()
        relay, identity = mount.relay, mount.identity
        headers = identity.request_headers(request, grant)
        if identity.forwards_idp_token:
            await identity.add_idp_token(headers, grant)
        if listed is not None:
            headers["Accept-Encoding"] = "identity"  # a listing must be readable to filter
        watch = relay.watch()
        call = request.method != "GET"  # a GET stream takes no call slot
        try:
            if call and not relay.take_slot_now():
                await relay.wait_slot()
            try:
                upstream = await (  # recorded calls: their outcome once the upstream answered
                    self._send(request, mount, grant, headers, watch, body, message, call_ids)
                    if call_ids
                    else relay.send(request, length, headers, watch, body, message)
                )
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
                        if listed is not None:
                            return await relay.filtered_back(
                                request, upstream, started, watch, ListingFilter(listed)
                            )
                        return await relay.stream_back(request, upstream, started, watch)
                    finally:
                        if stream:
                            self.streams.closed(grant.id, upstream)
            finally:
                if call:
                    relay.free_slot()
        finally:
            relay.release(watch)

    async def _send(
        self,
        request: web.Request,
        mount: Mount,
        grant: Grant,
        headers: CIMultiDict[str],
        watch: Any,
        body: bytes | None,
        message: Any,
        call_ids: list[str],
    ) -> Any:
        """The request upstream; the recorded calls' outcome (upstream status, latency)
        once it answered or failed, written without waiting. (Only with recorded calls:
        otherwise `_forward` calls the relay's `send` itself, one coroutine less.)"""
        sent = time.perf_counter()
        status = 502
        try:
            length = request.content_length
            upstream = await mount.relay.send(request, length, headers, watch, body, message)
            status = upstream.status
            return upstream
        except ProxyRefusal as exc:
            status = exc.response.status
            raise
        finally:
            if self._calls is not None:
                seconds = time.perf_counter() - sent
                self._calls.completed(grant, mount.resource.path, call_ids, status, seconds)

    async def forward_auth(self, request: web.Request) -> web.StreamResponse:
        """Another proxy's question about a request to the MCP server it fronts
        (`proxy/forward_auth.py`): 200 with the identity headers, or `/mcp`'s refusal."""
        try:
            return await self._forward_auth.check(request)
        except ProxyRefusal as refusal:
            if refusal.response.status in (401, 403):
                self._refusal_noted(FORWARD_AUTH_ENDPOINT, refusal)
            return refusal.response
        except Unavailable as exc:
            self._on_unavailable(exc, request.path)
            return store_unavailable(exc).response

    def _refused(
        self, request: web.Request, mount: Mount, refusal: ProxyRefusal, started: float
    ) -> web.StreamResponse:
        if refusal.response.status in (401, 403):
            self._refusal_noted(mount.resource.path, refusal)
        mount.gate.add_cors(request, refusal.response)
        self._observe(request, refusal.response.status, started)
        return refusal.response

    def _refusal_noted(self, path: str, refusal: ProxyRefusal) -> None:
        """A 401 or 403: its reason logged and counted; recorded when it concerns a known
        grant (an unknown token has no principal: a stream of them is no stream of
        writes)."""
        status, reason, grant = refusal.response.status, refusal.reason, refusal.grant
        error = "invalid_token" if status == 401 else "forbidden"
        log.info(
            "request refused",
            extra={"event": "proxy.refused", "status": status, "reason": reason, "path": path},
        )
        self._metrics.refusal(path, error, reason)
        if grant is not None:
            self._trail.append_soon(
                AuditEvent.of_grant(
                    "refused",
                    grant,
                    path,
                    reason=reason,
                    detail={"endpoint": path, "status": status},
                )
            )

    def _observe(self, request: web.Request, status: int, started: float) -> None:
        """The latency metric: until the response headers go out (not a stream's life)."""
        self._metrics.proxy_request(request.method, status, time.perf_counter() - started)

    # -- revocation -------------------------------------------------------------------------

    async def close_sessions_of(self, grant: Grant) -> None:
        """A grant ended: end its streams, close its MCP sessions at its resource's
        upstream (DELETE) and forget them."""
        self.streams.end_grant(grant.id)
        ids = await self.sessions.release_all(grant)
        mount = self.mounts.of_grant(grant)
        if mount is None and len(self.mounts) == 1:
            mount = self.mounts.default  # the one upstream there is (the issuer changed?)
        if mount is None:
            if ids:
                log.warning(
                    "MCP sessions of an ended grant not closed: no resource has its identifier",
                    extra={"event": "proxy.session_close_failed", "resource": grant.resource},
                )
            return
        for session_id in ids:
            await mount.relay.delete(mount.identity.session_close_headers(grant, session_id))
