"""Ids that start with "-" (1 in 64 base64url ids) reach the admin commands intact."""

from __future__ import annotations

import pytest

from oauthd import cli
from oauthd.cli.admin import dash_safe


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["sessions", "revoke", "--id", "-x9"], ["sessions", "revoke", "--id=-x9"]),
        (["sessions", "revoke", "--id", "--x9"], ["sessions", "revoke", "--id=--x9"]),
        (
            ["sessions", "list", "--client", "-c", "--json"],
            ["sessions", "list", "--client=-c", "--json"],
        ),
        (["sessions", "revoke", "--user", "bob"], ["sessions", "revoke", "--user=bob"]),
        (["clients", "delete", "-c1", "--json"], ["clients", "delete", "--json", "--", "-c1"]),
        (
            ["clients", "delete", "--socket", "-s.sock", "-c1"],
            ["clients", "delete", "--socket", "-s.sock", "--", "-c1"],
        ),
        (["clients", "delete", "c1", "--json"], ["clients", "delete", "c1", "--json"]),
        (["clients", "delete", "--", "-c1"], ["clients", "delete", "--", "-c1"]),
        (["serve", "--config", "x.toml"], ["serve", "--config", "x.toml"]),
    ],
)
def test_dash_safe(argv: list[str], expected: list[str]) -> None:
    assert dash_safe(argv) == expected


@pytest.mark.parametrize(
    ("argv", "field", "value"),
    [
        (["sessions", "revoke", "--id", "-AbC_1", "--socket", "s"], "id", "-AbC_1"),
        (["sessions", "list", "--client", "--c", "--socket", "s"], "client", "--c"),
        (["clients", "delete", "-c1", "--json", "--socket", "s"], "client_id", "-c1"),
    ],
)
def test_the_parser_gets_the_whole_id(argv: list[str], field: str, value: str) -> None:
    args = cli.build_parser().parse_args(dash_safe(argv))
    assert getattr(args, field) == value
