"""oauthd/cli/links.py: `oauthd links list|remove` over the admin socket of an in-process
admin server (oauthd/admin: the `links.*` operations) on the memory store."""

from __future__ import annotations

import asyncio
import io
import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from oauthd.admin import server as admin_server
from oauthd.cli import build_parser
from oauthd.cli.links import cmd_links
from oauthd.exits import ExitCode
from oauthd.model import account_link_key
from oauthd.store import MemoryStore
from tests.admin.test_server import admin_of
from tests.support.records import make_account_link

IDP = "https://idp.example.com"


@pytest.fixture
async def socket_path(tmp_path: Path) -> AsyncIterator[tuple[Path, MemoryStore]]:
    from oauthd.clock import FakeClock

    store = MemoryStore(FakeClock())
    for subject, user, via in (
        ("00u2", "bob@example.test", "email"),
        ("00u1", "00u1@idp.example.com", "subject"),
    ):
        await store.account_links.add(
            make_account_link(issuer=IDP, subject=subject, user=user, via=via, expires_at=None)
        )
    with tempfile.TemporaryDirectory(prefix="oauthd-") as short:
        path = Path(short) / "admin.sock"
        server = admin_server.AdminServer(path, admin_of(tmp_path, store))
        await server.start()
        try:
            yield path, store
        finally:
            await server.close()


async def run(path: Path, *argv: str) -> tuple[ExitCode, str]:
    args = build_parser().parse_args(["links", *argv, "--socket", str(path)])
    out = io.StringIO()
    code = await asyncio.to_thread(cmd_links, args, out)
    return code, out.getvalue()


async def test_links_are_listed_as_a_table_and_as_json(
    socket_path: tuple[Path, MemoryStore],
) -> None:
    path, _ = socket_path
    code, text = await run(path, "list")
    lines = text.splitlines()
    assert code == ExitCode.OK and lines[0].split() == [
        "ISSUER",
        "SUBJECT",
        "USER",
        "VIA",
        "CREATED",
    ]
    assert "00u1@idp.example.com" in lines[1] and "bob@example.test" in lines[2]
    assert lines[-1] == "2 links"
    code, text = await run(path, "list", "--json")
    assert [(d["subject"], d["via"]) for d in json.loads(text)] == [
        ("00u1", "subject"),
        ("00u2", "email"),
    ]


async def test_a_link_is_removed(socket_path: tuple[Path, MemoryStore]) -> None:
    path, store = socket_path
    code, text = await run(path, "remove", IDP, "00u2")
    assert code == ExitCode.OK and "removed the link of 00u2" in text and "bob@example.test" in text
    assert await store.account_links.get(account_link_key(IDP, "00u2")) is None
    code, _ = await run(path, "remove", IDP, "00u2")
    assert code == ExitCode.FAILURE
