"""The real `oauthd` command in subprocesses (design.md sections 3 and 7): start-up only after
the state is loaded, JSON logs, orderly shutdown on SIGTERM/SIGINT with a final snapshot,
the single-writer lock, exit codes, and the small commands."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from oauthd.config import load_config
from oauthd.exits import ExitCode
from oauthd.passwords import parse_password_hash, verify_password
from oauthd.persist.statedir import MARKER, SNAPSHOT
from oauthd.store.inspection import examine
from tests.support.configs import state_config
from tests.support.daemon import Spawn, request, run_oauthd
from tests.support.http_client import OauthdClient
from tests.support.persist import BIG_STATE, make_big_state
from tests.support.ports import free_port


def register(port: int, name: str) -> int:
    body = {"client_name": name, "redirect_uris": ["http://127.0.0.1:9999/callback"]}
    return request(port, "POST", "/register", body)[0]


def snapshot_seq(state: Path) -> int:
    seq: int = json.loads((state / SNAPSHOT).read_bytes())["seq"]
    return seq


def assert_final_snapshot(state: Path, clients: int, grants: int) -> None:
    """The snapshot holds the last change: nothing is left only in the journal."""
    report = examine(state, time.time())
    assert report.damage == []
    assert report.lock_holder is None, "the lock is still held"
    assert snapshot_seq(state) == report.base_seq == report.last_seq > 0
    assert report.journal_records_after_snapshot == 0
    assert report.counts["clients"] == clients and report.counts["grants"] == grants


async def test_serve_loads_first_logs_json_and_stops_cleanly_on_sigterm_and_sigint(
    tmp_path: Path, spawn_oauthd: Spawn
) -> None:
    port = free_port()
    config = state_config(tmp_path, port)
    state = tmp_path / "state"
    await make_big_state(state)

    # OAUTHD_CONFIG instead of --config.
    daemon = spawn_oauthd(None, port, OAUTHD_CONFIG=str(config))
    seen = await daemon.wait_ready()
    assert seen[-1] == "200", f"first answer of /readyz: {seen[-1]} (must not listen early)"
    assert "refused" in seen, "the poll never saw the start-up: the check proves nothing"
    assert request(port, "GET", "/healthz")[0] == 200
    for name in ("one", "two", "three"):
        assert register(port, name) == 201
    before = examine(state, time.time())
    # each registration is two changes: the client and its app's group (oauth/hygiene.py),
    # its audit record riding in the client's frame; the first start also made the first
    # signing key (oauth/signing.py), its record in the key's frame
    assert before.last_seq == before.base_seq + 7, "the changes are in the journal only"
    assert before.counts["signing_keys"] == 1

    assert await daemon.stop(signal.SIGTERM) == 0, daemon.stderr()
    assert_final_snapshot(state, clients=3, grants=BIG_STATE)
    events = daemon.events()
    for event in ("state.loaded", "daemon.ready", "daemon.stopping", "state.closed"):
        assert event in events, (event, events)
    assert events.index("state.loaded") < events.index("daemon.ready")
    assert events.index("daemon.stopping") < events.index("state.closed")
    assert any(d.get("signal") == "SIGTERM" for d in daemon.json_log())
    assert "Traceback" not in daemon.stderr()

    # The lock was released: a new daemon starts on the same dir; SIGINT stops it the same way.
    second = spawn_oauthd(config, port)
    assert (await second.wait_ready())[-1] == "200"
    assert register(port, "four") == 201
    assert await second.stop(signal.SIGINT) == 0, second.stderr()
    assert_final_snapshot(state, clients=4, grants=BIG_STATE)
    assert any(d.get("signal") == "SIGINT" for d in second.json_log())


async def test_in_flight_request_completes_during_shutdown(
    tmp_path: Path, spawn_oauthd: Spawn
) -> None:
    """SIGTERM while a sign-in is being checked (scrypt at ln=18 takes most of a second):
    the daemon stops accepting connections, lets the request finish, then saves and exits.
    The password is wrong on purpose: a random hash with a slow cost is all it needs."""
    port = free_port()
    config = state_config(tmp_path, port)
    salt, digest = (base64.b64encode(os.urandom(n)).decode().rstrip("=") for n in (16, 32))
    with config.open("a") as out:
        out.write(
            f'\n[[login.users]]\nusername = "alice"\n'
            f'password_hash = "scrypt$ln=18,r=8,p=1${salt}${digest}"\n'
        )
    daemon = spawn_oauthd(config, port)
    await daemon.wait_ready()
    client = OauthdClient(daemon.url, daemon.url)
    try:
        browser, page = await client.login_page()
        login = asyncio.create_task(browser.sign_in(page, password="not the password"))
        await asyncio.sleep(0.2)
        assert not login.done(), "the sign-in was not slow: the test proves nothing"
        daemon.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.1)
        assert daemon.proc.poll() is None, "exited with a request in flight"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        response = await login
        assert response.status == 401, response.status
        assert "Wrong username or password" in response.text
    finally:
        await client.close()
    assert await daemon.wait(15) == 0, daemon.stderr()
    assert "daemon.stopped" in daemon.events()
    assert_final_snapshot(tmp_path / "state", clients=1, grants=0)


async def test_second_daemon_on_the_same_state_dir_exits_naming_the_holder(
    tmp_path: Path, spawn_oauthd: Spawn
) -> None:
    port = free_port()
    config = state_config(tmp_path, port)
    first = spawn_oauthd(config, port)
    await first.wait_ready()
    other = tmp_path / "other"
    other.mkdir()
    second = spawn_oauthd(
        state_config(other, free_port(), path=str(tmp_path / "state")), free_port()
    )
    started = time.monotonic()
    code = await second.wait(10)
    assert time.monotonic() - started < 2.0, "the second daemon did not exit at once"
    assert code != 0
    assert f"pid {first.proc.pid}" in second.stderr(), second.stderr()
    assert request(port, "GET", "/readyz")[0] == 200, "the first daemon must be unharmed"
    assert await first.stop() == 0


async def test_config_error_exits_78_naming_the_key(tmp_path: Path) -> None:
    config = state_config(tmp_path, free_port(), save_debounce="fast")
    message = 'storage.save_debounce: expected a duration like "1s", got "fast"'
    for command in ("serve", "check-config"):
        result = await run_oauthd(command, "--config", str(config))
        assert result.code == ExitCode.CONFIG, (command, result.err)
        assert message in result.err and str(config) in result.err
    assert not (tmp_path / "state").exists(), "a config error must touch nothing"
    missing = await run_oauthd("serve")
    assert missing.code == ExitCode.CONFIG and "OAUTHD_CONFIG" in missing.err


async def test_check_config_ok(tmp_path: Path) -> None:
    config = state_config(tmp_path, free_port())
    result = await run_oauthd("check-config", "--config", str(config))
    assert result.code == 0, result.err
    assert "OK" in result.out and str(tmp_path / "state") in result.out
    by_env = await run_oauthd("check-config", env={"OAUTHD_CONFIG": str(config)})
    assert by_env.code == 0 and "OK" in by_env.out


async def test_marker_without_state_refuses_unless_accept_empty_state(
    tmp_path: Path, spawn_oauthd: Spawn
) -> None:
    port = free_port()
    config = state_config(tmp_path, port)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / MARKER).write_text("oauthd state dir\n")
    refused = await run_oauthd("serve", "--config", str(config))
    assert refused.code == ExitCode.CONFIG, refused.err
    assert "--accept-empty-state" in refused.err
    assert sorted(p.name for p in state.iterdir() if p.name != "lock") == [MARKER]

    daemon = spawn_oauthd(config, port, "--accept-empty-state")
    assert (await daemon.wait_ready())[-1] == "200"
    assert await daemon.stop() == 0
    assert (state / SNAPSHOT).exists()
    assert (await run_oauthd("check-config", "--config", str(config))).code == 0


async def test_hash_password_stdin_gives_a_hash_the_config_accepts(tmp_path: Path) -> None:
    result = await run_oauthd("users", "hash-password", "--stdin", stdin="correct horse battery\n")
    assert result.code == 0, result.err
    hashed = result.out.strip()
    assert hashed.startswith(("scrypt$", "$argon2id$")) and "correct" not in hashed
    config = state_config(tmp_path, free_port())
    with config.open("a") as out:
        out.write(f'\n[[login.users]]\nusername = "alice"\npassword_hash = "{hashed}"\n')
    loaded = load_config(config)
    assert [u.username for u in loaded.login.users] == ["alice"]
    stored = parse_password_hash(loaded.login.users[0].password_hash)
    assert verify_password(stored, "correct horse battery")
    assert not verify_password(stored, "wrong")
    empty = await run_oauthd("users", "hash-password", "--stdin", stdin="\n")
    assert empty.code != 0


@pytest.mark.parametrize(
    ("count", "words"),
    [(0, "0 grants"), (1, "1 grant"), (2, "2 grants"), (None, "unknown grants")],
)
async def test_the_status_line_counts_grants_in_english(count: int | None, words: str) -> None:
    """None: the backend is down, the census fails (the line must not)."""
    from types import SimpleNamespace

    from aiohttp import web

    from oauthd.assembly import STORE
    from oauthd.daemon import _describe
    from oauthd.http.keys import METRICS
    from oauthd.metrics import Metrics

    class Store:
        grants = SimpleNamespace(kind="grants")

        async def census(self) -> dict[str, int]:
            if count is None:
                raise ConnectionError("backend down")
            return {"grants": count, "clients": 5}

    app = web.Application()
    app[STORE] = Store()  # type: ignore[assignment]
    app[METRICS] = Metrics()
    await app[METRICS].watch_records(app[STORE])
    runner = SimpleNamespace(addresses=[("127.0.0.1", 8080)])
    line = await _describe(runner, app)  # type: ignore[arg-type]
    assert line == f"serving on 127.0.0.1:8080, {words}"


async def test_the_status_line_says_unknown_while_the_backend_is_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The census keeps the last counts for /metrics; the status line does not pass them
    off as current."""
    from oauthd import metrics_census

    monkeypatch.setattr(metrics_census, "CENSUS_SPACING", 0.0)  # a census at every call
    from types import SimpleNamespace

    from aiohttp import web

    from oauthd.assembly import STORE
    from oauthd.daemon import _describe
    from oauthd.http.keys import METRICS
    from oauthd.metrics import Metrics

    class Store:
        grants = SimpleNamespace(kind="grants")
        down = False

        async def census(self) -> dict[str, int]:
            if self.down:
                raise ConnectionError("backend down")
            return {"grants": 3}

    app = web.Application()
    app[STORE] = store = Store()  # type: ignore[assignment]
    app[METRICS] = Metrics()
    await app[METRICS].watch_records(store)
    runner = SimpleNamespace(addresses=[("127.0.0.1", 8080)])
    assert await _describe(runner, app) == "serving on 127.0.0.1:8080, 3 grants"  # type: ignore[arg-type]
    store.down = True
    assert await _describe(runner, app) == "serving on 127.0.0.1:8080, unknown grants"  # type: ignore[arg-type]
    store.down = False
    assert await _describe(runner, app) == "serving on 127.0.0.1:8080, 3 grants"  # type: ignore[arg-type]
