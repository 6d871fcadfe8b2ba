"""SIGHUP re-reads the introspection client secret (oauthd.reload with oauthd.keyring):
rotated in its file, it takes effect without a restart; nothing reads it per request."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from oauthd.clock import FakeClock
from oauthd.config import load_config
from oauthd.keyring import read_keyring
from oauthd.notify import Notifier
from oauthd.oauth import AuthServer
from oauthd.reload import Reloader
from oauthd.store.memory import MemoryStore
from oauthd.users import Users


def write(path: Path, secret_ref: str) -> None:
    path.write_text(
        '[server]\nissuer = "https://auth.example"\n[storage]\nbackend = "memory"\n'
        f'[introspection]\nclient_id = "rs"\nclient_secret = "{secret_ref}"\n'
    )


async def running(tmp_path: Path) -> tuple[Reloader, AuthServer]:
    write(tmp_path / "config.toml", "file:intro.secret")
    config = load_config(tmp_path / "config.toml")
    clock = FakeClock()
    auth = AuthServer(
        config,
        MemoryStore(clock),
        clock,
        Users(()),
        introspection_secret=read_keyring(config).introspection_secret,
    )

    async def describe() -> str:
        return "serving"

    reloader = Reloader(config, Notifier({}), lambda: auth, describe)
    reloader.serving = True
    return reloader, auth


async def test_a_rotated_secret_takes_effect_on_reload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "intro.secret").write_text("first\n")
    reloader, auth = await running(tmp_path)
    assert auth.introspection_secret == "first"
    (tmp_path / "intro.secret").write_text("second\n")
    assert auth.introspection_secret == "first"  # read at start, not per request
    caplog.set_level(logging.INFO, logger="oauthd")
    assert await reloader.reload()
    assert auth.introspection_secret == "second"
    lines = [r for r in caplog.records if getattr(r, "event", "") == "config.secret_reloaded"]
    assert [r.getMessage() for r in lines] == ["introspection secret reloaded"]
    assert "second" not in caplog.text and "first" not in caplog.text


async def test_an_unchanged_secret_is_not_announced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "intro.secret").write_text("same\n")
    reloader, auth = await running(tmp_path)
    caplog.set_level(logging.INFO, logger="oauthd")
    assert await reloader.reload()
    assert auth.introspection_secret == "same"
    assert not [r for r in caplog.records if getattr(r, "event", "") == "config.secret_reloaded"]


async def test_a_new_reference_is_applied_without_a_restart_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "intro.secret").write_text("first\n")
    (tmp_path / "other.secret").write_text("other\n")
    reloader, auth = await running(tmp_path)
    write(tmp_path / "config.toml", "file:other.secret")
    caplog.set_level(logging.INFO, logger="oauthd")
    assert await reloader.reload()
    assert auth.introspection_secret == "other"
    assert reloader.running.introspection.client_secret.endswith("other.secret")
    events = [getattr(r, "event", "") for r in caplog.records]
    assert "config.restart_needed" not in events
