"""oauthd/http/access_log.py: one JSON line per request answered, by the real daemon
(`[log] access`, `[log] access_mcp`); the query never logged; the client address
through `server.trusted_proxies`."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from oauthd.config import load_config
from oauthd.http.access_log import AccessLogger, access_log_arguments
from oauthd.proxy import ACCESS_CALLER, ACCESS_REQUEST_ID, Caller
from tests.support.configs import USER, write_config
from tests.support.daemon import Spawn, request
from tests.support.http_client import OauthdClient
from tests.support.ports import free_port


def access_lines(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in log if line.get("event") == "http.access"]


async def test_the_daemon_logs_one_line_per_request(tmp_path: Path, spawn_oauthd: Spawn) -> None:
    port = free_port()
    upstream = {"url": f"http://127.0.0.1:{free_port()}/mcp"}
    sections = {"storage": {"backend": "memory"}, "upstream": upstream}
    config = write_config(tmp_path / "oauthd.toml", port, sections)
    daemon = spawn_oauthd(config, port)
    await daemon.wait_ready()
    assert request(port, "GET", "/healthz")[0] == 200
    assert request(port, "GET", "/authorize?code_challenge=secret-ish&state=s3cr3t")[0] == 400
    assert request(port, "POST", "/mcp")[0] == 401
    client = OauthdClient(daemon.url, daemon.url)
    try:
        app = await client.register_public()
        tokens = await client.tokens(app)
        called = await client.call_mcp(tokens["access_token"])  # no upstream there: 502
    finally:
        await client.close()
    assert await daemon.stop(signal.SIGTERM) == 0
    log = access_lines(daemon.json_log())
    (called_line,) = [line for line in log if line["status"] == called.status == 502]
    assert called_line["user"] == USER and called_line["client_id"] == app["client_id"]
    assert called_line["resource"] == f"{daemon.url}/mcp"
    token_line = next(line for line in log if line["path"] == "/token")
    assert token_line["status"] == 200
    lines: dict[str, dict[str, Any]] = {}
    for line in log:
        lines.setdefault(line["path"], line)  # the first request of each path
    health, authorize, mcp = lines["/healthz"], lines["/authorize"], lines["/mcp"]
    assert (health["method"], health["status"], health["logger"]) == ("GET", 200, "oauthd.access")
    assert health["client_address"] == "127.0.0.1" and health["duration_ms"] >= 0
    assert len(health["request_id"]) == 16  # the route's own id, as on its answer
    assert authorize["status"] == 400
    assert (mcp["method"], mcp["status"]) == ("POST", 401)
    assert "s3cr3t" not in daemon.stdout() and "secret-ish" not in daemon.stdout()


async def test_the_access_log_may_be_off_or_leave_out_mcp(
    tmp_path: Path, spawn_oauthd: Spawn
) -> None:
    for keys, expected in (
        ({"access": False}, set()),
        ({"access_mcp": False}, {"/healthz", "/readyz"}),  # /readyz: wait_ready
    ):
        port = free_port()
        sections = {"storage": {"backend": "memory"}, "log": keys}
        config = write_config(tmp_path / "oauthd.toml", port, sections)  # type: ignore[arg-type]
        daemon = spawn_oauthd(config, port)
        await daemon.wait_ready()
        assert request(port, "GET", "/healthz")[0] == 200
        assert request(port, "POST", "/mcp")[0] == 401
        assert await daemon.stop(signal.SIGTERM) == 0
        assert {line["path"] for line in access_lines(daemon.json_log())} == expected


def logger_for(tmp_path: Path, text: str) -> AccessLogger:
    (tmp_path / "c.toml").write_text(text)
    arguments = access_log_arguments(load_config(tmp_path / "c.toml"))
    logger_class: type[AccessLogger] = arguments["access_log_class"]
    return logger_class(arguments["access_log"], "")


def test_what_a_route_learnt_is_on_the_line_and_trusted_proxies_name_the_client(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logger = logger_for(tmp_path, '[server]\ntrusted_proxies = ["127.0.0.1"]\n')
    request = make_mocked_request(
        "POST",
        "/token?x=1",
        headers={"X-Forwarded-For": "203.0.113.9"},
        transport=_transport("127.0.0.1"),
    )
    request[ACCESS_REQUEST_ID] = "req-1"
    request[ACCESS_CALLER] = Caller("alice", "client-1", "/mcp")
    logger.log(request, web.Response(status=200), 0.0123)  # no loop: written at once
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert (line["level"], line["logger"], line["msg"]) == ("info", "oauthd.access", "request")
    assert line["path"] == "/token" and line["duration_ms"] == 12.3
    assert line["client_address"] == "203.0.113.9"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])
    seen = {k: line[k] for k in ("request_id", "user", "client_id", "resource")}
    assert seen == {
        "request_id": "req-1",
        "user": "alice",
        "client_id": "client-1",
        "resource": "/mcp",
    }


def test_off_is_no_logger(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("[log]\naccess = false\n")
    assert access_log_arguments(load_config(tmp_path / "c.toml")) == {"access_log": None}


def _transport(peer: str) -> Any:
    class Transport:
        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return (peer, 40000) if name == "peername" else default

    return Transport()
