"""The real `oauthd` command in subprocesses (design.md sections 3 and 7): start-up only after
the state is loaded, JSON logs, orderly shutdown on SIGTERM/SIGINT with a final snapshot,
the single-writer lock, exit codes, and the small commands."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from oauthd.clock import SystemClock
from oauthd.config import load_config
from oauthd.persist.statedir import MARKER, SNAPSHOT
from oauthd.store.file import FileStore, make_engine
from oauthd.store.offline import examine
from oauthd.users import parse_password_hash, verify_password
from tests.support.ports import free_port
from tests.support.records import make_grant

EX_CONFIG = 78
BIG_STATE = 30_000  # grants: loading takes a visible moment


def write_config(directory: Path, port: int, **storage: str) -> Path:
    keys = {"path": "state", "save_interval": "1h", "save_debounce": "1h", "save_max_wait": "1h"}
    lines = [f'{k} = "{v}"' for k, v in {**keys, **storage}.items()]
    config = directory / "oauthd.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\nissuer = "http://127.0.0.1:{port}"\n'
        f'shutdown_timeout = "5s"\n\n[storage]\n' + "\n".join(lines) + "\n"
    )
    return config


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OAUTHD_CONFIG"}
    return {**env, **extra}


def oauthd(*args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oauthd", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(**env),
    )


def request(
    port: int, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = None if body is None else json.dumps(body)
        headers = {} if body is None else {"Content-Type": "application/json"}
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        is_json = response.getheader("Content-Type", "").startswith("application/json")
        return response.status, json.loads(raw) if is_json else raw
    finally:
        conn.close()


def register(port: int, name: str) -> int:
    body = {"client_name": name, "redirect_uris": ["http://127.0.0.1:9999/callback"]}
    return request(port, "POST", "/register", body)[0]


class Daemon:
    """`oauthd serve` in a subprocess; stdout and stderr collected by threads."""

    def __init__(self, config: Path | None, *args: str, **env: str) -> None:
        command = [sys.executable, "-m", "oauthd", "serve", *args]
        if config is not None:
            command += ["--config", str(config)]
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(**env),
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_ready(self, port: int, timeout: float = 20) -> list[str]:
        """Poll /readyz until it answers; what each attempt saw ("refused" or a status)."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"daemon exited: {self.stderr()}"
            try:
                status, _ = request(port, "GET", "/readyz")
            except ConnectionRefusedError:
                seen.append("refused")
                time.sleep(0.01)
                continue
            seen.append(str(status))
            return seen
        raise AssertionError(f"not ready after {timeout} s: {self.stderr()}")

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 15) -> int:
        self.proc.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.wait(10)

    def stderr(self) -> str:
        return "\n".join(self.err)

    def logs(self) -> list[dict[str, Any]]:
        """Every stdout line, parsed: each must be one JSON object."""
        parsed = []
        for line in self.out:
            doc = json.loads(line)
            assert isinstance(doc, dict) and {"ts", "level", "logger", "msg"} <= doc.keys(), line
            parsed.append(doc)
        return parsed

    def events(self) -> list[str]:
        return [doc["event"] for doc in self.logs() if "event" in doc]


@pytest.fixture
def daemons() -> Any:
    started: list[Daemon] = []

    def start(config: Path | None, *args: str, **env: str) -> Daemon:
        daemon = Daemon(config, *args, **env)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


async def make_big_state(path: Path) -> None:
    """A state dir with BIG_STATE grants in its snapshot (built in memory, saved once)."""
    engine = make_engine(path, journaled=True, interval=3600, debounce=3600, max_wait=3600)
    store = await FileStore.open(engine, SystemClock())
    far = time.time() + 86400
    for i in range(BIG_STATE):
        key = f"grant-{i:06d}"
        store.grants.records.set(key, make_grant(id=key, expires_at=far))
    assert await engine.save()
    await store.close()


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
    tmp_path: Path, daemons: Any
) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    state = tmp_path / "state"
    await make_big_state(state)

    # OAUTHD_CONFIG instead of --config.
    daemon = daemons(None, OAUTHD_CONFIG=str(config))
    seen = daemon.wait_ready(port)
    assert seen[-1] == "200", f"first answer of /readyz: {seen[-1]} (must not listen early)"
    assert "refused" in seen, "the poll never saw the start-up: the check proves nothing"
    assert request(port, "GET", "/healthz")[0] == 200
    for name in ("one", "two", "three"):
        assert register(port, name) == 201
    before = examine(state, time.time())
    assert before.last_seq == before.base_seq + 3, "the changes are in the journal only"

    assert daemon.stop(signal.SIGTERM) == 0, daemon.stderr()
    assert_final_snapshot(state, clients=3, grants=BIG_STATE)
    events = daemon.events()
    for event in ("state.loaded", "daemon.ready", "daemon.stopping", "state.closed"):
        assert event in events, (event, events)
    assert events.index("state.loaded") < events.index("daemon.ready")
    assert events.index("daemon.stopping") < events.index("state.closed")
    assert any(d.get("signal") == "SIGTERM" for d in daemon.logs())
    assert "Traceback" not in daemon.stderr()

    # The lock was released: a new daemon starts on the same dir; SIGINT stops it the same way.
    second = daemons(config)
    assert second.wait_ready(port)[-1] == "200"
    assert register(port, "four") == 201
    assert second.stop(signal.SIGINT) == 0, second.stderr()
    assert_final_snapshot(state, clients=4, grants=BIG_STATE)
    assert any(d.get("signal") == "SIGINT" for d in second.logs())


