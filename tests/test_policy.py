"""The policy as a table: caller, scopes and call in, decision out."""

from __future__ import annotations

from typing import Any

import pytest

from oauthd.policy import (
    MATCH_CACHE,
    NOT_ALLOWED,
    Allow,
    Call,
    Caller,
    Decision,
    Deny,
    Policy,
    Rule,
    StepUp,
    call_of,
    filter_listing,
)
from oauthd.scopes import ScopeHierarchy

ALICE = Caller("alice", "app", frozenset({"ops"}))
BOB = Caller("bob", "app")
BOB_VIA_CLI = Caller("bob", "cli")
ROBOT = Caller("client:ci", "ci", frozenset(), "service")
READ = frozenset({"files:read"})
WRITE = frozenset({"files:write"})

POLICY = Policy(
    rules=(
        Rule("no-shell", method="tools/call", names=("shell",), effect="deny", message="no"),
        Rule(
            "writes",
            method="tools/call",
            names=("write_*", "delete_*"),
            require_scopes=("files:write",),
        ),
        Rule("deploy-ops", method="tools/call", names=("deploy",), groups=("ops",)),
        Rule("bob-only", method="tools/call", names=("bob_?",), users=("bob",)),
        Rule("cli-reads", method="resources/read", names=("file:///cli/*",), clients=("cli",)),
        Rule("admin-prompt", method="prompts/*", names=("admin",), require_scopes=("admin",)),
        Rule("both", method="tools/call", names=("both",), users=("alice",), groups=("nobody",)),
        Rule("shadowed", method="tools/call", names=("write_report",), effect="deny"),
        Rule("people-only", method="tools/call", names=("chat",), principals=("user",)),
        Rule("machines-only", method="tools/call", names=("batch_*",), principals=("service",)),
        Rule("pings", method="ping"),
    ),
    required_scopes=("files:read",),
    hierarchy=ScopeHierarchy({"files:write": ["files:read"]}),
)


@pytest.mark.parametrize(
    ("caller", "scopes", "call", "decision"),
    [
        # deny rule, with its message; the default message when it has none
        (ALICE, WRITE, Call("tools/call", "shell"), Deny("no-shell", "no")),
        # a glob list; the hierarchy (write implies the resource's read)
        (BOB, WRITE, Call("tools/call", "write_file"), Allow("writes")),
        (BOB, WRITE, Call("tools/call", "delete_dir"), Allow("writes")),
        # missing scopes: a step-up naming everything the call needs
        (
            BOB,
            READ,
            Call("tools/call", "write_file"),
            StepUp("writes", ("files:read", "files:write")),
        ),
        # first match wins: "writes" decides before "shadowed" is reached
        (BOB, WRITE, Call("tools/call", "write_report"), Allow("writes")),
        # groups
        (ALICE, READ, Call("tools/call", "deploy"), Allow("deploy-ops")),
        (BOB, READ, Call("tools/call", "deploy"), Deny("deploy-ops", NOT_ALLOWED)),
        # users, and `?`
        (BOB, READ, Call("tools/call", "bob_1"), Allow("bob-only")),
        (ALICE, READ, Call("tools/call", "bob_1"), Deny("bob-only", NOT_ALLOWED)),
        (BOB, READ, Call("tools/call", "bob_12"), Allow()),  # `?` is one character
        # clients, and a resource URI as the name
        (BOB_VIA_CLI, READ, Call("resources/read", "file:///cli/a"), Allow("cli-reads")),
        (BOB, READ, Call("resources/read", "file:///cli/a"), Deny("cli-reads", NOT_ALLOWED)),
        # a method glob; a scope the hierarchy does not give
        (
            ALICE,
            WRITE,
            Call("prompts/get", "admin"),
            StepUp("admin-prompt", ("files:read", "admin")),
        ),
        (
            ALICE,
            frozenset({"admin", "files:read"}),
            Call("prompts/get", "admin"),
            Allow("admin-prompt"),
        ),
        # every condition set must hold
        (ALICE, READ, Call("tools/call", "both"), Deny("both", NOT_ALLOWED)),
        # a rule without names matches whatever the call names (or not)
        (BOB, READ, Call("ping"), Allow("pings")),
        # a rule with names never matches a call that names nothing
        (BOB, READ, Call("tools/call"), Allow()),
        # no rule: the resource's required scopes
        (BOB, READ, Call("tools/call", "other"), Allow()),
        (BOB, frozenset(), Call("tools/call", "other"), StepUp(None, ("files:read",))),
        (BOB, frozenset(), Call("initialize"), StepUp(None, ("files:read",))),
        # names are case-sensitive
        (ALICE, WRITE, Call("tools/call", "SHELL"), Allow()),
        # principals: a person, or a client acting for itself (client credentials)
        (BOB, READ, Call("tools/call", "chat"), Allow("people-only")),
        (ROBOT, READ, Call("tools/call", "chat"), Deny("people-only", NOT_ALLOWED)),
        (ROBOT, READ, Call("tools/call", "batch_import"), Allow("machines-only")),
        (ALICE, READ, Call("tools/call", "batch_import"), Deny("machines-only", NOT_ALLOWED)),
        (ROBOT, READ, Call("tools/call", "other"), Allow()),
    ],
)
def test_decide(caller: Caller, scopes: frozenset[str], call: Call, decision: Decision) -> None:
    assert POLICY.decide(caller, scopes, call) == decision


