"""SIGHUP re-reads the secrets rotated in place (oauthd.reload with oauthd.keyring): the
introspection client secret and the identity provider's client secret take effect
without a restart; one that cannot be read fails the reload and the running one stays."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from oauthd.clock import FakeClock
from oauthd.config import load_config
from oauthd.keyring import Keyring, read_keyring
from oauthd.notify import Notifier
from oauthd.oauth import AuthServer
from oauthd.reload import Reloader
from oauthd.store.memory import MemoryStore
from oauthd.users import Users
from tests.support.configs import write_secret

OIDC = (
    '[login]\nprovider = "oidc"\nencryption_key = "file:enc.key"\n'
    '[login.oidc]\nissuer = "https://idp.example"\nclient_id = "oauthd"\n'
    'client_secret = "file:idp.secret"\n'
)


def write(path: Path, secret_ref: str, tail: str = "") -> None:
    path.write_text(
        '[server]\nissuer = "https://auth.example"\n[storage]\nbackend = "memory"\n'
        f'[introspection]\nclient_id = "rs"\nclient_secret = "{secret_ref}"\n' + tail
    )


def running(tmp_path: Path, tail: str = "") -> tuple[Reloader, Keyring]:
    write(tmp_path / "config.toml", "file:intro.secret", tail)
    config = load_config(tmp_path / "config.toml")
    clock = FakeClock()
    keyring = read_keyring(config)
    auth = AuthServer(config, MemoryStore(clock), clock, Users(()), keyring=keyring)

    async def describe() -> str:
        return "serving"

    reloader = Reloader(config, Notifier({}), lambda: auth, describe)
    reloader.serving = True
    return reloader, keyring


def reloaded(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if getattr(r, "event", "") == "config.secret_reloaded"
    ]


async def test_a_rotated_secret_takes_effect_on_reload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_secret(tmp_path / "intro.secret", "first\n")
    reloader, keyring = running(tmp_path)
    assert keyring.introspection_secret == "first"
    write_secret(tmp_path / "intro.secret", "second\n")
    assert keyring.introspection_secret == "first"  # read at start, not per request
    caplog.set_level(logging.INFO, logger="oauthd")
    assert await reloader.reload()
    assert keyring.introspection_secret == "second"
    assert reloaded(caplog) == ["introspection.client_secret reloaded"]
    assert "second" not in caplog.text and "first" not in caplog.text


async def test_the_identity_providers_secret_is_rotated_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_secret(tmp_path / "intro.secret", "intro\n")
    write_secret(tmp_path / "idp.secret", "idp-one\n")
    write_secret(tmp_path / "enc.key", "00" * 32 + "\n")
    reloader, keyring = running(tmp_path, OIDC)
    assert keyring.idp_secret == "idp-one"
    write_secret(tmp_path / "idp.secret", "idp-two\n")
    caplog.set_level(logging.INFO, logger="oauthd")
    assert await reloader.reload()
    assert keyring.idp_secret == "idp-two"
    assert reloaded(caplog) == ["login.oidc.client_secret reloaded"]
    assert "idp-two" not in caplog.text


async def test_an_unchanged_secret_is_not_announced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_secret(tmp_path / "intro.secret", "same\n")
    reloader, keyring = running(tmp_path)
    caplog.set_level(logging.INFO, logger="oauthd")
    assert await reloader.reload()
    assert keyring.introspection_secret == "same"
    assert reloaded(caplog) == []


async def test_an_unreadable_secret_fails_the_reload_and_keeps_the_running_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_secret(tmp_path / "intro.secret", "kept\n")
    reloader, keyring = running(tmp_path)
    (tmp_path / "intro.secret").unlink()
    assert not await reloader.reload()
    assert keyring.introspection_secret == "kept"
    failed = [r for r in caplog.records if getattr(r, "event", "") == "config.reload_failed"]
    assert len(failed) == 1
    assert "introspection.client_secret: cannot read" in failed[0].__dict__["reason"]
    caplog.clear()  # an expected error


async def test_a_new_reference_is_applied_without_a_restart_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_secret(tmp_path / "intro.secret", "first\n")
    write_secret(tmp_path / "other.secret", "other\n")
    reloader, keyring = running(tmp_path)
    write(tmp_path / "config.toml", "file:other.secret")
    caplog.set_level(logging.INFO, logger="oauthd")
    assert await reloader.reload()
    assert keyring.introspection_secret == "other"
    assert reloader.running.introspection.client_secret.endswith("other.secret")
    events = [getattr(r, "event", "") for r in caplog.records]
    assert "config.restart_needed" not in events