async def test_in_flight_request_completes_during_shutdown(tmp_path: Path, daemons: Any) -> None:
    """SIGTERM while a sign-in is being checked (scrypt at ln=18 takes most of a second):
    the daemon stops accepting connections, lets the request finish, then saves and exits.
    The password is wrong on purpose: a random hash with a slow cost is all it needs."""
    port = free_port()
    config = write_config(tmp_path, port)
    salt, digest = (base64.b64encode(os.urandom(n)).decode().rstrip("=") for n in (16, 32))
    with config.open("a") as out:
        out.write(
            f'\n[[login.users]]\nusername = "alice"\n'
            f'password_hash = "scrypt$ln=18,r=8,p=1${salt}${digest}"\n'
        )
    daemon = daemons(config)
    daemon.wait_ready(port)
    base = f"http://127.0.0.1:{port}"
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(base, cookie_jar=jar) as web:
        form = await _login_form(web)
        login = asyncio.create_task(web.post("/login", data=form))
        await asyncio.sleep(0.2)
        assert not login.done(), "the sign-in was not slow: the test proves nothing"
        daemon.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.1)
        assert daemon.proc.poll() is None, "exited with a request in flight"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        response = await login
        assert response.status == 401, response.status
        assert "Wrong username or password" in await response.text()
    assert daemon.wait(15) == 0, daemon.stderr()
    assert "daemon.stopped" in daemon.events()
    assert_final_snapshot(tmp_path / "state", clients=1, grants=0)


async def _login_form(web: aiohttp.ClientSession) -> dict[str, str]:
    """Register a public client and start an authorization: the login form's fields."""
    registration = await web.post(
        "/register",
        json={
            "client_name": "slow",
            "redirect_uris": ["http://127.0.0.1:9999/callback"],
            "token_endpoint_auth_method": "none",
        },
    )
    assert registration.status == 201, await registration.text()
    client_id = (await registration.json())["client_id"]
    verifier = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": "http://127.0.0.1:9999/callback",
        "code_challenge": challenge.decode().rstrip("="),
        "code_challenge_method": "S256",
        "state": "xyz",
    }
    authorize = await web.get("/authorize", params=params, allow_redirects=False)
    assert authorize.status == 302, await authorize.text()
    page = await web.get(authorize.headers["Location"])
    assert page.status == 200, await page.text()
    fields = dict(re.findall(r'name="([a-z_]+)" value="([^"]*)"', await page.text()))
    assert {"csrf_token", "request"} <= fields.keys(), fields
    return {**fields, "username": "alice", "password": "not the password"}


def test_second_daemon_on_the_same_state_dir_exits_naming_the_holder(
    tmp_path: Path, daemons: Any
) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    first = daemons(config)
    first.wait_ready(port)
    other = tmp_path / "other"
    other.mkdir()
    second = daemons(write_config(other, free_port(), path=str(tmp_path / "state")))
    started = time.monotonic()
    code = second.wait(timeout=10)
    assert time.monotonic() - started < 2.0, "the second daemon did not exit at once"
    assert code != 0
    assert f"pid {first.proc.pid}" in second.stderr(), second.stderr()
    assert request(port, "GET", "/readyz")[0] == 200, "the first daemon must be unharmed"
    assert first.stop() == 0


def test_config_error_exits_78_naming_the_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port(), save_debounce="fast")
    message = 'storage.save_debounce: expected a duration like "1s", got "fast"'
    for command in ("serve", "check-config"):
        result = oauthd(command, "--config", str(config))
        assert result.returncode == EX_CONFIG, (command, result.stderr)
        assert message in result.stderr and str(config) in result.stderr
    assert not (tmp_path / "state").exists(), "a config error must touch nothing"
    missing = oauthd("serve")
    assert missing.returncode == EX_CONFIG and "OAUTHD_CONFIG" in missing.stderr


def test_check_config_ok(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port())
    result = oauthd("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and str(tmp_path / "state") in result.stdout
    by_env = oauthd("check-config", OAUTHD_CONFIG=str(config))
    assert by_env.returncode == 0 and "OK" in by_env.stdout


def test_marker_without_state_refuses_unless_accept_empty_state(
    tmp_path: Path, daemons: Any
) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / MARKER).write_text("oauthd state dir\n")
    refused = oauthd("serve", "--config", str(config))
    assert refused.returncode == EX_CONFIG, refused.stderr
    assert "--accept-empty-state" in refused.stderr
    assert sorted(p.name for p in state.iterdir() if p.name != "lock") == [MARKER]

    daemon = daemons(config, "--accept-empty-state")
    assert daemon.wait_ready(port)[-1] == "200"
    assert daemon.stop() == 0
    assert (state / SNAPSHOT).exists()
    assert oauthd("check-config", "--config", str(config)).returncode == 0


def test_hash_password_stdin_gives_a_hash_the_config_accepts(tmp_path: Path) -> None:
    result = oauthd("users", "hash-password", "--stdin", stdin="correct horse battery\n")
    assert result.returncode == 0, result.stderr
    hashed = result.stdout.strip()
    assert hashed.startswith(("scrypt$", "$argon2id$")) and "correct" not in hashed
    config = write_config(tmp_path, free_port())
    with config.open("a") as out:
        out.write(f'\n[[login.users]]\nusername = "alice"\npassword_hash = "{hashed}"\n')
    loaded = load_config(config)
    assert [u.username for u in loaded.login.users] == ["alice"]
    stored = parse_password_hash(loaded.login.users[0].password_hash)
    assert verify_password(stored, "correct horse battery")
    assert not verify_password(stored, "wrong")
    empty = oauthd("users", "hash-password", "--stdin", stdin="\n")
    assert empty.returncode != 0
