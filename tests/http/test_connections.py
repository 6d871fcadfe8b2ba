"""Client connections: the head, body and idle deadlines, the cap per address, malformed
requests logged without their bytes, and accept failures logged once per interval
(`oauthd/http/connections.py`). Loopback only; every wait is bounded."""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from oauthd.http.connections import ACCEPT_FAILURE, AcceptFailures, GuardedRunner
from tests.support.configs import default_config
from tests.support.ports import free_port

Serve = Callable[..., Awaitable[int]]


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read())


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    """`await serve(header_timeout=..., ...)`: a small app under `GuardedRunner` with
    those `[server]` values; its port."""
    runners: list[web.AppRunner] = []

    async def start(**server: Any) -> int:
        app = web.Application()
        app.router.add_get("/healthz", healthz)
        app.router.add_post("/echo", echo)
        runner = GuardedRunner(
            app,
            replace(default_config(tmp_path).server, **server),
            access_log=None,
            handler_cancellation=True,
        )
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return port

    yield start
    for runner in runners:
        await runner.cleanup()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """All the server sends until it closes the connection (fails if it does not)."""
    return await asyncio.wait_for(reader.read(), seconds)


async def probe(port: int) -> int:
    timeout = aiohttp.ClientTimeout(total=2)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(f"http://127.0.0.1:{port}/healthz") as response,
    ):
        return response.status


async def test_a_slow_head_gets_408_and_is_closed(serve: Serve) -> None:
    port = await serve(header_timeout=0.3, idle_timeout=30)
    reader, writer = await connect(port)
    started = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never the blank line
    answer = await closed_within(reader, 3)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert 0.25 < time.monotonic() - started < 2
    writer.close()


async def test_a_slow_body_is_cut_and_a_quick_one_is_not(serve: Serve) -> None:
    port = await serve(body_timeout=0.5, idle_timeout=30)
    reader, writer = await connect(port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
    started = time.monotonic()
    await closed_within(reader, 3)
    assert 0.4 < time.monotonic() - started < 2
    writer.close()
    async with aiohttp.ClientSession() as http:  # keep-alive: the timer of a body ends
        for _ in range(2):
            async with http.post(f"http://127.0.0.1:{port}/echo", data=b"x" * 1000) as reply:
                assert await reply.read() == b"x" * 1000
            await asyncio.sleep(0.4)


async def test_an_idle_connection_is_closed(serve: Serve) -> None:
    port = await serve(idle_timeout=0.3, header_timeout=30)
    reader, writer = await connect(port)
    started = time.monotonic()
    assert await closed_within(reader, 3) == b""
    assert time.monotonic() - started < 2
    writer.close()


async def test_1000_idle_and_slow_connections_are_closed_while_probes_answer(
    serve: Serve,
) -> None:
    """The slowloris shapes (silent, slow head, slow body), 1,000 connections: each closed
    by its deadline, and /healthz answers all along."""
    port = await serve(
        header_timeout=1.0, body_timeout=1.0, idle_timeout=1.0, max_connections_per_address=0
    )
    shapes = [
        b"",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nx",
    ]
    connections = []
    for n in range(1000):
        reader, writer = await connect(port)
        writer.write(shapes[n % 3])
        connections.append((reader, writer))
    started = time.monotonic()
    probes = []
    while time.monotonic() - started < 1.5:
        probes.append(await probe(port))
        await asyncio.sleep(0.1)
    assert probes and set(probes) == {200}
    await asyncio.wait_for(asyncio.gather(*(r.read() for r, _ in connections)), 10)
    assert time.monotonic() - started < 10
    for _, writer in connections:
        writer.close()
    assert await probe(port) == 200


async def test_connections_per_address_are_capped(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    port = await serve(max_connections_per_address=3, idle_timeout=30, header_timeout=30)
    held = [await connect(port) for _ in range(3)]
    reader, writer = await connect(port)
    assert (await closed_within(reader, 2)).startswith(b"HTTP/1.1 503 ")
    writer.close()
    for _ in range(5):
        reader, writer = await connect(port)
        await closed_within(reader, 2)
        writer.close()
    lines = [r for r in caplog.records if getattr(r, "event", "") == "http.too_many_connections"]
    assert len(lines) == 1  # one line per interval, not one per refusal
    held[0][1].close()
    await closed_within(held[0][0], 2)
    await asyncio.sleep(0.1)
    assert await probe(port) == 200  # a slot came free
    for _, w in held[1:]:
        w.close()


async def test_a_trusted_proxy_is_not_capped(serve: Serve) -> None:
    """Behind a reverse proxy every client arrives from the proxy's address: capping it
    would cap everyone together."""
    port = await serve(
        max_connections_per_address=2,
        idle_timeout=30,
        header_timeout=30,
        trusted_proxies=("127.0.0.0/8",),
    )
    held = [await connect(port) for _ in range(4)]
    assert await probe(port) == 200
    for _, writer in held:
        writer.close()


async def test_a_malformed_request_is_logged_low_without_its_bytes(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    port = await serve()
    caplog.set_level(logging.DEBUG)
    for line in (b"GET /x HTTP/1.1 SECRETBYTES\r\n\r\n", b"G\x01T /SECRETBYTES HTTP/1.1\r\n\r\n"):
        reader, writer = await connect(port)
        writer.write(line)
        answer = await closed_within(reader, 2)
        assert answer.split(b"\r\n")[0].endswith(b" 400 Bad Request"), answer
        assert b"SECRETBYTES" not in answer
        assert b"\r\nserver:" not in answer.lower()  # nor what it runs on
        writer.close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "SECRETBYTES" not in caplog.text
    assert [r for r in caplog.records if getattr(r, "event", "") == "http.bad_request"]


def test_accept_failures_are_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    try:
        handler = AcceptFailures(interval=60)
        failure = OSError(errno.EMFILE, "Too many open files")
        for _ in range(5000):
            handler(loop, {"message": ACCEPT_FAILURE, "exception": failure})
        lines = [r for r in caplog.records if getattr(r, "event", "") == "http.accept_failed"]
        assert len(lines) == 1
        assert lines[0].__dict__["error"] == "Too many open files"
        handler(loop, {"message": "something else"})  # passed on to asyncio's handler
        assert any("something else" in r.getMessage() for r in caplog.records)
    finally:
        loop.close()
