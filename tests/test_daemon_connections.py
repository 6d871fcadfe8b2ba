"""The daemon serves with the connection guard (`oauthd/http/connections.py`): its
deadlines from `[server]`, malformed requests logged low and without their bytes."""

from __future__ import annotations

import asyncio
import resource
import signal
import subprocess
import time
from pathlib import Path

from aiohttp import web

from tests.support.configs import write_config
from tests.support.daemon import Spawn, clean_env, oauthd_command, request, stop_process
from tests.support.http_client import OauthdClient
from tests.support.ports import free_port
from tests.support.upstream import FakeUpstream, Seen


async def test_malformed_requests_and_idle_connections_under_the_daemon(
    tmp_path: Path, spawn_oauthd: Spawn
) -> None:
    port = free_port()
    server = {"shutdown_timeout": "5s", "idle_timeout": "1s", "header_timeout": "1s"}
    config = write_config(
        tmp_path / "oauthd.toml",
        port,
        {"server": server, "storage": {"backend": "memory"}},
        users=(),
    )
    daemon = spawn_oauthd(config, port)
    await daemon.wait_ready()
    for line in (b"GET /x HTTP/1.1 SECRETBYTES\r\n\r\n", b"\x16\x03\x01SECRETBYTES\r\n\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(line)
        answer = await asyncio.wait_for(reader.read(), 5)
        assert b" 400 " in answer.split(b"\r\n")[0] and b"SECRETBYTES" not in answer, answer
        writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # idle: closed by the daemon
    assert time.monotonic() - started < 3
    writer.close()
    assert request(port, "GET", "/healthz")[0] == 200
    assert await daemon.stop() == 0
    log = daemon.json_log()
    assert [doc["event"] for doc in log if doc.get("event") == "http.bad_request"]
    assert not [doc for doc in log if doc.get("level") in ("error", "critical")], log
    assert "SECRETBYTES" not in daemon.log()


async def test_a_drain_cut_short_answers_503_and_exits_in_time(
    tmp_path: Path, spawn_oauthd: Spawn
) -> None:
    """SIGTERM while a /mcp call waits for an upstream that never answers: when
    `server.shutdown_timeout` (1 s) ends the drain the call gets 503 with
    `Connection: close` (it used to be closed with no answer), and the process exits
    within the timeout + 1 s."""
    hold, arrived = asyncio.Event(), asyncio.Event()

    async def never(request: web.Request, seen: Seen) -> web.StreamResponse:
        arrived.set()
        await hold.wait()
        return web.json_response({})

    port = free_port()
    async with FakeUpstream(never) as upstream:
        config = write_config(
            tmp_path / "oauthd.toml",
            port,
            {
                "server": {"shutdown_timeout": "1s"},
                "storage": {"backend": "memory"},
                "upstream": {"url": upstream.url},
            },
        )
        daemon = spawn_oauthd(config, port)
        await daemon.wait_ready()
        client = OauthdClient(daemon.url, daemon.url)
        try:
            access = (await client.tokens(await client.register_public()))["access_token"]
            call = asyncio.create_task(client.call_mcp(access))
            await asyncio.wait_for(arrived.wait(), 5)
            assert daemon.proc is not None
            signalled = time.monotonic()
            daemon.proc.send_signal(signal.SIGTERM)
            answer = await asyncio.wait_for(call, 5)
            answered = time.monotonic() - signalled
            assert answer.status == 503, answer.text
            assert answer.headers["Connection"] == "close"
            assert answer.headers["Retry-After"] == "1"
            assert 0.9 < answered < 2, answered
            assert await daemon.wait(5) == 0, daemon.log()
            assert time.monotonic() - signalled < 2.0
        finally:
            hold.set()
            await client.close()
    assert "http.drain_cut" in daemon.events()


def spawn_with_few_descriptors(config: Path, cwd: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """`oauthd serve` with at most 128 open files, its output in `log_path`."""

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

    with log_path.open("wb") as out:
        return subprocess.Popen(
            [*oauthd_command(), "serve", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=clean_env(),
            preexec_fn=low_limit,
        )


async def test_out_of_descriptors_is_one_log_line_and_service_comes_back(
    tmp_path: Path,
) -> None:
    """Under a low descriptor limit, 300 idle connections exhaust it: accept() fails for
    each one queued, and the daemon logs that once (asyncio alone logs it once per queued
    connection, thousands of lines a second). The idle deadline frees the descriptors and
    /healthz answers again."""
    port = free_port()
    server = {"idle_timeout": "2s", "header_timeout": "2s", "max_connections_per_address": 0}
    config = write_config(
        tmp_path / "oauthd.toml", port, {"server": server, "storage": {"backend": "memory"}}
    )
    log_path = tmp_path / "oauthd.log"

    proc = spawn_with_few_descriptors(config, tmp_path, log_path)
    try:
        started = time.monotonic()
        while time.monotonic() - started < 20:
            try:
                if request(port, "GET", "/healthz")[0] == 200:
                    break
            except OSError:
                await asyncio.sleep(0.05)
        connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(300)]
        await asyncio.sleep(1.5)  # accept() fails again and again meanwhile
        for _, writer in connections:
            writer.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                if request(port, "GET", "/healthz")[0] == 200:
                    break
            except OSError:
                assert time.monotonic() < deadline, "oauthd did not come back"
                await asyncio.sleep(0.2)
    finally:
        stop_process(proc, signal.SIGTERM, 10)
    lines = log_path.read_text(errors="replace").splitlines()
    failed = [line for line in lines if '"http.accept_failed"' in line]
    assert len(failed) == 1, failed
    assert not [line for line in lines if "out of system resource" in line], lines[:5]
