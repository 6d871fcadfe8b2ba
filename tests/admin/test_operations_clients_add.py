"""The admin operation `clients.add` (`Admin.add_client`, served by `oauthd/admin/server.py`
as `clients.add`): an operator's confidential client stored with `source="admin"`, its
secret handed out once (none for private_key_jwt); what the protocol refuses is an
`AdminError` with exit code DATAERR (65), carried on the socket as `"exit": 65`; a
malformed request is a plain refusal (FAILURE). Directly and over a real admin socket
served in process."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from oauthd import crypto
from oauthd.admin import server as admin_server
from oauthd.admin.client import AdminClient, AdminRefused
from oauthd.admin.operations import Admin, AdminError
from oauthd.clock import FakeClock
from oauthd.config import default_config
from oauthd.exits import ExitCode
from oauthd.keyring import read_keyring
from oauthd.oauth import AuthServer, NewClient
from oauthd.store import MemoryStore
from oauthd.users import Users
from tests.support.jwts import Signer

ISSUER = "http://127.0.0.1:8080"  # the default config's
CC = ("client_credentials",)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore(FakeClock())


@pytest.fixture
def admin(tmp_path: Path, store: MemoryStore) -> Admin:
    config = default_config(tmp_path)
    auth = AuthServer(config, store, store.clock, Users(()), keyring=read_keyring(config))
    return Admin(store, auth, config)


@pytest.fixture
async def socket_path(tmp_path: Path, admin: Admin) -> AsyncIterator[Path]:
    path = tmp_path / "admin.sock"
    server = admin_server.AdminServer(path, admin)
    await server.start()
    try:
        yield path
    finally:
        await server.close()


def ask_raw(path: Path, request: dict[str, Any]) -> list[dict[str, Any]]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(orjson.dumps(request) + b"\n")
        with sock.makefile("rb") as answer:
            return [orjson.loads(line) for line in answer]


# -- Admin.add_client ------------------------------------------------------------------------


async def test_a_secret_client_is_stored_as_the_operators(admin: Admin, store: MemoryStore) -> None:
    view, secret = await admin.add_client(NewClient("robot", CC, "client_secret_post"))
    assert secret is not None
    client = await store.clients.get(view.client_id)
    assert client is not None
    assert crypto.secret_matches(secret, client.secret_hash)
    assert client.source == "admin" and view.source == "admin"
    assert client.grant_types == CC == view.grant_types
    assert client.token_endpoint_auth_method == "client_secret_post" == view.auth_method
    assert client.scope == "mcp" == view.scope  # every scope offered
    assert (client.resource, client.jwks, client.jwks_uri) == (None, None, None)
    assert (view.principal, view.sessions) == ("service", 0)


async def test_a_private_key_jwt_client_gets_no_secret(admin: Admin, store: MemoryStore) -> None:
    signer = Signer.ec()
    spec = NewClient(
        "signer", CC, "private_key_jwt", jwks=signer.jwks_text(), scopes=("mcp",), resource="/mcp"
    )
    view, secret = await admin.add_client(spec)
    assert secret is None
    client = await store.clients.get(view.client_id)
    assert client is not None and client.secret_hash is None
    assert client.source == "admin"
    assert client.jwks is not None and json.loads(client.jwks) == signer.jwks()
    assert (client.scope, client.resource) == ("mcp", f"{ISSUER}/mcp")
    assert view.resource == f"{ISSUER}/mcp"

    uri = "https://keys.example/jwks"
    view, secret = await admin.add_client(NewClient("fetcher", CC, "private_key_jwt", jwks_uri=uri))
    client = await store.clients.get(view.client_id)
    assert secret is None and client is not None
    assert (client.jwks, client.jwks_uri, view.jwks_uri) == (None, uri, uri)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (NewClient("robot", CC, "none"), "authentication method 'none' is not one"),
        (NewClient("robot", ("refresh_token",), "client_secret_basic"), "grant 'refresh_token'"),
        (NewClient("robot", (), "client_secret_basic"), "give at least one grant type"),
        (NewClient("", CC, "client_secret_basic"), "the name must be 1 to"),
        (NewClient("robot", CC, "client_secret_basic", scopes=("admin",)), "scope 'admin'"),
        (NewClient("robot", CC, "client_secret_basic", resource="/nowhere"), "unknown resource"),
        (
            NewClient("robot", CC, "client_secret_basic", jwks_uri="https://k.example/j"),
            "client_secret_basic takes no keys",
        ),
        (
            NewClient("robot", CC, "private_key_jwt"),
            "private_key_jwt needs exactly one of jwks and jwks_uri",
        ),
        (
            NewClient("robot", CC, "private_key_jwt", jwks="{}", jwks_uri="https://k.example/j"),
            "private_key_jwt needs exactly one of jwks and jwks_uri",
        ),
        (
            NewClient("robot", CC, "private_key_jwt", jwks=json.dumps(Signer.rsa().private_jwks())),
            "the JWKS holds a private or symmetric key",
        ),
        (
            NewClient("robot", CC, "private_key_jwt", jwks_uri="http://k.example/j"),
            "jwks_uri must be an https URL",
        ),
        (
            NewClient("robot", CC, "private_key_jwt", jwks_uri="https://u:p@k.example/j"),
            "jwks_uri must have no user name, password or fragment",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
async def test_refusals_are_dataerr_and_store_nothing(
    admin: Admin, store: MemoryStore, spec: NewClient, message: str
) -> None:
    with pytest.raises(AdminError) as refused:
        await admin.add_client(spec)
    assert refused.value.exit_code == ExitCode.DATAERR
    assert message in str(refused.value)
    assert await store.clients.count() == 0


# -- over the socket -------------------------------------------------------------------------


async def test_clients_add_over_the_socket(socket_path: Path, store: MemoryStore) -> None:
    request = {
        "op": "clients.add",
        "args": {
            "name": "robot",
            "grant_types": ["client_credentials"],
            "auth_method": "client_secret_basic",
            "scopes": ["mcp"],
        },
    }
    [answer] = await asyncio.to_thread(ask_raw, socket_path, request)
    assert answer["ok"] is True and set(answer) == {"ok", "client", "client_secret"}
    client = await store.clients.get(answer["client"]["client_id"])
    assert client is not None and client.source == "admin"
    assert crypto.secret_matches(answer["client_secret"], client.secret_hash)
    assert answer["client_secret"] not in json.dumps(answer["client"])

    # the command's client: the view back as a ClientView, the secret beside it
    spec = NewClient("robot 2", CC, "client_secret_post", resource="/mcp")
    view, secret = await asyncio.to_thread(AdminClient(socket_path).add_client, spec)
    assert view.grant_types == CC and view.resource == f"{ISSUER}/mcp"
    stored = await store.clients.get(view.client_id)
    assert stored is not None and secret is not None
    assert crypto.secret_matches(secret, stored.secret_hash)


async def test_a_refusal_over_the_socket_carries_exit_65(
    socket_path: Path, store: MemoryStore
) -> None:
    args = {"name": "robot", "grant_types": ["client_credentials"], "auth_method": "none"}
    [answer] = await asyncio.to_thread(ask_raw, socket_path, {"op": "clients.add", "args": args})
    assert answer["ok"] is False and answer["exit"] == 65
    assert "authentication method 'none'" in answer["error"]

    spec = NewClient("robot", CC, "private_key_jwt", jwks_uri="http://k.example/j")
    with pytest.raises(AdminRefused, match="jwks_uri must be an https URL") as refused:
        await asyncio.to_thread(AdminClient(socket_path).add_client, spec)
    assert refused.value.exit_code == ExitCode.DATAERR
    assert await store.clients.count() == 0


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            {
                "name": "r",
                "grant_types": "client_credentials",
                "auth_method": "client_secret_basic",
            },
            "'grant_types' must be a list of non-empty strings",
        ),
        (
            {"name": "r", "grant_types": ["client_credentials"], "auth_method": 3},
            "'auth_method' must be a non-empty string",
        ),
        (
            {"name": "r", "grant_types": [""], "auth_method": "client_secret_basic"},
            "'grant_types' must be a list of non-empty strings",
        ),
    ],
)
async def test_a_malformed_request_is_refused_without_an_exit_code(
    socket_path: Path, store: MemoryStore, args: dict[str, Any], error: str
) -> None:
    [answer] = await asyncio.to_thread(ask_raw, socket_path, {"op": "clients.add", "args": args})
    assert answer == {"ok": False, "error": error}
    assert await store.clients.count() == 0
