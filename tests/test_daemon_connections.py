"""The daemon serves with the connection guard (`oauthd/http/connections.py`): its
deadlines from `[server]`, malformed requests logged low and without their bytes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.support.configs import write_config
from tests.support.daemon import Spawn, request
from tests.support.ports import free_port


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
