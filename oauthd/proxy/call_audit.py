"""The record of every `tools/call`, `resources/read` and `prompts/get` (`[audit] calls`):
who called what and what was decided, durable before the call reaches the upstream (a
refused call is recorded too); once the upstream answered, a second record with the same
call id, the upstream's status and the latency, written without waiting. Never an
argument: the method and the name (tool, prompt, resource URI) only."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Sequence
from typing import Any, NamedTuple

from oauthd.audit import AuditEvent, AuditTrail, reasons
from oauthd.model import Grant
from oauthd.policy import Call, call_of

AUDITED = frozenset({"tools/call", "resources/read", "prompts/get"})


class Decided(NamedTuple):
    """One call and its decision: "allow", "deny" or "step_up", and the rule that made it."""

    call: Call
    outcome: str
    rule: str | None = None


def allowed_calls(message: Any) -> list[Decided]:
    """The audited calls of a message (or batch) a resource without rules lets through."""
    found = []
    for each in message if isinstance(message, list) else (message,):
        call = call_of(each)
        if call is not None and call.method in AUDITED:
            found.append(Decided(call, "allow"))
    return found


class CallAudit:
    def __init__(self, trail: AuditTrail) -> None:
        self._trail = trail

    def decided(
        self, grant: Grant, resource: str, calls: Sequence[Decided], request_id: str
    ) -> tuple[list[str], Awaitable[None] | None]:
        """Record each audited call's decision: their call ids, and what to await before
        the calls go anywhere (durable once it is done; None: no audited call)."""
        ids: list[str] = []
        writes: list[Awaitable[None]] = []
        for number, (call, outcome, rule) in enumerate(calls, 1):
            if call.method not in AUDITED:
                continue
            call_id = f"{request_id}.{number}"
            ids.append(call_id)
            refused = outcome != "allow"
            event = AuditEvent.of_grant(
                "call_decided",
                grant,
                resource,
                reason=reasons.policy_rule(rule) if refused else None,
                detail={
                    "call": call_id,
                    "principal": grant.principal,
                    "method": call.method,
                    "target": call.name,
                    "decision": outcome,
                    "rule": rule,
                },
            )
            writes.append(self._trail.durable(event))
        if len(writes) <= 1:
            return ids, writes[0] if writes else None
        return ids, _in_order(writes)

    def completed(
        self, grant: Grant, resource: str, call_ids: Sequence[str], status: int, seconds: float
    ) -> None:
        """The upstream answered the forwarded calls (`status`, after `seconds`)."""
        for call_id in call_ids:
            self._trail.append_soon(
                AuditEvent.of_grant(
                    "call_completed",
                    grant,
                    resource,
                    detail={
                        "call": call_id,
                        "upstream_status": status,
                        "latency_ms": int(seconds * 10_000) / 10,  # cheaper than round()
                    },
                )
            )


async def _in_order(writes: list[Awaitable[None]]) -> None:
    """Each write awaited in turn; after a failure the rest are dropped (a coroutine
    closed, a future cancelled) rather than left never awaited."""
    for index, write in enumerate(writes):
        try:
            await write
        except BaseException:
            for rest in writes[index + 1 :]:
                if inspect.iscoroutine(rest):
                    rest.close()
                elif isinstance(rest, asyncio.Future):
                    rest.cancel()
            raise
