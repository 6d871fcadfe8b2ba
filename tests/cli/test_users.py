"""oauthd/cli/users.py: `oauthd users hash-password`."""

from __future__ import annotations

import io

import pytest

from oauthd.cli import main
from oauthd.passwords import parse_password_hash, verify_password


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(monkeypatch: pytest.MonkeyPatch, stdin: str | io.StringIO, *argv: str) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin) if isinstance(stdin, str) else stdin)
    return main(["users", "hash-password", *argv])


def test_a_password_from_stdin_becomes_a_hash_that_verifies(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(monkeypatch, "correct horse\r\n", "--stdin") == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("scrypt$ln=15,r=8,p=1$")
    assert verify_password(parse_password_hash(printed), "correct horse")


def test_an_empty_password_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(monkeypatch, "\n", "--stdin") == 64
    assert capsys.readouterr() == ("", "oauthd: empty password\n")


def test_without_a_terminal_it_asks_for_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(monkeypatch, "secret\n") == 64
    assert capsys.readouterr().err == "oauthd: no terminal to prompt on; use --stdin\n"


def test_two_different_answers_at_the_prompt_are_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = iter(["one", "two"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    assert run(monkeypatch, Terminal()) == 64
    assert capsys.readouterr().err == "oauthd: the passwords differ\n"


def test_ctrl_c_at_the_prompt_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(prompt: str) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr("getpass.getpass", interrupted)
    assert run(monkeypatch, Terminal()) == 130
