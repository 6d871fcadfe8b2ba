"""SIGHUP (oauthd/reload.py) on the real daemon: the local users and the log level change
while serving, with RELOADING=1 then READY=1 sent to a fake `$NOTIFY_SOCKET`, an open
keep-alive connection untouched, other changed keys logged as needing a restart, and a
broken config keeping the running one with the reason logged."""

from __future__ import annotations

import http.client
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest

from oauthd.passwords import hash_password
from tests.support.configs import state_config
from tests.support.daemon import OauthdProcess, Spawn
from tests.support.http_client import OauthdClient
from tests.support.notify import Message, NotifyListener
from tests.support.ports import free_port

OLD, NEW = "old correct horse", "new battery staple"


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifyListener]:
    fake = NotifyListener(tmp_path / "notify.sock")
    yield fake
    fake.close()


def write(config: Path, base: str, users: dict[str, str], tail: str = "") -> None:
    """`base` (the [server] and [storage] sections) plus the users and `tail`."""
    blocks = [
        f'[[login.users]]\nusername = "{name}"\npassword_hash = "{hashed}"\n'
        for name, hashed in users.items()
    ]
    config.write_text(base + "\n" + "\n".join(blocks) + tail)


async def sign_in(port: int, username: str, password: str) -> int:
    """The status of a sign-in: 303 (on to consent) or 401 (wrong username or password)."""
    base = f"http://127.0.0.1:{port}"
    client = OauthdClient(base, base)
    try:
        browser, page = await client.login_page()
        form = page.form()
        typed = {**form.fields, "username": username, "password": password}
        return (await browser.request("POST", urljoin(page.url, form.action), data=typed)).status
    finally:
        await client.close()


def hup(daemon: OauthdProcess, fake: NotifyListener) -> Message:
    """SIGHUP, then wait for the READY=1 that ends the reload; return the RELOADING=1."""
    reloads = len(fake.having("RELOADING=1"))
    readies = len(fake.having("READY=1"))
    daemon.proc.send_signal(signal.SIGHUP)
    fake.wait_for("READY=1", readies + 1)
    reloading = fake.having("RELOADING=1")
    assert len(reloading) == reloads + 1, fake.all_lines()
    assert reloading[-1].at < fake.having("READY=1")[-1].at
    return reloading[-1]


def logged(daemon: OauthdProcess, event: str) -> list[dict[str, Any]]:
    time.sleep(0.05)  # the lines written with the READY=1 reach the reader thread
    return [doc for doc in daemon.json_log() if doc.get("event") == event]


async def test_sighup_reloads_users_and_log_level_keeping_connections(
    tmp_path: Path, listener: NotifyListener, spawn_oauthd: Spawn
) -> None:
    port = free_port()
    config = state_config(tmp_path, port)
    base = config.read_text()
    old_hash, new_hash, bob_hash = hash_password(OLD), hash_password(NEW), hash_password("b0b")
    write(config, base, {"alice": old_hash, "carol": old_hash}, '\n[log]\nlevel = "info"\n')
    daemon = spawn_oauthd(config, port, NOTIFY_SOCKET=listener.address)
    listener.wait_for("READY=1")
    assert await sign_in(port, "alice", OLD) == 303

    keep_alive = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    keep_alive.request("GET", "/healthz")
    assert keep_alive.getresponse().read() and keep_alive.sock is not None
    sock, local = keep_alive.sock, keep_alive.sock.getsockname()
    assert not [d for d in daemon.json_log() if d["level"] == "debug"]

    # alice's password changes, carol goes, bob comes; debug logs; a key needing a restart.
    write(
        config,
        base.replace('save_interval = "1h"', 'save_interval = "2h"'),
        {"alice": new_hash, "bob": bob_hash},
        '\n[log]\nlevel = "debug"\n',
    )
    reloading = hup(daemon, listener)
    usec = int(reloading.get("MONOTONIC_USEC") or 0)
    assert 0 < time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000 - usec < 10_000_000

    keep_alive.request("GET", "/healthz")
    answer = keep_alive.getresponse()
    assert answer.status == 200 and json.loads(answer.read()) == {"status": "ok"}
    assert keep_alive.sock is sock and sock.getsockname() == local, "the connection was replaced"
    keep_alive.close()

    assert await sign_in(port, "alice", OLD) == 401
    assert await sign_in(port, "alice", NEW) == 303
    assert await sign_in(port, "bob", "b0b") == 303
    assert await sign_in(port, "carol", OLD) == 401

    (users,) = logged(daemon, "config.users_reloaded")
    assert (users["added"], users["removed"], users["changed"]) == (["bob"], ["carol"], ["alice"])
    (level,) = logged(daemon, "config.log_level")
    assert (level["from"], level["to"]) == ("info", "debug")
    (restart,) = logged(daemon, "config.restart_needed")
    assert restart["msg"] == "storage.save_interval changed: restart to apply"
    debug = [d for d in daemon.json_log() if d["level"] == "debug"]
    assert debug, "no debug line after the reload"
    output = daemon.stdout()
    for hashed in (old_hash, new_hash, bob_hash):
        assert hashed.rsplit("$", 1)[1] not in output, "a password hash was logged"
    assert await daemon.stop() == 0, daemon.stderr()


async def test_broken_config_keeps_the_running_one(
    tmp_path: Path, listener: NotifyListener, spawn_oauthd: Spawn
) -> None:
    port = free_port()
    config = state_config(tmp_path, port)
    base = config.read_text()
    write(config, base, {"alice": hash_password(OLD)})
    daemon = spawn_oauthd(config, port, NOTIFY_SOCKET=listener.address)
    listener.wait_for("READY=1")

    # A bad hash for a new password: the file does not load, alice keeps the old one.
    write(config, base, {"alice": "scrypt$not-a-hash"}, '\n[log]\nlevel = "debug"\n')
    hup(daemon, listener)
    (failed,) = logged(daemon, "config.reload_failed")
    assert failed["level"] == "error"
    assert "login.users[0].password_hash" in failed["reason"], failed
    assert str(config) in failed["reason"]
    assert "not-a-hash" not in daemon.stdout()
    status = listener.having("READY=1")[-1].get("STATUS") or ""
    assert "last reload failed" in status and "password_hash" in status
    assert await sign_in(port, "alice", OLD) == 303
    assert not logged(daemon, "config.reloaded")
    assert not [d for d in daemon.json_log() if d["level"] == "debug"], "the log level changed"

    # Not TOML at all: same.
    config.write_text(base + "\n[login\n")
    hup(daemon, listener)
    failures = logged(daemon, "config.reload_failed")
    assert len(failures) == 2 and "invalid TOML" in failures[1]["reason"]
    assert await sign_in(port, "alice", OLD) == 303
    assert await daemon.stop() == 0, daemon.stderr()
