"""The admin socket and `oauthd sessions|clients ...` (design.md section 7).

Against the real daemon in a subprocess, with a small MCP upstream: sessions listed as a
table and as JSON, revocation effective at once (the very next `/mcp` request gets 401,
the refresh token is refused, the MCP session is closed upstream), clients listed and
deleted, a clear error when no daemon runs, and `state inspect` working with or without a
daemon. In-process: the socket's own rules (0600, stale and live sockets, bad requests,
long listings in chunks).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import socket
import stat
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from oauthd.admin import server as admin_server
from oauthd.admin.client import AdminClient, AdminRefused
from oauthd.admin.operations import Admin
from oauthd.clock import FakeClock
from oauthd.config import AdminConfig, default_config
from oauthd.exits import ExitCode
from oauthd.keyring import read_keyring
from oauthd.oauth import AuthServer
from oauthd.store import MemoryStore
from oauthd.users import Users
from tests.support.configs import (
    OTHER_PASSWORD,
    OTHER_PASSWORD_HASH,
    OTHER_USER,
    PASSWORD,
    PASSWORD_HASH,
    USER,
    TomlValue,
    write_config,
    write_secret,
)
from tests.support.daemon import OauthdProcess, run_oauthd
from tests.support.http_client import OauthdClient, Pkce, client_auth
from tests.support.ports import free_port
from tests.support.records import make_client, make_grant
from tests.support.upstream import FakeUpstream, SessionsAnswer
from tests.support.wait import eventually

REDIRECT = "http://127.0.0.1:45678/callback"


# -- the daemon and the command --------------------------------------------------------------


def admin_daemon(directory: Path, upstream_url: str) -> OauthdProcess:
    """alice and bob can sign in; the admin socket is the default, `state/admin.sock`."""
    port = free_port()
    sections: dict[str, dict[str, TomlValue]] = {
        "upstream": {"url": upstream_url},
        "storage": {"backend": "file", "path": "state"},
    }
    users = [(USER, PASSWORD_HASH), (OTHER_USER, OTHER_PASSWORD_HASH)]
    config = write_config(directory / "oauthd.toml", port, sections, users=users)
    return OauthdProcess(directory, config, port)


def admin_socket(daemon: OauthdProcess) -> Path:
    return daemon.directory / "state" / "admin.sock"


async def admin_json(daemon: OauthdProcess, *args: str) -> Any:
    code, out, err = await daemon.command(*args, "--json")
    assert code == 0, f"{args}: exit {code}: {err}\n{daemon.log()[-3000:]}"
    return json.loads(out)


@dataclass
class Login:
    user: str
    app: dict[str, Any]
    tokens: dict[str, Any]

    @property
    def grant_id(self) -> str:
        return str(self.tokens["access_token"]).split(".")[0]


async def login(client: OauthdClient, app: dict[str, Any], user: str, password: str) -> Login:
    """A person signs in through the pages and allows `app`; the app redeems the code."""
    pkce = Pkce.new()
    browser = client.browser()
    page = await browser.authorize(client.authorize_params(app["client_id"], REDIRECT, pkce))
    answer = await browser.sign_in(page, user, password)
    if answer.status == 200:  # the consent page
        answer = await browser.decide(answer)
    code = answer.redirect_query()["code"]
    token = await client.token(
        grant_type="authorization_code",
        code=code,
        code_verifier=pkce.verifier,
        redirect_uri=REDIRECT,
        resource=client.resource,
        **client_auth(app),
    )
    assert token.status == 200, token.text
    return Login(user, app, token.json())


async def mcp_status(client: OauthdClient, who: Login) -> int:
    return (await client.call_mcp(who.tokens["access_token"])).status


# -- against the daemon ----------------------------------------------------------------------


async def test_admin_revoke_is_effective_at_once(tmp_path: Path) -> None:
    sessions = SessionsAnswer()
    async with FakeUpstream(sessions) as upstream:
        daemon = admin_daemon(tmp_path, upstream.url)
        client = OauthdClient(daemon.url, daemon.url)
        try:
            await daemon.start()
            await check_socket_and_listings(daemon, client, sessions)
        finally:
            await client.close()
            daemon.kill()


async def check_socket_and_listings(
    daemon: OauthdProcess, client: OauthdClient, upstream: SessionsAnswer
) -> None:
    mode = os.lstat(admin_socket(daemon)).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600

    editor = await client.register_public([REDIRECT], client_name="Editor App")
    chat = await client.register(
        redirect_uris=[REDIRECT],
        client_name="Chat App",
        token_endpoint_auth_method="client_secret_post",
    )
    logins = [
        await login(client, editor, USER, PASSWORD),
        await login(client, editor, OTHER_USER, OTHER_PASSWORD),
        await login(client, chat, USER, PASSWORD),
        await login(client, chat, OTHER_USER, OTHER_PASSWORD),
    ]
    alice_editor, bob_editor, alice_chat, bob_chat = logins
    for who in logins:
        assert await mcp_status(client, who) == 200

    # The table, for people.
    code, table, err = await daemon.command("sessions", "list")
    assert code == 0, err
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["SESSION", "USER", "PRINCIPAL", "CLIENT"]
    for who in logins:
        (row,) = [line for line in lines if line.startswith(who.grant_id)]
        assert who.user in row and who.app["client_name"] in row and "mcp" in row
    assert lines[-1] == "4 sessions"

    # JSON, for scripts: every field, no token, digest or secret.
    sessions = await admin_json(daemon, "sessions", "list")
    assert sorted(s["id"] for s in sessions) == sorted(w.grant_id for w in logins)
    first = next(s for s in sessions if s["id"] == alice_editor.grant_id)
    assert first["user"] == USER and first["client_id"] == editor["client_id"]
    assert first["client_name"] == "Editor App" and first["scopes"] == ["mcp"]
    assert first["created_at"] <= first["last_used_at"] < first["expires_at"]
    assert first["mcp_sessions"] == 1
    assert not any("hash" in key for s in sessions for key in s)
    bob = await admin_json(daemon, "sessions", "list", "--user", OTHER_USER)
    assert {s["id"] for s in bob} == {bob_editor.grant_id, bob_chat.grant_id}
    of_chat = await admin_json(daemon, "sessions", "list", "--client", chat["client_id"])
    assert {s["id"] for s in of_chat} == {alice_chat.grant_id, bob_chat.grant_id}
    everything = (
        table + json.dumps(sessions) + json.dumps(await admin_json(daemon, "clients", "list"))
    )
    for secret in client.secrets():
        assert secret not in everything

    # Revoke by id: the very next request with its token is refused, its refresh token
    # too, and its MCP session is closed upstream; the others keep working.
    code, out, err = await daemon.command("sessions", "revoke", "--id", alice_editor.grant_id)
    assert code == 0, err
    assert out.splitlines()[-1] == "1 session revoked"
    assert await mcp_status(client, alice_editor) == 401
    refresh = await client.refresh(editor, alice_editor.tokens["refresh_token"])
    assert refresh.status == 400 and refresh.json()["error"] == "invalid_grant"
    await eventually(within=5, check=lambda: "upstream-session-1" in upstream.closed)
    for who in (bob_editor, alice_chat, bob_chat):
        assert await mcp_status(client, who) == 200

    code, _, err = await daemon.command("sessions", "revoke", "--id", alice_editor.grant_id)
    assert code == 1 and "no live session" in err

    # By user, then by client.
    revoked = await admin_json(daemon, "sessions", "revoke", "--user", OTHER_USER)
    assert {s["id"] for s in revoked["revoked"]} == {bob_editor.grant_id, bob_chat.grant_id}
    assert await mcp_status(client, bob_editor) == 401
    assert await mcp_status(client, bob_chat) == 401
    assert await mcp_status(client, alice_chat) == 200
    code, out, err = await daemon.command("sessions", "revoke", "--client", chat["client_id"])
    assert code == 0 and "1 session revoked" in out, err
    assert await mcp_status(client, alice_chat) == 401
    code, out, _ = await daemon.command("sessions", "list")
    assert out == "no sessions\n"
    await eventually(within=5, check=lambda: sorted(upstream.closed) == sorted(upstream.opened))

    await check_clients(daemon, client, editor, chat)
    await check_offline_commands(daemon)


async def check_clients(
    daemon: OauthdProcess, client: OauthdClient, editor: dict[str, Any], chat: dict[str, Any]
) -> None:
    again = await login(client, chat, USER, PASSWORD)
    clients = await admin_json(daemon, "clients", "list")
    assert [c["client_name"] for c in clients] == ["Chat App", "Editor App"]
    chat_view = clients[0]
    assert chat_view["client_id"] == chat["client_id"] and chat_view["source"] == "dcr"
    assert chat_view["auth_method"] == "client_secret_post"
    assert chat_view["redirect_uris"] == [REDIRECT] and chat_view["sessions"] == 1
    assert not any("secret" in key or "hash" in key for c in clients for key in c)
    code, table, err = await daemon.command("clients", "list")
    assert code == 0 and table.splitlines()[0].startswith("CLIENT ID"), err
    assert "Chat App" in table and REDIRECT in table
    stats = await admin_json(daemon, "clients", "stats")
    assert sorted((g["client_name"], g["clients"], g["used"], g["sessions"]) for g in stats) == [
        ("Chat App", 1, 1, 1),
        ("Editor App", 1, 1, 0),
    ]
    assert stats[0]["redirect_uris"] == ["http://127.0.0.1:*/callback"]
    code, table, err = await daemon.command("clients", "stats")
    assert code == 0 and table.splitlines()[0].startswith("NAME"), err
    assert table.endswith("2 registrations of 2 apps\n")

    code, out, err = await daemon.command("clients", "delete", chat["client_id"])
    assert code == 0, err
    assert out == f"deleted client {chat['client_id']} (Chat App); 1 session ended\n"
    assert await mcp_status(client, again) == 401
    refused = await client.refresh(chat, again.tokens["refresh_token"])
    assert refused.status in (400, 401) and refused.json()["error"] == "invalid_client"
    left = await admin_json(daemon, "clients", "list")
    assert [c["client_id"] for c in left] == [editor["client_id"]]
    code, _, err = await daemon.command("clients", "delete", chat["client_id"])
    assert code == 1 and "no client" in err


async def check_offline_commands(daemon: OauthdProcess) -> None:
    code, out, err = await daemon.command("state", "inspect")
    assert code == 0 and "in use by" in out, err

    assert await daemon.stop() == 0, daemon.log()
    assert not admin_socket(daemon).exists(), "the socket outlived the daemon"
    log = daemon.log()
    assert "Traceback" not in log
    events = [json.loads(line).get("event") for line in log.splitlines()]
    assert events.count("admin.ready") == 1 and events.count("admin.revoke") == 3
    assert events.count("admin.client_deleted") == 1
    code, out, err = await daemon.command("sessions", "list")
    assert code == ExitCode.UNAVAILABLE and out == ""
    assert err.strip() == (
        f"oauthd: no oauthd is running on {admin_socket(daemon)} "
        "(start it, or use `oauthd state inspect` offline)"
    )
    code, _, err = await daemon.command("clients", "list")
    assert code == ExitCode.UNAVAILABLE and "no oauthd is running" in err
    code, out, err = await daemon.command("state", "inspect")
    assert code == 0 and "no daemon holds the lock" in out, err
    code, out, err = await daemon.command("state", "verify")
    assert code == 0 and out.startswith("OK:"), err


async def test_serve_refuses_a_socket_path_taken_by_another_file(tmp_path: Path) -> None:
    daemon = admin_daemon(tmp_path, "http://127.0.0.1:9/mcp")
    admin_socket(daemon).parent.mkdir(mode=0o700)
    admin_socket(daemon).write_text("not a socket\n")
    code, _, err = await run_oauthd("serve", "--config", str(daemon.config))
    assert code == ExitCode.OSERR
    assert f"{admin_socket(daemon)} exists and is not a socket" in err
    assert admin_socket(daemon).read_text() == "not a socket\n"
    code, out, err = await daemon.command("state", "inspect")  # the lock was released
    assert code == 0 and "no daemon holds the lock" in out, err


# -- in process ------------------------------------------------------------------------------


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore(FakeClock())


def admin_of(tmp_path: Path, store: MemoryStore) -> Admin:
    config = default_config(tmp_path)
    return Admin(
        store,
        AuthServer(config, store, store.clock, Users(()), keyring=read_keyring(config)),
        config,
    )


@contextlib.asynccontextmanager
async def serving(path: Path, admin: Admin) -> AsyncIterator[admin_server.AdminServer]:
    server = admin_server.AdminServer(path, admin)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def ask_raw(path: Path, line: bytes) -> list[dict[str, Any]]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(line)
        with sock.makefile("rb") as answer:
            return [orjson.loads(reply) for reply in answer]


async def test_the_socket_is_0600_whatever_the_umask_and_gone_after_close(
    tmp_path: Path, store: MemoryStore
) -> None:
    path = tmp_path / "admin.sock"
    old = os.umask(0)
    try:
        async with serving(path, admin_of(tmp_path, store)):
            assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    finally:
        os.umask(old)
    assert not path.exists()


async def test_a_stale_socket_is_replaced_and_a_live_one_is_not(
    tmp_path: Path, store: MemoryStore
) -> None:
    path = tmp_path / "admin.sock"
    with socket.socket(socket.AF_UNIX) as crashed:
        crashed.bind(str(path))  # closed without unlinking: what a crash leaves
    async with serving(path, admin_of(tmp_path, store)):
        assert await asyncio.to_thread(AdminClient(path).sessions) == []
        with pytest.raises(admin_server.AdminSocketError, match="another process answers"):
            await admin_server.AdminServer(path, admin_of(tmp_path, store)).start()
        assert await asyncio.to_thread(AdminClient(path).sessions) == []  # still ours


async def test_a_socket_path_that_cannot_be_bound_is_a_clear_error(
    tmp_path: Path, store: MemoryStore
) -> None:
    long = tmp_path / ("x" * 120) / "admin.sock"
    with pytest.raises(admin_server.AdminSocketError, match="cannot create the admin socket"):
        await admin_server.AdminServer(long, admin_of(tmp_path, store)).start()
    (tmp_path / "a-file").write_text("")
    under_a_file = tmp_path / "a-file" / "run" / "admin.sock"
    with pytest.raises(
        admin_server.AdminSocketError,
        match=f"cannot create the admin socket's directory {tmp_path / 'a-file' / 'run'}: ",
    ):
        await admin_server.AdminServer(under_a_file, admin_of(tmp_path, store)).start()


async def test_a_missing_socket_directory_is_made_0700(tmp_path: Path, store: MemoryStore) -> None:
    """The redis and postgres backends have no state dir: the default socket path
    (`admin.sock` in `storage.path`) did not exist, and serve exited 71."""
    path = tmp_path / "var" / "oauthd" / "admin.sock"
    old = os.umask(0o022)
    try:
        async with serving(path, admin_of(tmp_path, store)):
            assert await asyncio.to_thread(AdminClient(path).sessions) == []
    finally:
        os.umask(old)
    for made in (tmp_path / "var", tmp_path / "var" / "oauthd"):
        assert stat.S_IMODE(os.stat(made).st_mode) == 0o700, made


async def test_close_leaves_a_socket_that_replaced_ours(tmp_path: Path, store: MemoryStore) -> None:
    path = tmp_path / "admin.sock"
    async with serving(path, admin_of(tmp_path, store)):
        path.unlink()
        with socket.socket(socket.AF_UNIX) as other:
            other.bind(str(path))
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"not json\n", "the request is not one JSON line"),
        (b"[1]\n", 'the request needs an "op"'),
        (b'{"op": "sessions.drop"}\n', "unknown operation 'sessions.drop'"),
        (b'{"op": "sessions.list", "args": {"user": 5}}\n', "'user' must be a non-empty string"),
        (
            b'{"op": "sessions.revoke"}\n',
            "say which sessions to revoke: an id, a user, a client or a resource",
        ),
        (b'{"op": "clients.delete"}\n', "say which client to delete"),
        (b'{"op": "clients.delete", "args": {"client": "nope"}}\n', "no client 'nope'"),
        (b"x" * 70_000 + b"\n", "the request is not one JSON line"),
    ],
)
async def test_a_bad_request_gets_an_error_line(
    tmp_path: Path, store: MemoryStore, line: bytes, error: str
) -> None:
    path = tmp_path / "admin.sock"
    async with serving(path, admin_of(tmp_path, store)):
        assert await asyncio.to_thread(ask_raw, path, line) == [{"ok": False, "error": error}]


async def test_a_long_listing_comes_in_chunks(tmp_path: Path, store: MemoryStore) -> None:
    client = make_client(client_name="Big")
    await store.clients.add(client)
    for _ in range(1200):
        await store.grants.add(make_grant(client_id=client.client_id, user="carol"))
    path = tmp_path / "admin.sock"
    async with serving(path, admin_of(tmp_path, store)):
        lines = await asyncio.to_thread(ask_raw, path, b'{"op": "sessions.list"}\n')
        assert [len(line.get("items", ())) for line in lines] == [500, 500, 200, 0]
        assert lines[-1] == {"ok": True, "count": 1200}
        views = await asyncio.to_thread(AdminClient(path).sessions, "carol")
        assert len(views) == 1200 and {v.client_name for v in views} == {"Big"}
        ended = await asyncio.to_thread(AdminClient(path).revoke, None, None, client.client_id)
        assert len(ended) == 1200 and await store.grants.count() == 0
        with pytest.raises(AdminRefused, match="no live session 'gone'"):
            await asyncio.to_thread(AdminClient(path).revoke, "gone")


async def test_client_stats_group_registrations_by_app(tmp_path: Path, store: MemoryStore) -> None:
    now = store.clock.now()
    claude = {"client_name": "Claude Code", "source": "dcr", "expires_at": None}
    used = make_client(
        **claude,
        redirect_uris=("http://localhost:41000/callback",),
        created_at=now - 100,
        last_used_at=now - 50,
    )
    await store.clients.add(used)
    for port, age in ((41001, 90), (41002, 10)):
        await store.clients.add(
            make_client(
                **claude,
                redirect_uris=(f"http://localhost:{port}/callback",),
                created_at=now - age,
                last_used_at=None,
            )
        )
    await store.clients.add(make_client(client_name="Claude Code", last_used_at=None))
    await store.clients.add(make_client(client_name="Doc", source="cimd"))  # not counted
    await store.grants.add(make_grant(client_id=used.client_id))
    path = tmp_path / "admin.sock"
    async with serving(path, admin_of(tmp_path, store)):
        groups = await asyncio.to_thread(AdminClient(path).client_stats)
    assert len(groups) == 2  # same name, another redirect set: another app
    (claude_code,) = [g for g in groups if g.redirect_uris == ("http://localhost:*/callback",)]
    assert (claude_code.clients, claude_code.used, claude_code.never_used) == (3, 1, 2)
    assert claude_code.sessions == 1 and claude_code.last_used_at == now - 50
    assert (claude_code.oldest, claude_code.newest) == (now - 100, now - 10)


async def test_the_memory_backend_has_a_socket_only_where_admin_socket_says(
    tmp_path: Path, store: MemoryStore
) -> None:
    config = default_config(tmp_path)
    auth = AuthServer(config, store, store.clock, Users(()), keyring=read_keyring(config))
    memory = dataclasses.replace(
        config, storage=dataclasses.replace(config.storage, backend="memory")
    )
    async with admin_server.serving(memory, store, auth):
        assert os.listdir(tmp_path) == []  # no socket, no state dir made for one
    named = dataclasses.replace(memory, admin=AdminConfig(socket="here.sock"))
    async with admin_server.serving(named, store, auth):
        assert stat.S_ISSOCK(os.lstat(tmp_path / "here.sock").st_mode)
    assert not (tmp_path / "here.sock").exists()


def ask_as(uid: int, path: Path) -> str:
    """What a process of another user gets from the socket (a forked child that drops to
    `uid`): the error line, or the connect error's name."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no asyncio, no pytest, only a socket
        try:
            os.setgid(uid)
            os.setuid(uid)
            try:
                with socket.socket(socket.AF_UNIX) as sock:
                    sock.settimeout(20)  # generous: CI machines are busy
                    sock.connect(str(path))
                    sock.sendall(b'{"op": "sessions.list"}\n')
                    result = sock.recv(4096)
            except OSError as exc:
                result = type(exc).__name__.encode()
            os.write(write, result)
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as answer:
        text = answer.read().decode()
    os.waitpid(pid, 0)
    return text


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
async def test_another_user_is_kept_out_by_the_mode_and_by_its_credentials(
    tmp_path: Path, store: MemoryStore
) -> None:
    with tempfile.TemporaryDirectory(prefix="oauthd-admin-") as open_dir:
        os.chmod(open_dir, 0o755)  # pytest's tmp dirs are 0700: nobody could even look
        path = Path(open_dir) / "admin.sock"
        async with serving(path, admin_of(tmp_path, store)):
            assert await asyncio.to_thread(ask_as, 65534, path) == "PermissionError"
            os.chmod(path, 0o666)  # as if the mode were lost: the peer's uid still counts
            answer = await asyncio.to_thread(ask_as, 65534, path)
            assert orjson.loads(answer) == {"ok": False, "error": "permission denied"}


