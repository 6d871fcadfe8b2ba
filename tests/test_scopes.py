from __future__ import annotations

import pytest

from oauthd.scopes import FLAT, ScopeHierarchy

HIERARCHY = ScopeHierarchy(
    {"files:admin": ["files:write"], "files:write": ["files:read"], "a": ["b"], "b": ["a"]}
)


@pytest.mark.parametrize(
    ("granted", "closure"),
    [
        ({"files:read"}, {"files:read"}),
        ({"files:write"}, {"files:write", "files:read"}),
        ({"files:admin"}, {"files:admin", "files:write", "files:read"}),  # transitive
        ({"a"}, {"a", "b"}),  # a cycle ends
        (set(), set()),
        ({"other"}, {"other"}),
    ],
)
def test_closure(granted: set[str], closure: set[str]) -> None:
    assert HIERARCHY.closure(frozenset(granted)) == closure


@pytest.mark.parametrize(
    ("granted", "required", "covered", "missing"),
    [
        ({"files:admin"}, ["files:read"], True, ()),
        ({"files:read"}, ["files:write"], False, ("files:write",)),
        ({"files:read"}, ["files:read", "x", "x", "y"], False, ("x", "y")),
        (set(), [], True, ()),
    ],
)
def test_covers_and_missing(
    granted: set[str], required: list[str], covered: bool, missing: tuple[str, ...]
) -> None:
    assert HIERARCHY.covers(frozenset(granted), required) is covered
    assert HIERARCHY.missing(frozenset(granted), required) == missing


def test_without_a_hierarchy_scopes_are_flat() -> None:
    assert not FLAT
    assert FLAT.closure(frozenset({"files:write"})) == {"files:write"}
    assert not FLAT.covers(frozenset({"files:write"}), ["files:read"])
