"""What the consent page asks: which resource, and which scopes in words.

A step-up (the user allowed this client some scopes of this resource before, and the
request asks for more) asks only for the added scopes; the ones already allowed are
named apart. Consent is remembered per (user, client, resource): see `Authorizer`.
"""

from __future__ import annotations

from dataclasses import dataclass

from oauthd.config import Config
from oauthd.log import audit
from oauthd.oauth.authorize import Flow


@dataclass(slots=True, frozen=True)
class ScopeWords:
    scope: str
    words: str  # `[oauth] scope_descriptions`, or the scope itself when it has none


@dataclass(slots=True, frozen=True)
class ConsentRequest:
    """The consent page's questions for one flow."""

    resource_name: str
    resource_path: str
    asked: tuple[ScopeWords, ...]  # what the user is asked to allow now
    allowed: tuple[ScopeWords, ...]  # what they allowed this client here before (a step-up)

    @property
    def step_up(self) -> bool:
        return bool(self.allowed)


class ScopeDescriptions:
    def __init__(self, config: Config) -> None:
        self._words = dict(config.oauth.scope_descriptions)

    def describe(self, scopes: tuple[str, ...]) -> tuple[ScopeWords, ...]:
        return tuple(ScopeWords(s, self._words.get(s, s)) for s in scopes)

    def request(
        self,
        resource_name: str,
        resource_path: str,
        wanted: tuple[str, ...],
        consented: tuple[str, ...],
        added: tuple[str, ...],
    ) -> ConsentRequest:
        """`wanted`: what the flow asks; `consented`: what the user allowed before;
        `added`: what `wanted` has beyond that (the hierarchy applied). When some of
        `wanted` was allowed before and some not (a step-up), only `added` is asked; when
        all of it was (the page confirms a sign-in from an earlier one), all of it is."""
        before = tuple(s for s in wanted if s not in added) if consented and added else ()
        asked = added if before else wanted
        return ConsentRequest(
            resource_name, resource_path, self.describe(asked), self.describe(before)
        )


def consent_audit(flow: Flow, allow: bool, remembered: bool, resource_path: str) -> None:
    """The audit line of a consent decision (`remembered`: an earlier one, applied)."""
    decision = "allow" if allow else "deny"
    audit(
        "consent",
        f"consent: {decision}",
        decision=decision,
        user=flow.pending.user,
        client_id=flow.client.client_id,
        scopes=" ".join(flow.pending.scopes),
        resource=resource_path,
        device=flow.pending.device_key is not None,
        remembered=remembered,
    )