def test_no_rules_and_no_required_scopes_allow_everything() -> None:
    assert Policy().decide(BOB, frozenset(), Call("tools/call", "x")) == Allow()


def test_a_glob_character_class() -> None:
    policy = Policy(rules=(Rule("r", names=("tool_[ab]",), effect="deny"),))
    assert isinstance(policy.decide(BOB, READ, Call("tools/call", "tool_a")), Deny)
    assert policy.decide(BOB, READ, Call("tools/call", "tool_c")) == Allow()


@pytest.mark.parametrize(
    ("message", "call"),
    [
        (
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x"}},
            Call("tools/call", "x"),
        ),
        (
            {"jsonrpc": "2.0", "id": 1, "method": "prompts/get", "params": {"name": "p"}},
            Call("prompts/get", "p"),
        ),
        (
            {"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": "u:/"}},
            Call("resources/read", "u:/"),
        ),
        (
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            Call("notifications/initialized"),
        ),
        (
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": 7}},
            Call("tools/call"),
        ),
        ({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": ["x"]}, Call("tools/call")),
        (
            {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"name": "x"}},
            Call("tools/list"),
        ),
        (
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "resources/subscribe",
                "params": {"uri": "f://a"},
            },
            Call("resources/subscribe", "f://a"),
        ),
        (
            {"jsonrpc": "2.0", "method": "resources/unsubscribe", "params": {"uri": "f://a"}},
            Call("resources/unsubscribe", "f://a"),
        ),
        ({"jsonrpc": "2.0", "id": 1, "result": {}}, None),
        ({"method": 3}, None),
        ([{"method": "ping"}], None),
        ("tools/call", None),
    ],
)
def test_call_of(message: Any, call: Call | None) -> None:
    assert call_of(message) == call


TOOLS = {
    "tools": [
        {"name": "read_file"},
        {"name": "write_file"},  # needs a step-up: stays listed
        {"name": "shell"},  # denied: dropped
        {"name": "deploy"},  # alice's group only
        {"title": "nameless"},  # cannot be decided: kept
    ],
    "nextCursor": "c",
}


def test_a_listing_drops_what_the_caller_may_never_call() -> None:
    result, dropped = filter_listing(POLICY, BOB, READ, "tools/list", TOOLS)
    assert dropped
    assert [t.get("name") for t in result["tools"]] == ["read_file", "write_file", None]
    assert result["nextCursor"] == "c"
    result, dropped = filter_listing(POLICY, ALICE, READ, "tools/list", TOOLS)
    assert [t.get("name") for t in result["tools"]] == ["read_file", "write_file", "deploy", None]
    assert TOOLS["tools"][2] == {"name": "shell"}  # the upstream's answer is not changed


def test_other_listings_and_other_answers() -> None:
    resources = {"resources": [{"uri": "file:///cli/a"}, {"uri": "file:///b"}]}
    result, dropped = filter_listing(POLICY, BOB, READ, "resources/list", resources)
    assert dropped and result == {"resources": [{"uri": "file:///b"}]}
    prompts = {"prompts": [{"name": "admin"}]}  # a step-up: listed
    assert filter_listing(POLICY, BOB, READ, "prompts/list", prompts) == (prompts, False)
    assert filter_listing(POLICY, BOB, READ, "tools/call", TOOLS) == (TOOLS, False)
    assert filter_listing(POLICY, BOB, READ, "tools/list", {"tools": "x"}) == (
        {"tools": "x"},
        False,
    )
    assert filter_listing(POLICY, BOB, READ, "tools/list", None) == (None, False)


def test_the_match_cache_stays_bounded() -> None:
    policy = Policy(rules=(Rule("deny-x", names=("x*",), effect="deny"),))
    for index in range(MATCH_CACHE + 10):
        expected = Deny("deny-x", NOT_ALLOWED) if index % 2 else Allow()
        name = f"x{index}" if index % 2 else f"y{index}"
        assert policy.decide(BOB, READ, Call("tools/call", name)) == expected
    assert len(policy._matched) <= MATCH_CACHE
