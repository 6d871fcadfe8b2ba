"""oauthd/cli/serve.py: `oauthd check-config`, and how `serve` ends before it starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from oauthd.cli import main


def test_check_config_summarises_a_good_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "oauthd.toml"
    config.write_text('[storage]\nbackend = "memory"\n')
    assert main(["check-config", "--config", str(config)]) == 0
    assert capsys.readouterr().out == (
        f"{config}: OK (0 local users, storage memory at {tmp_path / 'var/oauthd'}, "
        "resources /mcp)\n"
    )


def test_the_config_comes_from_the_environment_without_an_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "oauthd.toml"
    config.write_text("")
    monkeypatch.setenv("OAUTHD_CONFIG", str(config))
    assert main(["check-config"]) == 0
    assert capsys.readouterr().out.startswith(f"{config}: OK (")


@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_no_config_at_all_is_a_config_error(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OAUTHD_CONFIG", raising=False)
    assert main([command]) == 78
    assert capsys.readouterr().err == (
        "oauthd: no configuration: pass --config PATH or set OAUTHD_CONFIG\n"
    )


def test_a_bad_key_names_the_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "oauthd.toml"
    config.write_text("[storage]\nbackend = 3\n")
    assert main(["check-config", "--config", str(config)]) == 78
    assert capsys.readouterr().err == (
        f"oauthd: {config}: storage.backend: expected a string, got 3\n"
    )
