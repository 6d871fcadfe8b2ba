"""An upstream that is down, slow, hanging or broken gets a JSON-RPC error in bounded time:
502 when it cannot answer, 504 when it is too slow; never a 500, never a hang."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web

from oauthd.http.keys import PROXY
from oauthd.store import Unavailable
from tests.support.browser import Answer
from tests.support.ports import free_port
from tests.support.proxy_app import Oauthd, StartOauthd
from tests.support.upstream import FakeUpstream, Seen, start_sse


async def timed(call: asyncio.Future[Answer] | asyncio.Task[Answer]) -> tuple[Answer, float]:
    started = time.monotonic()
    reply = await asyncio.wait_for(call, 5)
    return reply, time.monotonic() - started


async def test_upstream_down_is_502(start_oauthd: StartOauthd) -> None:
    oauthd = await start_oauthd(upstream={"url": f"http://127.0.0.1:{free_port()}/mcp"})
    granted = await oauthd.grant()
    for method in ("POST", "GET", "DELETE"):
        reply, elapsed = await timed(asyncio.ensure_future(oauthd.mcp(method, granted)))
        reply.assert_jsonrpc_error(502)
        assert elapsed < 2
        assert reply.headers.get("Cache-Control") == "no-store"


async def test_an_upstream_that_drops_the_connection_is_502(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    async def answer(request: web.Request, seen: Seen) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()
        await asyncio.sleep(30)
        raise AssertionError("unreachable")

    upstream.answer = answer
    granted = await oauthd.grant()
    reply, elapsed = await timed(asyncio.ensure_future(oauthd.mcp("POST", granted)))
    reply.assert_jsonrpc_error(502)
    assert elapsed < 2


async def test_an_answer_cut_before_its_first_byte_is_502_not_a_closed_socket(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    """A known-length answer's headers go out with its first chunk; if the upstream breaks
    off before that chunk, the client still gets an answer: a JSON-RPC 502."""

    async def answer(request: web.Request, seen: Seen) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 100
        await response.prepare(request)  # headers only, then the connection goes
        assert request.transport is not None
        request.transport.close()
        return response

    upstream.answer = answer
    granted = await oauthd.grant()
    reply = await oauthd.mcp("POST", granted)
    reply.assert_jsonrpc_error(502)


@pytest.fixture
async def garbage_upstream() -> AsyncIterator[str]:
    """Something on the upstream port that does not speak HTTP."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/mcp"
    server.close()
    await server.wait_closed()


async def test_an_upstream_that_does_not_speak_http_is_502(
    start_oauthd: StartOauthd, garbage_upstream: str
) -> None:
    oauthd = await start_oauthd(upstream={"url": garbage_upstream})
    granted = await oauthd.grant()
    reply, elapsed = await timed(asyncio.ensure_future(oauthd.mcp("POST", granted)))
    reply.assert_jsonrpc_error(502)
    assert elapsed < 2


@pytest.mark.parametrize("hang", [False, True], ids=["slow", "hanging"])
async def test_an_upstream_slower_than_the_read_timeout_is_504(
    start_oauthd: StartOauthd, upstream: FakeUpstream, hang: bool
) -> None:
    oauthd = await start_oauthd(upstream={"read_timeout": 0.3})

    async def answer(request: web.Request, seen: Seen) -> web.StreamResponse:
        await (asyncio.Event().wait() if hang else asyncio.sleep(1.5))
        return web.json_response({"too": "late"})

    upstream.answer = answer
    granted = await oauthd.grant()
    reply, elapsed = await timed(asyncio.ensure_future(oauthd.mcp("POST", granted)))
    reply.assert_jsonrpc_error(504)
    assert 0.25 < elapsed < 1.2, elapsed


async def test_an_answer_within_the_read_timeout_passes(
    start_oauthd: StartOauthd, upstream: FakeUpstream
) -> None:
    oauthd = await start_oauthd(upstream={"read_timeout": 0.5})

    async def answer(request: web.Request, seen: Seen) -> web.StreamResponse:
        await asyncio.sleep(0.2)
        return web.json_response({"in": "time"})

    upstream.answer = answer
    granted = await oauthd.grant()
    reply = await oauthd.mcp("POST", granted)
    assert (reply.status, reply.json()) == (200, {"in": "time"})


