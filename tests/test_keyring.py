"""oauthd.keyring: every key and secret the config names, resolved once at start."""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
from pathlib import Path

import pytest

from oauthd.config import Config, ConfigError, load_config
from oauthd.keyring import device_code_key, read_keyring, session_sealer
from tests.support.configs import write_secret

KEY = "00" * 32


def config(tmp_path: Path, body: str = "", backend: str = "file") -> Config:
    path = tmp_path / "config.toml"
    path.write_text(
        '[server]\nissuer = "https://auth.example"\n'
        f'[storage]\nbackend = "{backend}"\npath = "{tmp_path / "state"}"\n' + body
    )
    return load_config(path)


def test_nothing_configured_means_no_secrets(tmp_path: Path) -> None:
    keyring = read_keyring(config(tmp_path))
    assert keyring.sealer is None
    assert keyring.idp_secret is None
    assert keyring.introspection_secret is None
    assert keyring.upstream_authorization == {"/mcp": None}


def test_each_reference_is_read_once_with_its_kind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_secret(tmp_path / "enc.key", KEY + "\n")
    write_secret(tmp_path / "introspection.secret", "intro-secret\n")
    monkeypatch.setenv("UPSTREAM_AUTH", "Bearer upstream-secret")
    keyring = read_keyring(
        config(
            tmp_path,
            '[login]\nencryption_key = "file:enc.key"\n'
            '[introspection]\nclient_id = "rs"\nclient_secret = "file:introspection.secret"\n'
            '[upstream]\nauthorization = "env:UPSTREAM_AUTH"\n',
        )
    )
    assert keyring.sealer is not None
    assert keyring.introspection_secret == "intro-secret"
    assert keyring.upstream_authorization == {"/mcp": "Bearer upstream-secret"}
    write_secret(tmp_path / "introspection.secret", "rotated\n")
    assert keyring.introspection_secret == "intro-secret"  # a value, not a reference


def test_a_bad_encryption_key_names_the_key(tmp_path: Path) -> None:
    write_secret(tmp_path / "enc.key", "not a key\n")
    with pytest.raises(ConfigError, match=r"login\.encryption_key: "):
        read_keyring(config(tmp_path, '[login]\nencryption_key = "file:enc.key"\n'))
    with pytest.raises(ConfigError, match=r"login.encryption_key: cannot read .*missing"):
        read_keyring(config(tmp_path, '[login]\nencryption_key = "file:missing"\n'))


def test_unreadable_optional_secrets_are_logged_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keyring = read_keyring(
        config(
            tmp_path,
            '[introspection]\nclient_id = "rs"\nclient_secret = "file:gone"\n'
            '[upstream]\nauthorization = "file:gone-too"\n',
        )
    )
    assert (keyring.introspection_secret, keyring.upstream_authorization) == (None, {"/mcp": None})
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "introspection.client_secret cannot be read; introspection is refused",
        "upstream.authorization cannot be read; sending none",
    ]
    caplog.clear()


def test_reload_reads_the_rotatable_secrets_again(tmp_path: Path) -> None:
    secret = tmp_path / "introspection.secret"
    write_secret(secret, "one\n")
    loaded = config(
        tmp_path, '[introspection]\nclient_id = "rs"\nclient_secret = "file:introspection.secret"\n'
    )
    keyring = read_keyring(loaded)
    assert keyring.reload(loaded) == []
    write_secret(secret, "two\n")
    assert keyring.reload(loaded) == ["introspection.client_secret"]
    assert keyring.introspection_secret == "two"
    secret.unlink()
    with pytest.raises(ConfigError, match=r"introspection\.client_secret: cannot read"):
        keyring.reload(loaded)
    assert keyring.introspection_secret == "two"


def test_no_secret_shows_in_a_repr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_secret(tmp_path / "enc.key", KEY + "\n")
    monkeypatch.setenv("INTRO", "intro-secret-value")
    monkeypatch.setenv("UPSTREAM_AUTH", "Bearer upstream-secret-value")
    keyring = read_keyring(
        config(
            tmp_path,
            '[login]\nencryption_key = "file:enc.key"\n'
            '[introspection]\nclient_id = "rs"\nclient_secret = "env:INTRO"\n'
            '[upstream]\nauthorization = "env:UPSTREAM_AUTH"\n',
        )
    )
    assert "secret-value" not in repr(keyring)
    assert KEY not in repr(keyring)