async def test_on_redis_the_default_socket_directory_is_made(tmp_path: Path) -> None:
    """`storage.path` unset with redis: its default (var/oauthd beside the config) did not
    exist and serve exited 71; now it is made 0700 and holds the socket."""
    from tests.support.redis_backend import REDIS_URL, redis_probe
    from tests.support.services import service_missing

    absent = await redis_probe()
    if absent is not None:
        service_missing(absent)
    write_secret(tmp_path / "key", "ab" * 32)
    port = free_port()
    sections: dict[str, dict[str, TomlValue]] = {
        "storage": {
            "backend": "redis",
            "redis_url": REDIS_URL,
            "redis_prefix": f"oauthd-test-{os.getpid()}-{port}:",
        },
        "login": {"encryption_key": "file:key"},
    }
    config = write_config(tmp_path / "oauthd.toml", port, sections)
    daemon = OauthdProcess(tmp_path, config, port)
    await daemon.start()
    try:
        assert await admin_json(daemon, "sessions", "list") == []
        socket_dir = tmp_path / "var" / "oauthd"
        assert stat.S_IMODE(os.stat(socket_dir).st_mode) == 0o700
        assert stat.S_ISSOCK(os.lstat(socket_dir / "admin.sock").st_mode)
    finally:
        assert await daemon.stop() == 0, daemon.log()[-3000:]