async def test_a_stream_that_stalls_past_the_read_timeout_ends(
    start_oauthd: StartOauthd, upstream: FakeUpstream
) -> None:
    """Headers and one event, then silence: the client's stream ends, it does not hang."""
    oauthd = await start_oauthd(upstream={"read_timeout": 0.3})

    async def answer(request: web.Request, seen: Seen) -> web.StreamResponse:
        response = await start_sse(request)
        await response.write(b"data: 1\n\n")
        await asyncio.Event().wait()
        return response

    upstream.answer = answer
    granted = await oauthd.grant()
    started = time.monotonic()
    async with oauthd.client.session.get(oauthd.mcp_url, headers=granted.bearer()) as response:
        assert response.status == 200
        body = await asyncio.wait_for(response.content.read(), 3)
    assert body == b"data: 1\n\n"
    assert time.monotonic() - started < 1.5
    await asyncio.wait_for(upstream.gone.wait(), 2)  # and the upstream request was closed


async def test_upstream_errors_pass_as_they_are(oauthd: Oauthd, upstream: FakeUpstream) -> None:
    """The upstream's own error answers are its business: relayed, not rewritten."""

    async def answer(request: web.Request, seen: Seen) -> web.StreamResponse:
        return web.json_response({"upstream": "broke"}, status=500)

    upstream.answer = answer
    granted = await oauthd.grant()
    reply = await oauthd.mcp("POST", granted)
    assert (reply.status, reply.json()) == (500, {"upstream": "broke"})


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose accept queue is full: connection attempts get no answer at all."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port: int = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for sock in (*fillers, listener):
        sock.close()


async def test_an_upstream_that_does_not_accept_is_504_after_the_connect_timeout(
    start_oauthd: StartOauthd, unanswered_port: int
) -> None:
    oauthd = await start_oauthd(
        upstream={"url": f"http://127.0.0.1:{unanswered_port}/mcp", "connect_timeout": 0.3}
    )
    granted = await oauthd.grant()
    reply, elapsed = await timed(asyncio.ensure_future(oauthd.mcp("POST", granted)))
    reply.assert_jsonrpc_error(504)
    assert 0.25 < elapsed < 1.2, elapsed


async def test_an_open_stream_holds_no_call_slot(
    start_oauthd: StartOauthd, upstream: FakeUpstream
) -> None:
    """Long-lived GET streams take none of the `max_connections` slots: with one slot and
    a stream open, a call is answered at once (it got a 504 after the connect timeout
    when the stream held the only pooled connection). Calls that find no slot:
    test_relay_slots.py."""
    oauthd = await start_oauthd(upstream={"max_connections": 1, "connect_timeout": 0.3})

    async def answer(request: web.Request, seen: Seen) -> web.StreamResponse:
        if request.method != "GET":
            return web.json_response({})
        response = await start_sse(request)
        await response.write(b"data: open\n\n")
        await asyncio.Event().wait()
        return response

    upstream.answer = answer
    granted = await oauthd.grant()
    async with oauthd.client.session.get(oauthd.mcp_url, headers=granted.bearer()) as stream:
        await asyncio.wait_for(stream.content.readuntil(b"\n\n"), 2)
        reply, elapsed = await timed(asyncio.ensure_future(oauthd.mcp("POST", granted)))
        assert reply.status == 200, reply.text
        assert elapsed < 0.3, elapsed
        stream.close()
    await asyncio.wait_for(upstream.gone.wait(), 2)


async def test_a_store_outage_is_503_with_retry_after_readable_cross_origin(
    oauthd: Oauthd, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proxy renders its own errors (no middleware on /mcp): the store's Unavailable
    is a JSON-RPC 503 with Retry-After, and a browser client may read Retry-After."""
    granted = await oauthd.grant()
    proxy = oauthd.app[PROXY]

    async def unavailable(token: str, resource: str) -> None:
        raise Unavailable("redis: connection refused", retry_after=2.5)

    monkeypatch.setattr(proxy.mounts.default.gate, "_verify_bearer", unavailable)
    reply = await oauthd.mcp("POST", granted, headers={"Origin": oauthd.base})
    reply.assert_jsonrpc_error(503)
    assert reply.headers["Retry-After"] == "3"
    assert reply.headers["Access-Control-Allow-Origin"] == oauthd.base
    assert "Retry-After" in reply.headers["Access-Control-Expose-Headers"]


async def test_a_bug_in_the_proxy_is_a_jsonrpc_500_naming_the_request(
    oauthd: Oauthd, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    granted = await oauthd.grant()
    proxy = oauthd.app[PROXY]

    async def broken(token: str, resource: str) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(proxy.mounts.default.gate, "_verify_bearer", broken)
    reply = await oauthd.mcp("POST", granted, headers={"X-Request-Id": "req-42"})
    error = reply.assert_jsonrpc_error(500)
    assert "req-42" in error["message"] and "a bug" not in reply.text
    assert reply.headers["X-Request-Id"] == "req-42"
    assert any(r.getMessage() == "unhandled error" for r in caplog.records)
    monkeypatch.undo()
    assert (await oauthd.mcp("POST", granted)).status == 200  # and it keeps serving
