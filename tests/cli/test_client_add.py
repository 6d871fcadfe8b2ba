"""oauthd/cli/client_add.py: `oauthd clients add` in process (`main`), against a real admin
socket served in process by an `Admin` over a memory store and a real `AuthServer`: what
the command line alone refuses (64, 66, and 65 for a JWKS file it cannot send), what the
daemon refuses (65), and what a success prints (text and `--json`) and stores."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from oauthd import crypto
from oauthd.admin import server as admin_server
from oauthd.admin.operations import Admin
from oauthd.cli import main
from oauthd.cli.client_add import JWT_BEARER, MAX_JWKS
from oauthd.clock import FakeClock
from oauthd.config import Config, ResourceConfig, default_config
from oauthd.keyring import read_keyring
from oauthd.model import Client
from oauthd.oauth import AuthServer
from oauthd.store import MemoryStore
from oauthd.users import Users
from tests.support.jwts import Signer

ISSUER = "http://127.0.0.1:8080"  # the default config's
NOTES, FILES = f"{ISSUER}/mcp", f"{ISSUER}/files/mcp"
SAVED_MESSAGE = "(the secret is shown this once: store it now)"


def two_resources(tmp_path: Path) -> Config:
    base = default_config(tmp_path)
    return dataclasses.replace(
        base,
        resource=(
            ResourceConfig("/mcp", "Notes", base.upstream, ("mcp",)),
            ResourceConfig("/files/mcp", "Files", base.upstream, ("files:read",)),
        ),
    )


@dataclass
class Daemon:
    """The admin socket of a daemon, served in this process, and its store."""

    socket: Path
    store: MemoryStore
    capsys: pytest.CaptureFixture[str]

    async def add(self, *argv: str) -> tuple[int, str, str]:
        """`oauthd clients add ARGV --socket S`: exit code, stdout, stderr."""
        self.capsys.readouterr()
        full = ["clients", "add", *argv, "--socket", str(self.socket)]
        code = await asyncio.to_thread(main, full)
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err

    async def clients(self) -> list[Client]:
        return [c async for c in self.store.clients.scan()]

    async def only_client(self) -> Client:
        [client] = await self.clients()
        return client


@pytest.fixture
async def daemon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> AsyncIterator[Daemon]:
    store = MemoryStore(FakeClock())
    config = two_resources(tmp_path)
    auth = AuthServer(config, store, store.clock, Users(()), keyring=read_keyring(config))
    path = tmp_path / "admin.sock"
    server = admin_server.AdminServer(path, Admin(store, auth, config))
    await server.start()
    try:
        yield Daemon(path, store, capsys)
    finally:
        await server.close()


def jwks_file(tmp_path: Path, document: object, name: str = "client.jwks") -> Path:
    path = tmp_path / name
    path.write_bytes(orjson.dumps(document))
    return path


# -- refused on the command line -------------------------------------------------------------

BASIC = ["--name", "robot", "--grant", "client_credentials"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--auth", "none"], "argument --auth: invalid choice: 'none'"),
        (["--auth", "tls_client_auth"], "argument --auth: invalid choice: 'tls_client_auth'"),
        (
            ["--auth", "private_key_jwt", "--jwks-file", "k.jwks", "--jwks-uri", "https://a/k"],
            "argument --jwks-uri: not allowed with argument --jwks-file",
        ),
        (["--auth", "private_key_jwt"], "--auth private_key_jwt needs --jwks-file or --jwks-uri"),
        (
            ["--auth", "client_secret_basic", "--jwks-uri", "https://keys.example/jwks"],
            "--jwks-file and --jwks-uri are for private_key_jwt, not client_secret_basic",
        ),
    ],
    ids=["auth-none", "auth-unknown", "both-key-options", "jwt-without-keys", "secret-with-keys"],
)
async def test_a_bad_command_line_exits_64_and_creates_nothing(
    daemon: Daemon, argv: list[str], message: str
) -> None:
    code, out, err = await daemon.add(*BASIC, *argv)
    assert (code, out) == (64, "")
    assert message in err
    assert await daemon.clients() == []


async def test_a_missing_name_or_grant_is_a_usage_error(daemon: Daemon) -> None:
    code, _, err = await daemon.add("--grant", "client_credentials", "--auth", "client_secret_post")
    assert code == 64 and "the following arguments are required: --name" in err
    code, _, err = await daemon.add("--name", "robot", "--auth", "client_secret_post")
    assert code == 64 and "the following arguments are required: --grant" in err
    assert await daemon.clients() == []


async def test_an_unreadable_jwks_file_exits_66(daemon: Daemon, tmp_path: Path) -> None:
    for unreadable in (tmp_path / "missing.jwks", tmp_path):  # no such file, a directory
        code, out, err = await daemon.add(
            *BASIC, "--auth", "private_key_jwt", "--jwks-file", str(unreadable)
        )
        assert (code, out) == (66, "")
        assert err.startswith(f"oauthd: cannot read {unreadable}: ")
    assert await daemon.clients() == []


async def test_a_jwks_file_too_large_or_not_text_exits_65_before_the_daemon(
    daemon: Daemon, tmp_path: Path
) -> None:
    big = tmp_path / "big.jwks"
    big.write_bytes(b" " * (MAX_JWKS + 1))
    binary = tmp_path / "binary.jwks"
    binary.write_bytes(b"\xff\xfe{}")
    for path, message in [
        (big, f"is larger than {MAX_JWKS} bytes"),
        (binary, "is not UTF-8 text (a JWKS is JSON)"),
    ]:
        code, out, err = await daemon.add(
            *BASIC, "--auth", "private_key_jwt", "--jwks-file", str(path)
        )
        assert (code, out, err) == (65, "", f"oauthd: {path} {message}\n")
    assert await daemon.clients() == []


# -- refused by the daemon -------------------------------------------------------------------


async def test_what_the_daemon_refuses_exits_65_and_creates_nothing(
    daemon: Daemon, tmp_path: Path
) -> None:
    signer = Signer.ec()
    private = jwks_file(tmp_path, signer.private_jwks(), "private.jwks")
    not_json = tmp_path / "not.jwks"
    not_json.write_text("keys: none")
    secret = [*BASIC, "--auth", "client_secret_basic"]
    jwt = [*BASIC, "--auth", "private_key_jwt"]
    cases = [
        ([*secret, "--scope", "admin"], "scope 'admin' is not offered by this server"),
        ([*secret, "--resource", "/nowhere/mcp"], "unknown resource; this server protects"),
        ([*secret, "--resource", "https://elsewhere.example/mcp"], "unknown resource"),
        ([*jwt, "--jwks-file", str(private)], "the JWKS holds a private or symmetric key"),
        ([*jwt, "--jwks-file", str(not_json)], "the JWKS is not JSON"),
        (
            [*jwt, "--jwks-uri", "http://keys.example/jwks"],
            "jwks_uri must be an https URL, not 'http://keys.example/jwks'",
        ),
        (
            ["--name", "robot", "--grant", "authorization_code", "--auth", "client_secret_basic"],
            "grant 'authorization_code' is not one an operator creates clients for",
        ),
        (["--name", "  ", *secret[2:]], "the name must be 1 to"),
    ]
    for argv, message in cases:
        code, out, err = await daemon.add(*argv)
        assert (code, out) == (65, ""), argv
        assert err.startswith("oauthd: ") and message in err, (argv, err)
    assert await daemon.clients() == []


# -- created ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_a_secret_client_in_text(daemon: Daemon, method: str) -> None:
    code, out, err = await daemon.add(*BASIC, "--auth", method)
    assert (code, err) == (0, "")
    client = await daemon.only_client()
    first, second, saved, created = out.splitlines()
    assert first == f"client_id: {client.client_id}"
    assert second.startswith("client_secret: ")
    secret = second.removeprefix("client_secret: ")
    assert crypto.secret_matches(secret, client.secret_hash)
    assert out.count(secret) == 1
    assert saved == SAVED_MESSAGE
    assert created == f"created robot ({method}, service)"
    # what the store holds: an operator's client, every offered scope, no default resource
    assert client.source == "admin"
    assert client.client_name == "robot"
    assert client.grant_types == ("client_credentials",)
    assert client.token_endpoint_auth_method == method
    assert client.redirect_uris == ()
    assert client.scope == "mcp files:read"
    assert client.resource is None
    assert (client.jwks, client.jwks_uri) == (None, None)


async def test_a_secret_client_in_json_with_scope_resource_and_both_grants(
    daemon: Daemon,
) -> None:
    code, out, err = await daemon.add(
        "--name",
        "indexer",
        "--grant",
        "client_credentials",
        "--grant",
        "jwt-bearer",
        "--grant",
        JWT_BEARER,  # the same grant twice: once
        "--auth",
        "client_secret_post",
        "--scope",
        "files:read",
        "--resource",
        "/files/mcp",
        "--json",
    )
    assert (code, err) == (0, "")
    made = json.loads(out)
    client = await daemon.only_client()
    assert set(made) == {"client_id", "client_secret", "client"}
    assert made["client_id"] == client.client_id == made["client"]["client_id"]
    secret = made["client_secret"]
    assert crypto.secret_matches(secret, client.secret_hash)
    assert out.count(secret) == 1  # nowhere in the client's view
    shown = made["client"]
    assert shown["source"] == "admin"
    assert shown["auth_method"] == "client_secret_post"
    assert shown["grant_types"] == ["client_credentials", JWT_BEARER]
    assert (shown["scope"], shown["resource"], shown["sessions"]) == ("files:read", FILES, 0)
    assert shown["principal"] == "user service"
    assert client.source == "admin"
    assert client.grant_types == ("client_credentials", JWT_BEARER)
    assert (client.scope, client.resource) == ("files:read", FILES)


async def test_a_resource_named_by_its_identifier(daemon: Daemon) -> None:
    code, _, err = await daemon.add(
        *BASIC, "--auth", "client_secret_basic", "--resource", NOTES, "--scope", "mcp"
    )
    assert (code, err) == (0, "")
    client = await daemon.only_client()
    assert (client.resource, client.scope) == (NOTES, "mcp")


async def test_a_private_key_jwt_client_with_a_jwks_file_has_no_secret(
    daemon: Daemon, tmp_path: Path
) -> None:
    signer = Signer.rsa()
    path = jwks_file(tmp_path, signer.jwks())
    code, out, err = await daemon.add(*BASIC, "--auth", "private_key_jwt", "--jwks-file", str(path))
    assert (code, err) == (0, "")
    client = await daemon.only_client()
    assert out.splitlines() == [
        f"client_id: {client.client_id}",
        "created robot (private_key_jwt, service)",
    ]
    assert "secret" not in out
    assert client.source == "admin"
    assert client.token_endpoint_auth_method == "private_key_jwt"
    assert client.secret_hash is None
    assert client.jwks is not None and json.loads(client.jwks) == signer.jwks()
    assert client.jwks_uri is None


async def test_a_private_key_jwt_client_with_a_jwks_uri_in_json(daemon: Daemon) -> None:
    uri = "https://keys.example/robot/jwks.json"
    code, out, err = await daemon.add(
        *BASIC, "--auth", "private_key_jwt", "--jwks-uri", uri, "--json"
    )
    assert (code, err) == (0, "")
    made = json.loads(out)
    assert made["client_secret"] is None
    assert made["client"]["jwks_uri"] == uri
    client = await daemon.only_client()
    assert made["client_id"] == client.client_id
    assert (client.jwks, client.jwks_uri, client.secret_hash) == (None, uri, None)
    assert client.source == "admin" and client.token_endpoint_auth_method == "private_key_jwt"
