"""What the consent page asks: which resource, and which scopes in words.

A step-up (the user allowed this client some scopes of this resource before, and the
request asks for more) asks only for the added scopes; the ones already allowed are
named apart. Consent is remembered per (user, client, resource): see `Authorizer`.
"""

from __future__ import annotations

from dataclasses import dataclass

from oauthd.audit import AuditEvent
from oauthd.config import Config
from oauthd.oauth.authorize import Authorizer, Flow
from oauthd.oauth.device import DeviceFlows
from oauthd.store import Store


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


def consent_event(flow: Flow, allow: bool, remembered: bool, resource_path: str) -> AuditEvent:
    """The record of a consent decision (`remembered`: an earlier one, applied)."""
    return AuditEvent(
        "consent",
        user=flow.pending.user,
        client_id=flow.client.client_id,
        resource=resource_path,
        detail={
            "decision": "allow" if allow else "deny",
            "scopes": " ".join(flow.pending.scopes),
            "device": flow.pending.device_key is not None,
            "remembered": remembered,
        },
    )


async def finish_consent(
    store: Store,
    authorizer: Authorizer,
    devices: DeviceFlows,
    flow: Flow,
    allow: bool,
    remembered: bool,
) -> str | None:
    """Record the consent decision: the consent remembered with its record (an allow), or
    the record alone (a deny). For a code flow: the URL to send the browser to; for a
    device approval: None (the device gets its tokens by polling)."""
    event = consent_event(flow, allow, remembered, authorizer.resource_path(flow.pending))
    if flow.pending.device_key is not None:
        await devices.decide(flow.pending, allow)  # refuses an expired flow first
    if allow:
        await authorizer.remember_consent(flow, audit=event)
    else:
        await store.audit.append(event)
    if flow.pending.device_key is not None:
        return None
    if allow:
        return await authorizer.approve(flow)
    return await authorizer.deny(flow)
