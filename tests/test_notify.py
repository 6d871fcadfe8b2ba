"""The systemd notify protocol (oauthd/notify.py) spoken by the real daemon to a fake
`$NOTIFY_SOCKET`: READY=1 only once the port answers, never when the state fails to load;
WATCHDOG=1 from the event loop (none while the loop is blocked); STOPPING=1 then exit 0 on
SIGTERM with the in-flight request completed."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oauthd.exits import ExitCode
from oauthd.notify import Notifier
from oauthd.persist.statedir import MARKER
from tests.support.configs import state_config
from tests.support.daemon import Spawn, request, run_oauthd
from tests.support.http_client import OauthdClient
from tests.support.notify import Message, NotifyListener
from tests.support.persist import BIG_STATE, make_big_state
from tests.support.ports import free_port

BLOCKER = Path(__file__).parent / "support" / "scripts" / "block_loop"


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifyListener]:
    fake = NotifyListener(tmp_path / "notify.sock")
    yield fake
    fake.close()


# -- the protocol, in process ----------------------------------------------------------------


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2)
    return sock


def test_notifier_is_a_no_op_without_notify_socket() -> None:
    notifier = Notifier({"WATCHDOG_USEC": "200000"})
    assert not notifier.enabled and notifier.watchdog_interval is None
    assert notifier.send("READY=1") is False


def test_notifier_speaks_to_an_abstract_socket_and_checks_watchdog_pid() -> None:
    name = f"oauthd-test-{os.getpid()}-{time.monotonic_ns()}"
    with _receiver("\0" + name) as sock:
        env = {"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "30000000"}
        notifier = Notifier(env)
        assert notifier.watchdog_interval == 15.0
        notifier.ready("serving on 127.0.0.1:1, 0 grants")
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving on 127.0.0.1:1, 0 grants"
        notifier.reloading()
        reloading = sock.recv(4096).decode().split("\n")
        assert reloading[0] == "RELOADING=1" and reloading[1].startswith("MONOTONIC_USEC=")
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert 0 <= now - int(reloading[1].partition("=")[2]) < 5_000_000
        notifier.close()
    # The watchdog is for the process WATCHDOG_PID names, when it is set.
    mine = Notifier({**env, "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_interval == 15.0
    assert Notifier({**env, "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert Notifier({**env, "WATCHDOG_USEC": "0"}).watchdog_interval is None


def test_notifier_survives_a_service_manager_that_went_away(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert notifier.enabled
    assert notifier.send("STATUS=anything") is False  # logged once, never raised
    assert notifier.send("STATUS=again") is False


# -- the daemon --------------------------------------------------------------------------------


async def test_ready_only_after_the_port_answers(tmp_path: Path, spawn_oauthd: Spawn) -> None:
    """READY=1 is sent once the state is loaded and the port is bound: at the moment it
    arrives, /healthz answers. The state is big enough that the load is seen from outside."""
    port = free_port()
    config = state_config(tmp_path, port)
    await make_big_state(tmp_path / "state")
    at_ready: list[int | str] = []

    def on_message(message: Message) -> None:
        if "READY=1" in message.lines:  # in the reader thread, before anything else happens
            try:
                at_ready.append(request(port, "GET", "/healthz")[0])
            except OSError as exc:
                at_ready.append(repr(exc))

    fake = NotifyListener(tmp_path / "notify.sock", on_message)
    try:
        daemon = spawn_oauthd(config, port, NOTIFY_SOCKET=fake.address)
        seen = await daemon.wait_ready()
        assert "refused" in seen, "the poll never saw the start-up: the check proves nothing"
        ready = fake.wait_for("READY=1")[0]
        assert at_ready[:1] == [200], f"READY=1 arrived before the port answered: {at_ready}"
        assert ready.get("STATUS") == f"serving on 127.0.0.1:{port}, {BIG_STATE} grants"
        statuses = [m.get("STATUS") for m in fake.having("STATUS=")]
        assert statuses[0] == "loading the state", statuses
        assert fake.having("READY=1")[0] is ready
        assert await daemon.stop() == 0, daemon.stderr()
        assert len(fake.having("READY=1")) == 1
        assert fake.having("STOPPING=1"), fake.all_lines()
    finally:
        fake.close()


async def test_no_ready_when_the_state_fails_to_load(
    tmp_path: Path, listener: NotifyListener
) -> None:
    """A marker without state files refuses to start (exit 78): no READY=1, ever, and the
    reason is in STATUS= for `systemctl status`."""
    config = state_config(tmp_path, free_port())
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / MARKER).write_text("oauthd state dir\n")
    env = {"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "200000"}
    result = await run_oauthd("serve", "--config", str(config), env=env)
    assert result.code == ExitCode.CONFIG, result.err
    await asyncio.sleep(0.1)  # a datagram sent just before the exit is read by now
    lines = listener.all_lines()
    assert "READY=1" not in lines, lines
    failed = [line for line in lines if line.startswith("STATUS=failed to start")]
    assert failed and "--accept-empty-state" in failed[0], lines


def _watchdogs(fake: NotifyListener, start: float, end: float) -> list[float]:
    return [m.at for m in fake.having("WATCHDOG=1") if start <= m.at <= end]


def test_watchdog_comes_from_the_event_loop(
    tmp_path: Path, listener: NotifyListener, spawn_oauthd: Spawn
) -> None:
    """WATCHDOG_USEC=200000: WATCHDOG=1 every 0.1 s. Then the event loop is blocked for
    1 s from outside (SIGUSR1 runs a sleeping Python handler on the main thread, while the
    process's other threads run on; see tests/support/scripts/block_loop). A request sent meanwhile
    is answered only when the block ends, and no WATCHDOG=1 arrives while it waits.
    Afterwards the watchdog resumes."""
    port = free_port()
    config = state_config(tmp_path, port)
    daemon = spawn_oauthd(
        config,
        port,
        NOTIFY_SOCKET=listener.address,
        WATCHDOG_USEC="200000",
        PYTHONPATH=str(BLOCKER),
        OAUTHD_TEST_BLOCK_SECONDS="1.0",
    )
    ready = listener.wait_for("READY=1")[0].at
    time.sleep(1.0)
    steady = _watchdogs(listener, ready, ready + 1.0)
    assert len(steady) >= 6, steady  # about 10; slack for a slow CI machine
    assert max(b - a for a, b in itertools.pairwise(steady)) < 0.5

    daemon.proc.send_signal(signal.SIGUSR1)
    time.sleep(0.15)  # the handler sleeps on the main thread by now
    sent = time.monotonic()
    assert request(port, "GET", "/healthz")[0] == 200
    answered = time.monotonic()
    assert answered - sent >= 0.5, "the loop was not blocked: the test proves nothing"
    time.sleep(0.5)
    during = _watchdogs(listener, sent + 0.1, answered - 0.1)
    assert during == [], f"WATCHDOG=1 while the loop was blocked: {during}"
    after = _watchdogs(listener, answered, time.monotonic())
    assert len(after) >= 3, "the watchdog did not resume"
    assert daemon.proc.poll() is None
    assert asyncio.run(daemon.stop()) == 0, daemon.stderr()


async def test_stopping_then_exit_0_with_the_in_flight_request_completed(
    tmp_path: Path, listener: NotifyListener, spawn_oauthd: Spawn
) -> None:
    """SIGTERM during a slow sign-in (scrypt at ln=18): STOPPING=1 arrives at once, before
    the sign-in's answer; the answer still comes; then the daemon exits 0. A SIGHUP while
    it drains is ignored (its default action would kill the process)."""
    port = free_port()
    config = state_config(tmp_path, port)
    salt, digest = (base64.b64encode(os.urandom(n)).decode().rstrip("=") for n in (16, 32))
    with config.open("a") as out:
        out.write(
            f'\n[[login.users]]\nusername = "alice"\n'
            f'password_hash = "scrypt$ln=18,r=8,p=1${salt}${digest}"\n'
        )
    daemon = spawn_oauthd(config, port, NOTIFY_SOCKET=listener.address)
    listener.wait_for("READY=1")
    client = OauthdClient(daemon.url, daemon.url)
    try:
        browser, page = await client.login_page()
        login = asyncio.create_task(browser.sign_in(page, password="not the password"))
        await asyncio.sleep(0.2)
        assert not login.done(), "the sign-in was not slow: the test proves nothing"
        daemon.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.05)
        daemon.proc.send_signal(signal.SIGHUP)  # a reload while draining: ignored, not fatal
        response = await login
        answered = time.monotonic()
        assert response.status == 401, response.status
        assert "Wrong username or password" in response.text
    finally:
        await client.close()
    assert await daemon.wait(15) == 0, daemon.stderr()
    (stopping,) = listener.wait_for("STOPPING=1")
    assert stopping.at < answered, "STOPPING=1 must come when shutdown starts"
    after = listener.messages[listener.messages.index(stopping) + 1 :]
    assert not [m for m in after if "READY=1" in m.lines], after
    assert "daemon.stopped" in daemon.events()
    assert "config.reload_ignored" in daemon.events()
    assert not listener.having("RELOADING=1")
