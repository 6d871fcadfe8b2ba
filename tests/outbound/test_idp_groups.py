"""`login.oidc.groups_claim`: the ID token claim that holds the user's groups."""

from __future__ import annotations

from typing import Any

import pytest

from oauthd.outbound.idp import MAX_GROUPS, claimed_groups


@pytest.mark.parametrize(
    ("claims", "claim", "groups"),
    [
        ({"groups": ["ops", "staff"]}, "groups", ("ops", "staff")),
        ({"groups": "ops"}, "groups", ("ops",)),  # one string: one group
        ({"groups": ["ops", "ops", "", 7, {"x": 1}, "dev"]}, "groups", ("ops", "dev")),
        ({"groups": ["ops"]}, "", ()),  # no claim configured: no groups
        ({"roles": ["ops"]}, "groups", ()),  # the claim is absent
        ({"groups": ""}, "groups", ()),
        ({"groups": 5}, "groups", ()),
        ({"groups": None}, "groups", ()),
        ({"https://example.com/groups": ["a"]}, "https://example.com/groups", ("a",)),
    ],
)
def test_claimed_groups(claims: dict[str, Any], claim: str, groups: tuple[str, ...]) -> None:
    assert claimed_groups(claims, claim) == groups


def test_a_huge_claim_is_cut() -> None:
    many = [f"g{i}" for i in range(MAX_GROUPS + 50)]
    assert claimed_groups({"groups": many}, "groups") == tuple(many[:MAX_GROUPS])
