"""oauthd/passwords.py: the password-hash format, a leaf that the config and the users
both import (the config no longer imports the users; more cases in tests/test_users.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from oauthd.passwords import hash_password, parse_password_hash, random_hash, verify_password

OAUTHD = Path(__file__).resolve().parents[1] / "oauthd"


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_hash_format_is_a_leaf() -> None:
    assert not {n for n in imported(OAUTHD / "passwords.py") if n.startswith("oauthd")}


def test_the_config_does_not_import_the_users() -> None:
    for path in (OAUTHD / "config").glob("*.py"):
        assert "oauthd.users" not in imported(path), path


def test_a_new_hash_parses_and_verifies() -> None:
    stored = parse_password_hash(hash_password("s3cret"))
    assert (stored.scheme, stored.ln, stored.r, stored.p) == ("scrypt", 15, 8, 1)
    assert verify_password(stored, "s3cret") and not verify_password(stored, "S3cret")


def test_an_error_never_echoes_the_hash() -> None:
    text = "scrypt$ln=15,r=8,p=1$c2FsdHNhbHQ$!!!"
    with pytest.raises(ValueError) as raised:
        parse_password_hash(text)
    assert text not in str(raised.value) and "!!!" not in str(raised.value)


def test_the_random_hash_matches_no_password() -> None:
    assert not verify_password(random_hash(), "")
