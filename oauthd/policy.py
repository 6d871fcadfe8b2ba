"""Per-resource policy: which caller may make which MCP call. A pure function of the
rules, the caller, the token's scopes and the call; no I/O, no aiohttp.

Rules are ordered and the first whose method and name match decides:
- `effect = "deny"`: denied, with the rule's message;
- a caller outside the rule's `users`, `groups`, `clients` or `principals` (each, when
  set): denied;
- scopes missing from `require_scopes` (the hierarchy honoured): a step-up, whose scopes
  are everything the call needs (the resource's required scopes and the rule's), since a
  challenge names them all at once;
- otherwise allowed.
No rule matches: allowed when the token holds the resource's `required_scopes`, else a
step-up to them. Every decision names the rule that made it (None for the default), for
the log line.

`visible` decides what a listing shows: a caller never sees what it may never call (a
denial); what a step-up would unlock stays listed.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from oauthd.scopes import FLAT, ScopeHierarchy

# The parameter that names what a call acts on, per method.
NAME_PARAMS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
# Calls that name a resource too, by `uri`, without an `Mcp-Name` header to mirror it.
NAMED_BY_BODY = {"resources/subscribe": "uri", "resources/unsubscribe": "uri"}
# What a listing lists, as the call that would use each entry, and the entry's name key.
LISTINGS = {
    "tools/list": ("tools", "tools/call", "name"),
    "prompts/list": ("prompts", "prompts/get", "name"),
    "resources/list": ("resources", "resources/read", "uri"),
}


# Call and Caller are named tuples, not frozen dataclasses: the proxy builds both for every
# call of a resource with rules, and a tuple is built and hashed in C (a frozen dataclass
# took 0.5 us each).
class Call(NamedTuple):
    """What a JSON-RPC message asks: its method, and the name it acts on, if any."""

    method: str
    name: str | None = None


class Caller(NamedTuple):
    """Who is calling, as policy sees it."""

    user: str
    client_id: str
    groups: frozenset[str] = frozenset()
    principal: str = "user"  # Grant.principal: "user" (a person) or "service" (a machine)


class _Globs:
    """Names matched as shell-style globs (case-sensitive); exact names by set lookup."""

    __slots__ = ("_exact", "_pattern")

    def __init__(self, globs: Iterable[str]) -> None:
        exact: list[str] = []
        wild: list[str] = []
        for glob in globs:
            (wild if any(c in glob for c in "*?[") else exact).append(glob)
        self._exact = frozenset(exact)
        self._pattern = (
            re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in wild)) if wild else None
        )

    def match(self, name: str) -> bool:
        if name in self._exact:
            return True
        return self._pattern is not None and self._pattern.match(name) is not None


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    method: str = "*"
    names: tuple[str, ...] = ()  # empty: any name (and calls that name nothing)
    require_scopes: tuple[str, ...] = ()
    users: tuple[str, ...] | None = None
    groups: tuple[str, ...] | None = None
    clients: tuple[str, ...] | None = None
    principals: tuple[str, ...] | None = None
    effect: Literal["allow", "deny"] = "allow"
    message: str = ""
    _method: _Globs = field(init=False, repr=False, compare=False)
    _names: _Globs | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_method", _Globs((self.method,)))
        object.__setattr__(self, "_names", _Globs(self.names) if self.names else None)

    def matches(self, call: Call) -> bool:
        if not self._method.match(call.method):
            return False
        if self._names is None:
            return True
        return call.name is not None and self._names.match(call.name)

    def admits(self, caller: Caller) -> bool:
        if self.users is not None and caller.user not in self.users:
            return False
        if self.groups is not None and caller.groups.isdisjoint(self.groups):
            return False
        if self.principals is not None and caller.principal not in self.principals:
            return False
        return self.clients is None or caller.client_id in self.clients


@dataclass(frozen=True, slots=True)
class Allow:
    rule: str | None = None


@dataclass(frozen=True, slots=True)
class Deny:
    rule: str
    message: str


@dataclass(frozen=True, slots=True)
class StepUp:
    """The call needs `scopes` (all of them, held or not); `rule` asked for them."""

    rule: str | None
    scopes: tuple[str, ...]


Decision = Allow | Deny | StepUp
ALLOWED = Allow()  # the default decision
NOT_ALLOWED = "this call is not allowed"
MATCH_CACHE = 4096


@dataclass(frozen=True, slots=True)
class Policy:
    """One resource's rules, its required scopes and the scope hierarchy."""

    rules: tuple[Rule, ...] = ()
    required_scopes: tuple[str, ...] = ()
    hierarchy: ScopeHierarchy = FLAT
    # The rule (or None) that decides each call seen: which rule matches depends on the
    # call alone, and an upstream has few distinct methods and names.
    _matched: dict[Call, Rule | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    # What a call a rule decides needs: the required scopes and the rule's, by the rule
    # (its `id()`: ids of rules built outside a config need not be unique).
    _needed: dict[int, tuple[str, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    # The Allow of each rule, built once (a decision is a value: the same one serves all).
    _allowed: dict[int, Allow] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for rule in self.rules:
            scopes = (*self.required_scopes, *rule.require_scopes)
            self._needed[id(rule)] = tuple(dict.fromkeys(scopes))
            self._allowed[id(rule)] = Allow(rule.id)

    def decide(self, caller: Caller, scopes: frozenset[str], call: Call) -> Decision:
        try:
            rule = self._matched[call]
        except KeyError:
            rule = self._first_match(call)
        if rule is not None:
            return self._by_rule(rule, caller, scopes)
        if self.hierarchy.covers(scopes, self.required_scopes):
            return ALLOWED
        return StepUp(None, self.required_scopes)

    def _first_match(self, call: Call) -> Rule | None:
        rule = next((r for r in self.rules if r.matches(call)), None)
        if len(self._matched) >= MATCH_CACHE:  # names chosen by callers: stay bounded
            self._matched.clear()
        self._matched[call] = rule
        return rule

    def _by_rule(self, rule: Rule, caller: Caller, scopes: frozenset[str]) -> Decision:
        if rule.effect == "deny":
            return Deny(rule.id, rule.message or NOT_ALLOWED)
        if not rule.admits(caller):
            return Deny(rule.id, rule.message or NOT_ALLOWED)
        needed = self._needed[id(rule)]
        if not self.hierarchy.covers(scopes, needed):
            return StepUp(rule.id, needed)
        return self._allowed[id(rule)]

    def visible(self, caller: Caller, scopes: frozenset[str], call: Call) -> bool:
        """Whether a listing shows the entry that `call` would use."""
        return not isinstance(self.decide(caller, scopes, call), Deny)


def call_of(message: Any) -> Call | None:
    """The call a JSON-RPC request or notification makes; None if `message` is neither
    (a response, or not JSON-RPC at all)."""
    if not isinstance(message, dict) or not isinstance(method := message.get("method"), str):
        return None
    key = NAME_PARAMS.get(method) or NAMED_BY_BODY.get(method)
    if key is None:
        return Call(method)
    params = message.get("params")
    name = params.get(key) if isinstance(params, dict) else None
    return Call(method, name if isinstance(name, str) else None)


def filter_listing(
    policy: Policy, caller: Caller, scopes: frozenset[str], method: str, result: Any
) -> tuple[Any, bool]:
    """A listing's `result` without the entries `caller` may never use, and whether
    anything was dropped. Anything that is not a listing of `method` is returned as is."""
    listing = LISTINGS.get(method)
    if listing is None or not isinstance(result, dict):
        return result, False
    key, used_by, name_key = listing
    entries = result.get(key)
    if not isinstance(entries, list):
        return result, False
    kept = [
        entry
        for entry in entries
        if not isinstance(entry, dict)
        or not isinstance(name := entry.get(name_key), str)
        or policy.visible(caller, scopes, Call(used_by, name))
    ]
    if len(kept) == len(entries):
        return result, False
    return {**result, key: kept}, True
