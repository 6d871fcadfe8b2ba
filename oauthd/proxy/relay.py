"""`McpProxy`: every `/mcp` request is authenticated, bound to its MCP session, and relayed
to the upstream without buffering, in both directions."""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from oauthd.clock import Clock
from oauthd.config import Config, read_secret
from oauthd.crypto import Sealer
from oauthd.log import request_id_var
from oauthd.metrics import Metrics
from oauthd.model import Grant
from oauthd.oauth import AuthServer
from oauthd.proxy.answers import (
    ProxyRefusal,
    challenge,
    internal_error,
    jsonrpc_error,
    store_unavailable,
)
from oauthd.proxy.deadlines import IDLE, ReadDeadlines, Watch
from oauthd.proxy.headers import client_response_headers, upstream_request_headers
from oauthd.proxy.sessions import SessionBindings
from oauthd.store import Store, Unavailable

log = logging.getLogger("oauthd.proxy")

SESSION_HEADER = "Mcp-Session-Id"
CHUNK = 64 * 1024
SMALL_BODY = 64 * 1024  # bodies up to this size (with a Content-Length) are sent in one piece


class _TooLarge(Exception):
    pass


class _HeadersWithBody(web.StreamResponse):
    """A response whose headers go out with its first body write: one send instead of two
    for an answer of known length. (`_send_headers_immediately` is aiohttp's own switch,
    which `web.Response` uses; a test pins that it still exists.) Never for SSE: an event
    stream's headers must reach the client before its first event."""

    _send_headers_immediately = False


def upstream_error_kind(exc: BaseException) -> str:
    """How a request to the upstream failed, for the metrics: connect, timeout, tls,
    reset, protocol (an answer that is not HTTP as expected) or other."""
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "tls"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(exc, aiohttp.ServerDisconnectedError | ConnectionResetError):
        return "reset"
    if isinstance(exc, aiohttp.ClientOSError) and exc.errno in (errno.ECONNRESET, errno.EPIPE):
        return "reset"
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError):
        return "protocol"
    return "other"


def _log_unavailable(exc: Unavailable, path: str) -> None:
    log.warning(
        "request refused: store unavailable",
        extra={"event": "http.unavailable", "reason": exc.reason, "path": path},
    )


