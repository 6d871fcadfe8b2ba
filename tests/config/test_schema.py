"""oauthd/config/schema.py: the generic builder every section goes through (the whole
file's rules and messages are in tests/test_config.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from oauthd.config import ConfigError
from oauthd.config.convert import positive_int, string
from oauthd.config.schema import At, build, key, section, show

AT = At("f.toml", "", Path("/base"))


@dataclass(frozen=True, slots=True)
class Inner:
    n: int = field(metadata=key(positive_int, 1))


def at_least_two(inner: Inner, at: At) -> None:
    if inner.n < 2:
        raise at.key("n").error("must be at least 2")


@dataclass(frozen=True, slots=True)
class Outer:
    name: str = field(metadata=key(string))
    inner: Inner = field(metadata=key(section(Inner, at_least_two), {"n": 2}))


def test_defaults_are_converted_like_given_values() -> None:
    assert build(Outer, {"name": "x"}, AT) == Outer("x", Inner(2))


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({}, "f.toml: name: missing (this key is required)"),
        ({"name": "x", "extra": 1}, "f.toml: extra: unknown section"),
        ({"name": "x", "inner": {"m": 1}}, "f.toml: inner.m: unknown key"),
        ({"name": "x", "inner": []}, "f.toml: inner: expected a table, got an array"),
        ({"name": "x", "inner": {"n": 1}}, "f.toml: inner.n: must be at least 2"),
        ({"name": True}, "f.toml: name: expected a string, got true"),
    ],
)
def test_every_error_names_the_file_and_key_path(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        build(Outer, table, AT)
    assert str(raised.value) == message


def test_items_of_arrays_have_an_index_in_the_path() -> None:
    assert AT.key("login").key("users").item(1).key("username").path == ("login.users[1].username")


def test_values_are_shown_as_written_in_toml() -> None:
    assert [show(v) for v in (False, "é", {}, [], 2.5)] == [
        "false",
        '"é"',
        "a table",
        "an array",
        "2.5",
    ]


def test_every_error_at_once_and_a_hint_for_a_typo() -> None:
    with pytest.raises(ConfigError) as raised:
        build(Outer, {"nme": "x", "inner": {"n": "two", "nn": 3}}, AT)
    assert raised.value.messages == (
        'f.toml: nme: unknown section (did you mean "name"?)',
        "f.toml: name: missing (this key is required)",
        "f.toml: inner.nn: unknown key",
        'f.toml: inner.n: expected a whole number of at least 1, got "two"',
    )
    assert str(raised.value) == "\n".join(raised.value.messages)
