"""`Relay`: the byte pump between a client and the upstream MCP server. Bodies stream
unbuffered in both directions (SSE event by event), under the read deadline
(deadlines.py); an upstream that fails before the answer starts is a 502, or a 504 if it
was too slow; after that, the stream is cut."""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from oauthd.config import UpstreamConfig
from oauthd.metrics import Metrics
from oauthd.proxy.answers import ProxyRefusal, body_too_large, jsonrpc_error, overloaded
from oauthd.proxy.deadlines import IDLE, ReadDeadlines, Watch
from oauthd.proxy.headers import client_response_headers, upstream_url
from oauthd.proxy.listings import ListingFilter, SseFilter
from oauthd.proxy.slots import CallSlots
from oauthd.proxy.streams import OpenStreams
from oauthd.tracing import HopTarget, Tracing

log = logging.getLogger("oauthd.proxy")

CHUNK = 64 * 1024
SMALL_BODY = 64 * 1024  # bodies up to this size (with a Content-Length) are sent in one piece

AddCors = Callable[[web.Request, web.StreamResponse], None]
Observe = Callable[[web.Request, int, float], None]  # request, status, perf_counter at start


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


class Relay:
    def __init__(
        self,
        upstream: UpstreamConfig,
        metrics: Metrics,
        add_cors: AddCors,
        observe: Observe,
        streams: OpenStreams,
        tracing: Tracing | None = None,
    ) -> None:
        self._metrics = metrics
        self._tracing = tracing
        self._streams = streams
        self._add_cors = add_cors
        self._observe = observe
        self._upstream_base = URL(upstream.url)  # parsed once, not per request
        base = self._upstream_base
        self._target = HopTarget(str(base.with_query(None)), base.host or "", base.port or 0)
        self._max_request_bytes = upstream.max_request_bytes
        # The pool itself is unbounded: `_slots` bounds the calls (streams are not counted),
        # so no request queues inside aiohttp behind long-lived streams.
        self._slots = CallSlots(upstream.max_connections)
        self.take_slot_now = self._slots.take_now  # a free slot, or False: `wait_slot`
        self.free_slot = self._slots.free
        self._slot_wait = upstream.connect_timeout
        # The read timeout is `self._deadlines`, not aiohttp's `sock_read` (see deadlines.py).
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=upstream.connect_timeout, sock_connect=upstream.connect_timeout
        )
        self._delete_timeout = aiohttp.ClientTimeout(
            total=None,
            connect=upstream.connect_timeout,
            sock_connect=upstream.connect_timeout,
            sock_read=upstream.read_timeout,
        )
        self._session: aiohttp.ClientSession | None = None
        self._deadlines = ReadDeadlines(upstream.read_timeout)
        self.watch = self._deadlines.watch  # a request's watch, armed while it waits
        self.release = self._deadlines.release
        self._loop_time = time.monotonic  # what asyncio's loop.time() reads
        # `send`: the request upstream, its answer's head (chosen once: with tracing off,
        # no check and no extra frame per request)
        self.send = self._send if tracing is None else self._traced_send

    async def start(self) -> None:
        self._deadlines.start()
        self._session = aiohttp.ClientSession(
            timeout=self._timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            connector=aiohttp.TCPConnector(limit=0),
        )

    async def close(self) -> None:
        await self._deadlines.stop()
        if self._session is not None:
            await self._session.close()

    # -- client to upstream ----------------------------------------------------------------

    async def wait_slot(self) -> None:
        """When `take_slot_now` found none free: one of the `max_connections` call slots,
        for a call's whole exchange with the upstream (`free_slot` after), waited for at
        most `connect_timeout`; a 503 `ProxyRefusal` if none comes free."""
        started = self._loop_time()
        try:
            async with asyncio.timeout(self._slot_wait):
                await self._slots.wait()
        except TimeoutError:
            self._metrics.slot_wait(self._loop_time() - started, refused=True)
            log.warning("no free upstream slot", extra={"event": "proxy.overloaded"})
            raise overloaded() from None
        self._metrics.slot_wait(self._loop_time() - started, refused=False)

    def read_body(self, request: web.Request, length: int | None) -> Awaitable[bytes]:
        """The whole body, for a request the proxy must read before it decides; 413 past
        `max_request_bytes`. `length`: its Content-Length, already checked against it."""
        if length is not None and length <= SMALL_BODY:
            return request.read()  # no coroutine of ours around it: the hot path
        return self._read_whole(request)

    async def _read_whole(self, request: web.Request) -> bytes:
        try:
            return b"".join([chunk async for chunk in self._body(request)])
        except _TooLarge:
            raise body_too_large() from None

    async def _traced_send(
        self,
        request: web.Request,
        length: int | None,
        headers: CIMultiDict[str],
        watch: Watch,
        body_read: bytes | None = None,
        message: object = None,
    ) -> aiohttp.ClientResponse:
        """`send` with tracing on: the hop is a client span, until the answer's head came,
        whose context goes upstream as `traceparent` (`Tracing.hop`); `message`: the
        request's JSON-RPC message, if the proxy parsed it."""
        assert self._tracing is not None
        hop = self._tracing.hop(request.method, self._target, headers, message, request.headers)
        try:
            upstream = await self._send(request, length, headers, watch, body_read)
        except ProxyRefusal as refusal:
            hop.failed(str(refusal.response.status))
            raise
        except BaseException:  # cancelled: the client went away
            hop.failed("cancelled")
            raise
        hop.answered(upstream.status)
        return upstream

    async def _send(
        self,
        request: web.Request,
        length: int | None,
        headers: CIMultiDict[str],
        watch: Watch,
        body_read: bytes | None = None,
        message: object = None,
    ) -> aiohttp.ClientResponse:
        """The request, with `headers`, to the upstream: its answer's head, or a refusal
        (413 for a body over `max_request_bytes`, else 502/504). `length` is the request's
        Content-Length, already checked against the limit; `body_read` the body if the
        proxy read it already. (`send` without tracing: a client's `traceparent` goes
        upstream as it came, headers.py keeps it.)"""
        body: bytes | AsyncIterator[bytes] | None = body_read
        if body is None and length is not None and length <= SMALL_BODY:
            body = await request.read()  # one write upstream, with a Content-Length
        elif body is None and request.body_exists:
            body = self._body(request)  # streamed, counted against max_request_bytes
        assert self._session is not None
        try:
            watch.waiting_since = self._loop_time()
            try:
                return await self._session.request(
                    request.method,
                    upstream_url(self._upstream_base, request.rel_url.raw_query_string),
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
            raise body_too_large() from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            if isinstance(exc.__cause__, _TooLarge):  # aiohttp wraps what the body raised
                raise body_too_large() from None
            raise self._upstream_failed(exc) from None

    async def _body(self, request: web.Request) -> AsyncIterator[bytes]:
        limit, seen = self._max_request_bytes, 0
        async for chunk in request.content.iter_chunked(CHUNK):
            seen += len(chunk)
            if seen > limit:
                raise _TooLarge()
            yield chunk

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

    # -- upstream to client ----------------------------------------------------------------

    async def stream_back(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        started: float,
        watch: Watch,
        sse: SseFilter | None = None,
    ) -> web.StreamResponse:
        """The upstream's answer to the client as it arrives; `observe` is called when its
        headers go out. A break before that is a 502/504 refusal, after it a cut stream.
        `sse`: the filter an event stream passes through (listings.py)."""
        length = upstream.content_length
        if "chunked" in upstream.headers.get("Transfer-Encoding", ""):
            length = None
        known_length = length is not None and upstream.content_type != "text/event-stream"
        response = (_HeadersWithBody if known_length else web.StreamResponse)(
            status=upstream.status,
            reason=upstream.reason,
            headers=client_response_headers(upstream.headers),
        )
        if length is not None and sse is None:  # a filtered stream's length is not known
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
                if sse is not None:
                    chunk = sse.feed(chunk)
                await response.write(chunk)
            if sse is not None and (rest := sse.flush()):
                await response.write(rest)
        except (TimeoutError, aiohttp.ClientError) as exc:
            if self._cut_short(request, response, upstream, exc):
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

    async def filtered_back(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        started: float,
        watch: Watch,
        listing: ListingFilter,
    ) -> web.StreamResponse:
        """`stream_back` for the answer to a listing that policy filters: an event stream
        event by event, any other answer read whole and sent rewritten (if it is JSON) with
        its new length.
        (The request asked for no compression; an upstream that compressed anyway is a
        502: its listing cannot be filtered, so it is not passed.)"""
        if upstream.headers.get("Content-Encoding", "identity").lower() != "identity":
            raise self._upstream_failed(aiohttp.ClientPayloadError("compressed listing"))
        if upstream.content_type == "text/event-stream":
            return await self.stream_back(request, upstream, started, watch, listing.sse())
        try:  # JSON, or anything else that might hold a listing: read whole and filtered
            chunks = []
            while chunk := await self._next_chunk(upstream.content, watch):
                chunks.append(chunk)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._upstream_failed(exc) from None
        response = web.Response(
            body=listing.json(b"".join(chunks)),
            status=upstream.status,
            reason=upstream.reason,
            headers=client_response_headers(upstream.headers),
        )
        self._add_cors(request, response)
        self._observe(request, upstream.status, started)
        return response

    def _cut_short(
        self,
        request: web.Request,
        response: web.StreamResponse,
        upstream: aiohttp.ClientResponse,
        exc: BaseException,
    ) -> bool:
        """The upstream's answer broke off: counted (unless oauthd ended it: a shutdown,
        an ended grant) and logged. True if the client's connection was closed (it was
        promised more bytes than will come, and would wait for them until its keep-alive
        ends)."""
        if not self._streams.ended_here(upstream):
            self._metrics.upstream_error("stream_cut")
        log.info(
            "upstream stream ended early",
            extra={"event": "proxy.stream_cut", "error": type(exc).__name__},
        )
        if response.content_length is not None and request.transport is not None:
            request.transport.close()
            return True
        return False

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

    # -- oauthd's own requests ---------------------------------------------------------------

    async def delete(self, headers: Mapping[str, str]) -> None:
        """DELETE at the upstream URL (closing an MCP session), with aiohttp's own read
        timeout (rare requests, outside the deadlines); a failure is logged, not raised."""
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
