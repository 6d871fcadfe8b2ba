"""What an audit record says: one `AuditEvent`, written with the change it describes.

An event names who and what (the principal, the client, the resource, 8 characters of the
grant id, a reason code) and never a token, secret, code or tool argument. `detail` holds
the few plain values an event has beyond those (scopes, a rule id, an upstream status).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

Plain: TypeAlias = str | int | float | bool | None


class OfGrant(Protocol):
    """What an event takes from a grant (`oauthd.model.Grant`)."""

    @property
    def id(self) -> str: ...
    @property
    def user(self) -> str: ...
    @property
    def client_id(self) -> str: ...


def grant_ref(grant_id: str) -> str:
    """What logs and audit records show of a grant id: its first 8 characters (enough to
    correlate)."""
    return grant_id[:8]


# Not frozen, though never changed once made: a frozen dataclass's __init__ costs more than
# twice as much, and two are made per audited tool call.
@dataclass(slots=True)
class AuditEvent:
    event: str  # "token_issued", "grant_revoked", "call_decided", ... (docs/audit.md)
    user: str | None = None  # the principal's name: a user, or "client:<client_id>"
    client_id: str | None = None
    resource: str | None = None
    grant: str | None = None  # the first 8 characters of the grant id
    reason: str | None = None  # a reason code (`oauthd.audit.reasons`)
    detail: Mapping[str, Plain] = field(default_factory=dict)

    @classmethod
    def of_grant(
        cls,
        event: str,
        grant: OfGrant,
        resource: str | None = None,
        *,
        reason: str | None = None,
        detail: Mapping[str, Plain] | None = None,
    ) -> AuditEvent:
        """An event about `grant`: its user, client and reference filled in."""
        return cls(
            event, grant.user, grant.client_id, resource, grant_ref(grant.id), reason, detail or {}
        )

    def fields(self) -> dict[str, Plain]:
        """The event as a record's fields, empty ones left out."""
        # spelled out rather than a loop over the names: one per audited call, a hot path
        found: dict[str, Plain] = {"event": self.event}
        if self.user is not None:
            found["user"] = self.user
        if self.client_id is not None:
            found["client_id"] = self.client_id
        if self.resource is not None:
            found["resource"] = self.resource
        if self.grant is not None:
            found["grant"] = self.grant
        if self.reason is not None:
            found["reason"] = self.reason
        detail = self.detail
        if detail and found.keys().isdisjoint(detail) and RESERVED.isdisjoint(detail):
            found.update(detail)  # the usual case, in one step
        elif detail:
            for name, value in detail.items():
                if name not in found and name not in RESERVED:
                    found[name] = value
        return found


RESERVED = frozenset({"n", "at", "chain", "prev", "hash", "request_id", "event"})

# What a table's write takes as `audit=`: the event, or a function of the record written
# (the new record of add/put/update, the removed one of take/delete) that makes it, or
# returns None when that write needs no record.
Audit: TypeAlias = AuditEvent | Callable[[Any], AuditEvent | None]


def resolve(audit: Audit | None, record: object) -> AuditEvent | None:
    if audit is None or isinstance(audit, AuditEvent):
        return audit
    return audit(record)