class McpProxy:
    def __init__(
        self,
        config: Config,
        auth: AuthServer,
        store: Store,
        clock: Clock,
        sealer: Sealer,
        metrics: Metrics | None = None,
        on_unavailable: Callable[[Unavailable, str], None] | None = None,
    ) -> None:
        self._metrics = metrics or Metrics()
        self._on_unavailable = on_unavailable or _log_unavailable
        self._ending_streams = False
        self._config = config
        self._up = config.upstream
        self._auth = auth
        self._verify_bearer = auth.tokens.verify_bearer  # the hot path: one call less
        self.sessions = SessionBindings(store, clock, sealer, config.tokens.refresh_ttl)
        issuer = config.server.issuer
        self._metadata_url = f"{issuer}/.well-known/oauth-protected-resource/mcp"
        self._upstream_base = URL(self._up.url)  # parsed once, not per request
        self._own_origin = issuer.lower()
        self._forwarded_proto, _, self._forwarded_host = issuer.partition("://")
        self._scope = " ".join(self._up.required_scopes)
        self._identity_headers = (
            self._up.user_header,
            self._up.client_header,
            self._up.scopes_header,
            self._up.idp_token_header,
        )
        self._session: aiohttp.ClientSession | None = None
        self._static_authorization: str | None = None
        self._open_streams: set[aiohttp.ClientResponse] = set()
        self._deadlines = ReadDeadlines(self._up.read_timeout)
        self._id_prefix, self._ids = secrets.token_hex(4) + "-", itertools.count(1)
        self._delete_timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self._up.connect_timeout,
            sock_connect=self._up.connect_timeout,
            sock_read=self._up.read_timeout,
        )
        self._loop_time = time.monotonic  # what asyncio's loop.time() reads
        auth.tokens.grant_ended.append(self.close_sessions_of)

    async def start(self) -> None:
        if self._up.authorization:
            self._static_authorization = read_secret(self._up.authorization)
            if self._static_authorization is None:
                log.error(
                    "upstream.authorization cannot be read; sending none",
                    extra={"event": "proxy.no_static_credential"},
                )
        # `connect` bounds the wait for a free pooled connection too: long-lived streams
        # can hold all `max_connections`, and a request must not queue behind them forever.
        # The read timeout is `self._deadlines`, not aiohttp's `sock_read` (see deadlines.py).
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self._up.connect_timeout,
            sock_connect=self._up.connect_timeout,
        )
        self._deadlines.start()
        self._session = aiohttp.ClientSession(
            timeout=timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            connector=aiohttp.TCPConnector(limit=self._up.max_connections),
        )

    async def end_streams(self) -> None:
        """At shutdown: end the long-lived GET streams now (clients reconnect, with
        Last-Event-ID, to the next instance), so that the drain waits only for requests
        that finish by themselves (tool calls and their SSE answers)."""
        self._ending_streams = True  # these ends are not upstream errors
        for upstream in list(self._open_streams):
            upstream.close()

    async def close(self) -> None:
        await self._deadlines.stop()
        if self._session is not None:
            await self._session.close()

    # -- the request path ------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        # The request id of this request's log lines: the client's, else a counter (cheaper
        # than random bytes per request, and unique within the process).
        request_id = request.headers.get("X-Request-Id", "")[:64] or (
            f"{self._id_prefix}{next(self._ids):x}"
        )
        token = request_id_var.set(request_id)
        try:
            self._check_origin(request)
            if request.method == "OPTIONS":
                response = self._preflight(request)
                self._observe(request, response.status, started)
                return response
            grant = await self._authenticate(request)
            session_id = request.headers.get(SESSION_HEADER)
            if session_id is not None and not await self.sessions.belongs_to(session_id, grant):
                raise jsonrpc_error(404, -32001, "Session not found")
            return await self._relay(request, grant, session_id, started)
        except ProxyRefusal as refusal:
            return self._refused(request, refusal, started)
        except Unavailable as exc:
            self._on_unavailable(exc, request.path)
            return self._refused(request, store_unavailable(exc), started)
        except Exception:  # a bug; anything after the headers went out is `_stream_back`'s
            log.exception("unhandled error", extra={"event": "http.error", "path": "/mcp"})
            return self._refused(request, internal_error(request_id), started)
        finally:
            request_id_var.reset(token)

    def _refused(
        self, request: web.Request, refusal: ProxyRefusal, started: float
    ) -> web.StreamResponse:
        self._add_cors(request, refusal.response)
        self._observe(request, refusal.response.status, started)
        return refusal.response

    def _observe(self, request: web.Request, status: int, started: float) -> None:
        """The latency metric: until the response headers go out (not a stream's life)."""
        self._metrics.proxy_request(request.method, status, time.perf_counter() - started)

    def _check_origin(self, request: web.Request) -> None:
        origin = request.headers.get("Origin")
        if origin is None:
            return
        if not self._origin_allowed(origin):
            raise jsonrpc_error(403, -32000, "Origin not allowed")

    def _origin_allowed(self, origin: str) -> bool:
        return origin.lower() == self._own_origin or origin.lower() in self._up.allowed_origins

    def _preflight(self, request: web.Request) -> web.Response:
        response = web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": "Authorization, Content-Type, Accept, "
                "Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID, Mcp-Method, Mcp-Name",
                "Access-Control-Max-Age": "86400",
            },
        )
        self._add_cors(request, response)
        return response

    def _add_cors(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin is not None and self._origin_allowed(origin):  # never to a refused origin
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = (
                "WWW-Authenticate, Mcp-Session-Id, MCP-Protocol-Version, Retry-After"
            )
            vary = response.headers.get("Vary", "")  # the upstream's own Vary stays
            if "origin" not in vary.lower():
                response.headers["Vary"] = f"{vary}, Origin" if vary else "Origin"

    async def _authenticate(self, request: web.Request) -> Grant:
        scope = self._scope
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise challenge(401, self._metadata_url, scope)
        if scheme.lower() != "bearer" or not token.strip():
            raise challenge(
                401,
                self._metadata_url,
                scope,
                "invalid_request",
                "use the Authorization: Bearer scheme",
            )
        grant = await self._verify_bearer(token.strip())
        if grant is None:
            raise challenge(
                401,
                self._metadata_url,
                scope,
                "invalid_token",
                "the access token is invalid or has expired",
            )
        missing = [s for s in self._up.required_scopes if s not in grant.scopes]
        if missing:
            raise challenge(
                403,
                self._metadata_url,
                scope,
                "insufficient_scope",
                f"the token lacks the scope {missing[0]}",
            )
        return grant

    # -- relaying ----------------------------------------------------------------------------

    def _upstream_headers(self, request: web.Request, grant: Grant) -> CIMultiDict[str]:
        headers = upstream_request_headers(request.headers, self._identity_headers)
        headers["X-Forwarded-For"] = request.remote or ""
        headers["X-Forwarded-Proto"] = self._forwarded_proto
        headers["X-Forwarded-Host"] = self._forwarded_host
        headers[self._up.user_header] = grant.user
        headers[self._up.client_header] = grant.client_id
        headers[self._up.scopes_header] = " ".join(grant.scopes)
        if self._static_authorization:
            headers["Authorization"] = self._static_authorization
        return headers

    def _upstream_url(self, request: web.Request) -> URL:
        """`upstream.url` plus the client's query string as it was sent, less any
        `access_token` (a round trip through a dict would rewrite it: `flag` -> `flag=`,
        `%20` -> `+`)."""
        url = self._upstream_base
        if not request.rel_url.raw_query_string:
            return url
        raw = "&".join(  # a token in the query is never accepted, and never passed on
            part
            for part in request.rel_url.raw_query_string.split("&")
            if part and part.split("=", 1)[0] != "access_token"
        )
        if not raw:
            return url
        query = f"{url.raw_query_string}&{raw}" if url.raw_query_string else raw
        return URL.build(
            scheme=url.scheme,
            authority=url.raw_authority,
            path=url.raw_path,
            query_string=query,
            encoded=True,
        )

    async def _body(self, request: web.Request) -> AsyncIterator[bytes]:
        limit, seen = self._up.max_request_bytes, 0
        async for chunk in request.content.iter_chunked(CHUNK):
            seen += len(chunk)
            if seen > limit:
                raise _TooLarge()
            yield chunk

    async def _relay(
        self, request: web.Request, grant: Grant, session_id: str | None, started: float
    ) -> web.StreamResponse:
        length = request.content_length
        if (length or 0) > self._up.max_request_bytes:
            raise jsonrpc_error(413, -32600, "request body too large")
        headers = self._upstream_headers(request, grant)
        if self._up.forward_idp_token:
            token = await self._auth.upstream_access_token(grant)
            if token:
                headers[self._up.idp_token_header] = token
        body: bytes | AsyncIterator[bytes] | None = None
        if length is not None and length <= SMALL_BODY:
            body = await request.read()  # one write upstream, with a Content-Length
        elif request.body_exists:
            body = self._body(request)  # streamed, counted against max_request_bytes
        watch = self._deadlines.watch()
        try:
            return await self._exchange(request, grant, session_id, started, headers, body, watch)
        finally:
            self._deadlines.release(watch)

    async def _exchange(
        self,
        request: web.Request,
        grant: Grant,
        session_id: str | None,
        started: float,
        headers: CIMultiDict[str],
        body: bytes | AsyncIterator[bytes] | None,
        watch: Watch,
    ) -> web.StreamResponse:
        assert self._session is not None
        try:
            watch.waiting_since = self._loop_time()
            try:
                upstream = await self._session.request(
                    request.method,
                    self._upstream_url(request),
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                )
            finally:
                watch.waiting_since = IDLE
        except asyncio.CancelledError:
            if not self._deadlines.expired(watch):
                raise
            raise self._upstream_failed(TimeoutError()) from None
        except _TooLarge:
            raise jsonrpc_error(413, -32600, "request body too large") from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            if isinstance(exc.__cause__, _TooLarge):  # aiohttp wraps what the body raised
                raise jsonrpc_error(413, -32600, "request body too large") from None
            raise self._upstream_failed(exc) from None
        async with upstream:
            new_id = upstream.headers.get(SESSION_HEADER)
            if (new_id and new_id != session_id) or request.method == "DELETE":
                await self._track_session(request, upstream, grant, session_id, new_id)
            if request.method != "GET":
                return await self._stream_back(request, upstream, started, watch)
            self._open_streams.add(upstream)  # long-lived: ended at shutdown, see below
            try:
                return await self._stream_back(request, upstream, started, watch)
            finally:
                self._open_streams.discard(upstream)

    def _upstream_failed(self, exc: BaseException) -> ProxyRefusal:
        """504 for an upstream that did not answer in time, else 502; counted and logged."""
        status, message = (
            (504, "upstream timed out")
            if isinstance(exc, TimeoutError)  # aiohttp's ServerTimeoutError included
            else (502, "upstream unavailable")
        )
        kind = upstream_error_kind(exc)
        self._metrics.upstream_error(kind)
        log.warning(
            "upstream request failed",
            extra={
                "event": "proxy.upstream_error",
                "kind": kind,
                "error": type(exc).__name__,
                "status": status,
            },
        )
        return jsonrpc_error(status, -32000, message)

    async def _track_session(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        grant: Grant,
        session_id: str | None,
        new_id: str | None,
    ) -> None:
        if new_id and new_id != session_id and upstream.status < 400:
            await self.sessions.bind(new_id, grant)
        if request.method == "DELETE" and session_id and upstream.status in (200, 202, 204, 404):
            await self.sessions.forget(session_id, grant)

    async def _stream_back(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        started: float,
        watch: Watch,
    ) -> web.StreamResponse:
        length = upstream.content_length
        if "chunked" in upstream.headers.get("Transfer-Encoding", ""):
            length = None
        known_length = length is not None and upstream.content_type != "text/event-stream"
        response = (_HeadersWithBody if known_length else web.StreamResponse)(
            status=upstream.status,
            reason=upstream.reason,
            headers=client_response_headers(upstream.headers),
        )
        if length is not None:
            response.content_length = length
        self._add_cors(request, response)
        content = upstream.content
        first = b""
        if known_length and length:
            # Its headers go out with the first chunk: read that before committing to a
            # status, so an upstream that breaks off now is a 502/504, not a closed socket.
            try:
                first = await self._next_chunk(content, watch)
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise self._upstream_failed(exc) from None
        await response.prepare(request)
        self._observe(request, upstream.status, started)
        try:
            if first:
                await response.write(first)
            while chunk := await self._next_chunk(content, watch):  # SSE: event by event
                await response.write(chunk)
        except (TimeoutError, aiohttp.ClientError) as exc:
            if not self._ending_streams:
                self._metrics.upstream_error("stream_cut")
            log.info(
                "upstream stream ended early",
                extra={"event": "proxy.stream_cut", "error": type(exc).__name__},
            )
            if response.content_length is not None and request.transport is not None:
                # The client was promised more bytes than will come: cut its connection,
                # or it waits for them until its keep-alive ends.
                request.transport.close()
                return response
        except ConnectionResetError:
            pass  # the client went away; leaving the block closes the upstream request
        except Exception:  # a bug, after the headers went out: cut the stream, keep serving
            log.exception("unhandled error in a stream", extra={"event": "http.error"})
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response

    async def _next_chunk(self, content: aiohttp.StreamReader, watch: Watch) -> bytes:
        """What the upstream sends next (b"" at the end), under the read deadline; a
        deadline passed is a TimeoutError."""
        watch.waiting_since = self._loop_time()
        try:
            return await content.readany()
        except asyncio.CancelledError:
            if not self._deadlines.expired(watch):
                raise
            raise TimeoutError from None
        finally:
            watch.waiting_since = IDLE

    # -- revocation -------------------------------------------------------------------------

    async def close_sessions_of(self, grant: Grant) -> None:
        """A grant ended: close its MCP sessions upstream (DELETE) and forget them."""
        for session_id in await self.sessions.release_all(grant):
            headers = {
                SESSION_HEADER: session_id,
                self._up.user_header: grant.user,
                self._up.client_header: grant.client_id,
                self._up.scopes_header: " ".join(grant.scopes),
            }
            if self._static_authorization:  # an upstream that needs it refuses the DELETE
                headers["Authorization"] = self._static_authorization
            try:
                assert self._session is not None
                async with self._session.delete(
                    self._upstream_base, headers=headers, timeout=self._delete_timeout
                ) as response:
                    log.info(
                        "MCP session closed upstream",
                        extra={"event": "proxy.session_closed", "status": response.status},
                    )
            except (TimeoutError, aiohttp.ClientError):
                log.warning(
                    "could not close an MCP session upstream",
                    extra={"event": "proxy.session_close_failed"},
                )
