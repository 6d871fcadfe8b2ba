"""oauthd/cli/__init__.py: the command line as a whole (`--version`, usage errors)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from oauthd import __version__
from oauthd.cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"oauthd {__version__}\n"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["no-such-command"],
        ["serve", "--no-such-option"],
        ["sessions", "revoke"],  # one of --id, --user, --client is required
        ["state", "copy", "--from", "a.toml"],
    ],
)
def test_usage_errors_exit_64(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 64
    err = capsys.readouterr().err
    assert err.startswith("usage: oauthd") and "error: " in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "check-config" in capsys.readouterr().out


def test_the_installed_command_exits_64_on_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "oauthd", "serve", "--bogus"], capture_output=True, timeout=60
    )
    assert done.returncode == 64 and b"unrecognized arguments: --bogus" in done.stderr
