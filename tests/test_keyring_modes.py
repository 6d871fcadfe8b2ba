"""Key files others may read are refused, as ssh refuses such a private key, unless systemd's
credentials directory holds them; secrets from the environment are accepted with a warning."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from oauthd.config import Config, ConfigError, load_config
from oauthd.exits import ExitCode
from oauthd.keyring import read_keyring
from tests.support.configs import state_config, write_secret
from tests.support.daemon import run_oauthd
from tests.support.ports import free_port

KEY = "00" * 32


def config(tmp_path: Path, body: str) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(f'[storage]\nbackend = "memory"\n{body}')
    return load_config(path)


ENCRYPTION = '[login]\nencryption_key = "file:enc.key"\n'
INTROSPECTION = '[introspection]\nclient_id = "rs"\nclient_secret = "file:enc.key"\n'
UPSTREAM = '[upstream]\nauthorization = "file:enc.key"\n'
OIDC = (
    '[login]\nprovider = "oidc"\nencryption_key = "env:OAUTHD_TEST_KEY"\n'
    '[login.oidc]\nissuer = "https://idp.example"\nclient_id = "c"\n'
    'client_secret = "file:enc.key"\n'
)


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (ENCRYPTION, "login.encryption_key"),
        (INTROSPECTION, "introspection.client_secret"),
        (UPSTREAM, "upstream.authorization"),
        (OIDC, "login.oidc.client_secret"),
    ],
)
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o660])
def test_a_key_file_others_may_read_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, key: str, mode: int
) -> None:
    monkeypatch.setenv("OAUTHD_TEST_KEY", KEY)
    path = write_secret(tmp_path / "enc.key", KEY + "\n")
    path.chmod(mode)
    loaded = config(tmp_path, body)
    with pytest.raises(ConfigError) as refused:
        read_keyring(loaded)
    message = str(refused.value)
    assert f"{key}: permissions {mode:04o} of {path} are too open" in message
    assert f"chmod 600 {path}" in message and KEY not in message


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_key_file_for_its_owner_only_is_read(tmp_path: Path, mode: int) -> None:
    write_secret(tmp_path / "enc.key", KEY + "\n").chmod(mode)
    keyring = read_keyring(config(tmp_path, ENCRYPTION + UPSTREAM))
    assert keyring.sealer is not None and keyring.upstream_authorization == {"/mcp": KEY}


def test_a_key_file_in_the_credentials_directory_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "enc.key").write_text(KEY + "\n")
    (credentials / "enc.key").chmod(0o644)  # systemd decides these modes, not the operator
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    by_path = config(tmp_path, f'[login]\nencryption_key = "file:{credentials}/enc.key"\n')
    assert read_keyring(by_path).sealer is not None
    by_name = config(tmp_path, '[login]\nencryption_key = "credential:enc.key"\n')
    assert read_keyring(by_name).sealer is not None
    # ... but a path that only starts like it is not in it
    (tmp_path / "credentials-other").mkdir()
    outside = write_secret(tmp_path / "credentials-other" / "enc.key", KEY)
    outside.chmod(0o644)
    lookalike = config(tmp_path, f'[login]\nencryption_key = "file:{outside}"\n')
    with pytest.raises(ConfigError, match="too open"):
        read_keyring(lookalike)


def test_a_reload_refuses_a_key_file_made_readable(tmp_path: Path) -> None:
    path = write_secret(tmp_path / "enc.key", "one\n")
    loaded = config(tmp_path, INTROSPECTION)
    keyring = read_keyring(loaded)
    path.write_text("two\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=r"introspection\.client_secret: permissions 0644"):
        keyring.reload(loaded)
    assert keyring.introspection_secret == "one"  # the running secret stays


def test_an_environment_reference_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OAUTHD_TEST_KEY", KEY)
    monkeypatch.setenv("OAUTHD_TEST_AUTH", "Bearer upstream-secret-value")
    body = (
        '[login]\nencryption_key = "env:OAUTHD_TEST_KEY"\n'
        '[upstream]\nauthorization = "env:OAUTHD_TEST_AUTH"\n'
    )
    with caplog.at_level(logging.WARNING, logger="oauthd.keyring"):
        keyring = read_keyring(config(tmp_path, body))
    assert keyring.sealer is not None
    warnings = [
        r for r in caplog.records if getattr(r, "event", "") == "config.secret_in_environment"
    ]
    assert [(r.levelno, getattr(r, "key", "")) for r in warnings] == [
        (logging.WARNING, "login.encryption_key"),
        (logging.WARNING, "upstream.authorization"),
    ]
    assert all(KEY not in r.getMessage() and "secret-value" not in r.getMessage() for r in warnings)


async def test_serve_exits_78_naming_the_key_and_the_path(tmp_path: Path) -> None:
    port = free_port()
    config_path = state_config(tmp_path, port)
    path = write_secret(tmp_path / "enc.key", KEY + "\n")
    path.chmod(0o640)
    config_path.write_text(config_path.read_text() + f'\n[login]\nencryption_key = "file:{path}"\n')
    result = await run_oauthd("serve", "--config", str(config_path))
    assert result.code == ExitCode.CONFIG, result.err
    assert f"login.encryption_key: permissions 0640 of {path} are too open" in result.err
    assert "Traceback" not in result.err and KEY not in result.err + result.out
    assert not (tmp_path / "state").exists(), "a refused key must touch nothing"
