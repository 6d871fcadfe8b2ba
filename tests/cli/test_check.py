"""oauthd/cli/check.py: `oauthd check-config` predicts what `serve` says: every error of
the file at once, then the backend's extra, the secrets, the admin socket's directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from oauthd.cli import check, main
from oauthd.exits import ExitCode
from tests.support.configs import PASSWORD_HASH, write_secret

USER = f'[[login.users]]\nusername = "alice"\npassword_hash = "{PASSWORD_HASH}"\n'


def run(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, list[str]]:
    code = main(["check-config", "--config", str(config)])
    out, err = capsys.readouterr()
    return code, out, err.splitlines()


def test_every_error_of_the_file_at_once_with_did_you_mean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "oauthd.toml"
    config.write_text(
        '[storage]\nsave_intervall = "1s"\nbackend = 3\n[sever]\nlisten = "x"\n'
        "[server]\nlisten = 8080\n"
    )
    code, out, err = run(config, capsys)
    assert code == 78 and out == ""
    assert sorted(err) == sorted(
        [
            f'oauthd: {config}: sever: unknown section (did you mean "server"?)',
            f"oauthd: {config}: server.listen: expected a string, got 8080",
            f"oauthd: {config}: storage.backend: expected a string, got 3",
            f"oauthd: {config}: storage.save_intervall: unknown key "
            '(did you mean "save_interval"?)',
        ]
    )


def test_what_serve_would_refuse_is_reported_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(check, "missing_extra", lambda backend: f"{backend} needs its extra")
    (tmp_path / "not-a-dir").write_text("")
    config = tmp_path / "oauthd.toml"
    config.write_text(
        '[storage]\nbackend = "redis"\npath = "not-a-dir/state"\n'
        '[login]\nencryption_key = "file:missing.key"\n' + USER
    )
    code, out, err = run(config, capsys)
    assert code == 78 and out == ""
    assert err == [
        f"oauthd: {config}: redis needs its extra",
        f"oauthd: {config}: login.encryption_key: cannot read 'file:{tmp_path}/missing.key'",
        f"oauthd: {config}: the admin socket {tmp_path}/not-a-dir/state/admin.sock: "
        f"{tmp_path}/not-a-dir is not a directory",
    ]


def test_a_bad_key_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_secret(tmp_path / "key", "too short")
    config = tmp_path / "oauthd.toml"
    config.write_text('[login]\nencryption_key = "file:key"\n' + USER)
    code, _, err = run(config, capsys)
    assert code == 78 and len(err) == 1
    assert err[0].startswith(f"oauthd: {config}: login.encryption_key: ")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_socket_directory_that_cannot_be_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    config = tmp_path / "oauthd.toml"
    config.write_text('[storage]\npath = "locked/state"\n' + USER)
    code, _, err = run(config, capsys)
    assert code == 78
    assert err == [
        f"oauthd: {config}: the admin socket {locked}/state/admin.sock: cannot be made: "
        f"{locked} is not writable by this user"
    ]


def test_a_long_socket_path_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "oauthd.toml"
    config.write_text(f'[admin]\nsocket = "{"x" * 120}.sock"\n' + USER)
    code, _, err = run(config, capsys)
    assert code == 78 and err[-1].endswith("path longer than 107 bytes (set admin.socket)")


def test_what_serve_would_start_with_but_log_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config = tmp_path / "oauthd.toml"
    config.write_text(
        '[introspection]\nclient_id = "rs"\nclient_secret = "env:OAUTHD_TEST_NO_SUCH_VAR"\n'
        '[upstream]\nauthorization = "credential:upstream-authorization"\n'
    )
    code, out, err = run(config, capsys)
    assert code == 0 and out.startswith(f"{config}: OK (0 local users")
    assert err == [
        f"oauthd: warning: {config}: introspection.client_secret: cannot read "
        "'env:OAUTHD_TEST_NO_SUCH_VAR'; serve would start, refusing it",
        f"oauthd: warning: {config}: upstream.authorization: 'credential:upstream-authorization'"
        " is read from the service's credentials ($CREDENTIALS_DIRECTORY is not set here): "
        "not checked",
        f'oauthd: warning: {config}: nobody can sign in: login.provider = "local" and there '
        'are no [[login.users]] (add one with a hash from "oauthd users hash-password", or '
        "configure an identity provider)",
    ]


def test_a_key_file_others_may_read_is_an_error_as_in_serve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "key").write_text("ab" * 32)
    (tmp_path / "key").chmod(0o644)
    config = tmp_path / "oauthd.toml"
    config.write_text('[login]\nencryption_key = "file:key"\n' + USER)
    code, _, err = run(config, capsys)
    assert code == ExitCode.CONFIG
    assert any("login.encryption_key: permissions 0644" in line for line in err), err


def test_a_good_config_is_ok_without_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_secret(tmp_path / "key", "ab" * 32)
    config = tmp_path / "oauthd.toml"
    config.write_text('[login]\nencryption_key = "file:key"\n' + USER)
    code, out, err = run(config, capsys)
    assert (code, err) == (0, [])
    assert out == (
        f"{config}: OK (1 local users, storage file at {tmp_path / 'var/oauthd'}, resources /mcp)\n"
    )


def test_each_resource_is_checked_and_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OAUTHD_TEST_NO_SUCH_VAR", raising=False)
    config = tmp_path / "oauthd.toml"
    config.write_text(
        USER + '[[resource]]\npath = "/mcp"\nurl = "http://127.0.0.1:9000/mcp"\n'
        '[[resource]]\npath = "/files/mcp"\nurl = "http://127.0.0.1:9001/mcp"\n'
        'authorization = "env:OAUTHD_TEST_NO_SUCH_VAR"\n'
    )
    code, out, err = run(config, capsys)
    assert code == 0 and out.endswith(", resources /mcp, /files/mcp)\n")
    assert err == [
        f"oauthd: warning: {config}: resource[1].authorization: cannot read "
        "'env:OAUTHD_TEST_NO_SUCH_VAR'; serve would start, sending none"
    ]
