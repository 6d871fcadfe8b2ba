"""The policy step of the gate (issue #12): a resource's rules (`oauthd.policy`) decide
each JSON-RPC message of a request, after the bearer check and before anything of the
request reaches the upstream.

A batch is decided element by element: any denial refuses the whole batch (403, JSON-RPC
error -32003 with the rule's message), else any step-up refuses it with one challenge
naming every scope its calls need (403 `insufficient_scope`, -32004). Messages that are
no call (answers to the server's own requests) pass: the bearer check already required
the resource's scopes. Listings (`tools/list`, ...) pass too, and are noted so that their
answers are filtered for the caller (`proxy/listings.py`).

Only resources with rules have this step: without rules the default decision needs only
the resource's required scopes, which the bearer check has checked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from oauthd.audit.reasons import policy_rule
from oauthd.config import Config, ResourceConfig
from oauthd.metrics import Metrics
from oauthd.model import Grant
from oauthd.oauth import upgrade_url
from oauthd.policy import (
    LISTINGS,
    Allow,
    Call,
    Caller,
    Decision,
    Deny,
    Policy,
    Rule,
    StepUp,
    call_of,
)
from oauthd.proxy.answers import ProxyRefusal, policy_denied, scope_challenge
from oauthd.proxy.call_audit import Decided
from oauthd.proxy.messages import request_id
from oauthd.scopes import ScopeHierarchy

log = logging.getLogger("oauthd.proxy")

GroupsOf = Callable[[Grant], frozenset[str]]
OUTCOMES = {Allow: "allow", Deny: "deny"}  # anything else: step_up


def policy_of(resource: ResourceConfig, hierarchy: ScopeHierarchy) -> Policy | None:
    """The resource's policy; None for a resource without rules (nothing to decide)."""
    if not resource.rules:
        return None
    rules = tuple(
        Rule(
            id=rule.id,
            method=rule.method,
            names=rule.name,
            require_scopes=rule.require_scopes,
            users=rule.users,
            groups=rule.groups,
            clients=rule.clients,
            principals=rule.principals,
            effect="deny" if rule.effect == "deny" else "allow",
            message=rule.message,
        )
        for rule in resource.rules
    )
    return Policy(rules, resource.required_scopes, hierarchy)


@dataclass(frozen=True, slots=True)
class Listed:
    """The listings a request asks for, whose answers are filtered for its caller:
    `methods` maps each listing's request id to its method; `private`: the request's
    protocol version has `cacheScope` (2026-07-28 on); `by_shape`: a GET stream, whose
    answers (a resumed POST's, replayed) are to requests it never saw: any answer shaped
    like a listing is one."""

    policy: Policy
    caller: Caller
    scopes: frozenset[str]
    methods: dict[str | int, str]
    private: bool
    by_shape: bool = False


class Policing:
    def __init__(
        self,
        config: Config,
        resource: ResourceConfig,
        policy: Policy,
        groups_of: GroupsOf,
        metrics: Metrics,
    ) -> None:
        issuer = config.server.issuer
        self.policy = policy
        self._uri = resource.uri(issuer)
        self._metadata_url = f"{issuer}/.well-known/oauth-protected-resource{resource.path}"
        self._issuer = issuer
        self._hierarchy = policy.hierarchy
        self._groups_of = groups_of
        self._count = metrics.policy_decisions(resource.path)

    def stream_listings(self, grant: Grant, private: bool) -> Listed:
        """What a GET stream's answers are filtered by: any listing on it (a client that
        resumes a listing's stream with Last-Event-ID must not read it unfiltered)."""
        caller = Caller(grant.user, grant.client_id, self._groups_of(grant), grant.principal)
        return Listed(self.policy, caller, frozenset(grant.token_scopes), {}, private, True)

    def check(
        self, grant: Grant, message: Any, private: bool, decided: list[Decided] | None = None
    ) -> Listed | None:
        """Raise the refusal of a message (or batch) the grant's caller may not send;
        return the listings it asks for (None if none). `decided` gains each call's
        decision (for its audit record)."""
        caller = Caller(grant.user, grant.client_id, self._groups_of(grant), grant.principal)
        scopes = frozenset(grant.token_scopes)
        if isinstance(message, list):
            return self._check_batch(grant, caller, scopes, message, private, decided)
        call = call_of(message)
        if call is None:
            return None
        decision = self.policy.decide(caller, scopes, call)
        self._record(decision, call, grant, decided)
        if type(decision) is not Allow:
            raise self._refusal(grant, scopes, (decision,), request_id(message))
        if call.method in LISTINGS and (rid := request_id(message)) is not None:
            return Listed(self.policy, caller, scopes, {rid: call.method}, private)
        return None

    def _check_batch(
        self,
        grant: Grant,
        caller: Caller,
        scopes: frozenset[str],
        batch: list[Any],
        private: bool,
        decided: list[Decided] | None,
    ) -> Listed | None:
        refused: list[Decision] = []
        listings: dict[str | int, str] = {}
        for each in batch:
            call = call_of(each)
            if call is None:
                continue
            decision = self.policy.decide(caller, scopes, call)
            self._record(decision, call, grant, decided)
            if type(decision) is not Allow:
                refused.append(decision)
            elif call.method in LISTINGS and (rid := request_id(each)) is not None:
                listings[rid] = call.method
        if refused:
            raise self._refusal(grant, scopes, refused, None)
        return Listed(self.policy, caller, scopes, listings, private) if listings else None

    def _refusal(
        self,
        grant: Grant,
        scopes: frozenset[str],
        refused: Sequence[Decision],
        rid: str | int | None,
    ) -> ProxyRefusal:
        """A denial if any decision is one (its message), else one step-up challenge for
        every scope the calls need."""
        denied = next((d for d in refused if isinstance(d, Deny)), None)
        if denied is not None:
            return policy_denied(denied.message, rid, policy_rule(denied.rule))
        needed = tuple(
            dict.fromkeys(scope for d in refused if isinstance(d, StepUp) for scope in d.scopes)
        )
        missing = self._hierarchy.missing(scopes, needed)
        upgrade = upgrade_url(self._issuer, grant.id, missing)
        rule = next((d.rule for d in refused if d.rule is not None), None)
        return scope_challenge(self._metadata_url, needed, upgrade, rid, policy_rule(rule))

    def _record(
        self, decision: Decision, call: Call, grant: Grant, decided: list[Decided] | None
    ) -> None:
        """Count the decision, note it in `decided`; log it with its rule unless it is the
        default allow (an allow by a rule only at debug level: it is every call's fate)."""
        outcome = OUTCOMES.get(type(decision), "step_up")
        self._count[outcome][0] += 1
        if decided is not None:
            decided.append(Decided(call, outcome, decision.rule))
        if decision.rule is None and outcome == "allow":
            return
        level = logging.DEBUG if outcome == "allow" else logging.INFO
        if log.isEnabledFor(level):
            log.log(
                level,
                f"policy: {outcome}",
                extra={
                    "event": "proxy.policy",
                    "rule": decision.rule,
                    "reason": None if outcome == "allow" else policy_rule(decision.rule),
                    "decision": outcome,
                    "method": call.method,
                    # the tool, prompt or resource URI ("name" is the log record's own)
                    "target": call.name,
                    "user": grant.user,
                    "principal": grant.principal,
                    "client": grant.client_id,
                    "resource": self._uri,
                },
            )
