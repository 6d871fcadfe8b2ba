"""oauthd/exits.py: one table of exit codes, used by every error that says how the
command ends and by the command itself (no bare numbers)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from oauthd.admin.client import AdminRefused, AdminUnreachable
from oauthd.admin.server import AdminSocketError
from oauthd.config import ConfigError
from oauthd.exits import ExitCode
from oauthd.persist.errors import LockedError, RecoveryError

OAUTHD = Path(__file__).resolve().parents[1] / "oauthd"


def test_the_codes_are_those_of_sysexits() -> None:
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0,
        "FAILURE": 1,
        "USAGE": 64,
        "NOINPUT": 66,
        "UNAVAILABLE": 69,
        "OSERR": 71,
        "TEMPFAIL": 75,
        "CONFIG": 78,
        "INTERRUPTED": 130,
    }


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError, ExitCode.CONFIG),
        (RecoveryError, ExitCode.CONFIG),
        (LockedError, ExitCode.TEMPFAIL),
        (AdminUnreachable, ExitCode.UNAVAILABLE),
        (AdminRefused, ExitCode.FAILURE),
        (AdminSocketError, ExitCode.OSERR),
    ],
)
def test_each_error_class_ends_the_command_with_an_exit_code(
    error: type[Exception], code: ExitCode
) -> None:
    exit_code = getattr(error, "exit_code")  # noqa: B009  # the attribute under test
    assert type(exit_code) is ExitCode and exit_code is code


def test_the_postgres_schema_error_is_a_config_error_to_the_operator() -> None:
    schema = pytest.importorskip("oauthd.store.postgres_schema")
    assert schema.SchemaError.exit_code is ExitCode.CONFIG


def target_name(target: ast.expr) -> str:
    return target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")


def numeric_exit_codes(tree: ast.AST) -> list[int]:
    """Lines that give an `exit_code` (attribute, class attribute or keyword) a bare number."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if "exit_code" in map(target_name, targets) and isinstance(node.value, ast.Constant):
                found.append(node.lineno)
        elif (
            isinstance(node, ast.keyword)
            and node.arg == "exit_code"
            and isinstance(node.value, ast.Constant)
        ):
            found.append(node.value.lineno)
    return sorted(found)


def test_no_exit_code_in_oauthd_is_a_bare_number() -> None:
    bare = {
        str(path.relative_to(OAUTHD.parent)): lines
        for path in sorted(OAUTHD.rglob("*.py"))
        if (lines := numeric_exit_codes(ast.parse(path.read_text(encoding="utf-8"))))
    }
    assert not bare, f"use oauthd.exits.ExitCode: {bare}"


def test_the_checker_finds_a_bare_number() -> None:
    source = (
        "class E(Exception):\n    exit_code = 78\n"
        "class F(Exception):\n    exit_code: int = ExitCode.CONFIG\n"
        "self.exit_code = 1\n"
        "raise Failed('x', exit_code=69)\n"
    )
    assert numeric_exit_codes(ast.parse(source)) == [2, 5, 6]


def returned_numbers(tree: ast.AST) -> list[int]:
    """Lines of `return <int>` and `SystemExit(<int>)`."""
    found = []
    for node in ast.walk(tree):
        value = None
        if isinstance(node, ast.Return):
            value = node.value
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "SystemExit":
            value = node.args[0] if node.args else None
        if isinstance(value, ast.Constant) and type(value.value) is int:
            found.append(node.lineno)
    return sorted(found)


def test_the_command_returns_no_bare_exit_status() -> None:
    bare = {
        str(path.relative_to(OAUTHD.parent)): lines
        for path in sorted((OAUTHD / "cli").glob("*.py"))
        if (lines := returned_numbers(ast.parse(path.read_text(encoding="utf-8"))))
    }
    assert not bare, f"return an ExitCode: {bare}"
    assert returned_numbers(ast.parse("def f():\n    return 69\n")) == [2]