def test_the_session_key_is_kept_in_the_state_dir(tmp_path: Path) -> None:
    loaded = config(tmp_path)
    loaded.storage.path.mkdir(mode=0o700)
    first = session_sealer(loaded, read_keyring(loaded))
    path = loaded.storage.path / "session.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = session_sealer(loaded, read_keyring(loaded))
    assert again.open(first.seal(b"session", "ad"), "ad") == b"session"


def test_the_configured_key_seals_sessions_and_no_file_is_written(tmp_path: Path) -> None:
    write_secret(tmp_path / "enc.key", KEY + "\n")
    loaded = config(tmp_path, '[login]\nencryption_key = "file:enc.key"\n')
    keyring = read_keyring(loaded)
    assert session_sealer(loaded, keyring) is keyring.sealer
    assert not (loaded.storage.path / "session.key").exists()


def test_a_shared_backend_needs_the_configured_key(tmp_path: Path) -> None:
    memory = config(tmp_path, backend="memory")
    assert session_sealer(memory, read_keyring(memory)) is not None
    file = config(tmp_path)
    shared = dataclasses.replace(file, storage=dataclasses.replace(file.storage, backend="redis"))
    with pytest.raises(ConfigError, match=r'required when storage\.backend = "redis"'):
        session_sealer(shared, read_keyring(shared))


def test_the_device_code_key_is_kept_with_the_session_key(tmp_path: Path) -> None:
    """The user-code HMAC key survives a restart (file backend: from session.key) and is
    not the session key itself."""
    loaded = config(tmp_path)
    loaded.storage.path.mkdir(mode=0o700)
    first = device_code_key(loaded, read_keyring(loaded))
    assert len(first) == 32
    assert device_code_key(loaded, read_keyring(loaded)) == first  # a restart
    assert (loaded.storage.path / "session.key").read_text().strip() != first.hex()
    (tmp_path / "other").mkdir()
    other = config(tmp_path / "other")
    other.storage.path.mkdir(mode=0o700)
    assert device_code_key(other, read_keyring(other)) != first  # another deployment


def test_every_instance_on_a_shared_backend_derives_the_same_device_code_key(
    tmp_path: Path,
) -> None:
    write_secret(tmp_path / "enc.key", KEY + "\n")
    keys = []
    for instance in ("a", "b"):
        directory = tmp_path / instance
        directory.mkdir()
        loaded = config(directory, f'[login]\nencryption_key = "file:{tmp_path / "enc.key"}"\n')
        shared = dataclasses.replace(
            loaded, storage=dataclasses.replace(loaded.storage, backend="redis")
        )
        keys.append(device_code_key(shared, read_keyring(shared)))
    assert keys[0] == keys[1] and keys[0] != bytes.fromhex(KEY)
    file = config(tmp_path)
    bare = dataclasses.replace(file, storage=dataclasses.replace(file.storage, backend="redis"))
    with pytest.raises(ConfigError, match=r"login\.encryption_key: required"):
        device_code_key(bare, read_keyring(bare))


def test_the_memory_backend_uses_one_key_per_process(tmp_path: Path) -> None:
    memory = config(tmp_path, backend="memory")
    keyring = read_keyring(memory)
    assert device_code_key(memory, keyring) == device_code_key(memory, keyring)


def test_each_resource_has_its_own_upstream_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FILES_AUTH", "Bearer files-secret")
    keyring = read_keyring(
        config(
            tmp_path,
            '[[resource]]\npath = "/files/mcp"\nurl = "http://127.0.0.1:9001/mcp"\n'
            'authorization = "env:FILES_AUTH"\n'
            '[[resource]]\npath = "/wiki/mcp"\nurl = "http://127.0.0.1:9002/mcp"\n'
            '[[resource]]\npath = "/gone/mcp"\nurl = "http://127.0.0.1:9003/mcp"\n'
            'authorization = "file:gone"\n',
        )
    )
    assert keyring.upstream_authorization == {
        "/files/mcp": "Bearer files-secret",
        "/wiki/mcp": None,
        "/gone/mcp": None,
    }
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["resource[2].authorization cannot be read; sending none"]
