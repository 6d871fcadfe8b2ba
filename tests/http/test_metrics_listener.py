"""/metrics behind a reverse proxy and on a listener of its own: the allow-list is checked
against the client address (`oauthd.peers`), so that a local proxy does not make the
metrics public; with `metrics.listen` they are served there and not on `server.listen`."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

from oauthd.exits import ExitCode
from tests.support.configs import state_config
from tests.support.daemon import Spawn, request, run_oauthd
from tests.support.ports import free_port
from tests.support.scripted_run import start

OUTSIDE = {"X-Forwarded-For": "203.0.113.9"}
FORGED = {"X-Forwarded-For": "127.0.0.1, 203.0.113.9"}  # the client wrote the left part
INSIDE = {"X-Forwarded-For": "127.0.0.1"}  # a local client, through the local proxy


async def test_behind_a_trusted_proxy_the_allow_list_sees_the_client(tmp_path: Path) -> None:
    running = await start(tmp_path, server={"trusted_proxies": ("127.0.0.1/32",)})
    try:
        outside = await running.client.call("GET", "/metrics", headers=OUTSIDE)
        assert outside.status == 403 and outside.json()["error"] == "access_denied"
        assert "oauthd_" not in outside.text
        assert (await running.client.call("GET", "/metrics", headers=FORGED)).status == 403
        inside = await running.client.call("GET", "/metrics", headers=INSIDE)
        assert inside.status == 200 and "oauthd_" in inside.text
        refused = (
            'oauthd_refusals_total{endpoint="/metrics",error="access_denied",'
            'reason="address_not_allowed"} 2.0'
        )
        assert refused in inside.text  # counted with its reason, as every 403
    finally:
        await running.close()


async def test_without_trusted_proxies_the_peer_is_the_client(tmp_path: Path) -> None:
    running = await start(tmp_path, metrics={"allow": ("10.0.0.0/8",)})
    try:
        forged = await running.client.call(
            "GET", "/metrics", headers={"X-Forwarded-For": "10.0.0.1"}
        )
        assert forged.status == 403
    finally:
        await running.close()


async def test_metrics_on_a_listener_of_their_own(tmp_path: Path, spawn_oauthd: Spawn) -> None:
    port, metrics_port = free_port(), free_port()
    config = state_config(tmp_path, port)
    config.write_text(config.read_text() + f'\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n')
    daemon = spawn_oauthd(config, port)
    assert (await daemon.wait_ready())[-1] == "200"
    try:
        status, body = request(metrics_port, "GET", "/metrics")
        assert status == 200 and b"oauthd_records" in body
        assert request(metrics_port, "GET", "/healthz")[0] == 404  # nothing else there
        assert request(port, "GET", "/metrics")[0] == 404  # and not on the main listener
        assert request(port, "GET", "/healthz")[0] == 200
    finally:
        assert await daemon.stop(signal.SIGTERM) == 0, daemon.stderr()
    ready = [d for d in daemon.json_log() if d.get("event") == "daemon.ready"]
    assert ready and ready[0]["metrics_listen"] == f"127.0.0.1:{metrics_port}"


async def test_a_metrics_port_in_use_is_one_line_naming_the_key(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        config = state_config(tmp_path, port)
        config.write_text(config.read_text() + f'\n[metrics]\nlisten = "127.0.0.1:{busy}"\n')
        result = await run_oauthd("serve", "--config", str(config))
    assert result.code == ExitCode.OSERR, result.err
    assert f"cannot listen on 127.0.0.1:{busy} (metrics.listen): " in result.err
    assert "Traceback" not in result.err
