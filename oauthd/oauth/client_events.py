"""The audit events of client registrations: registered, created by the operator,
deleted by an admin (removed by the registry's hygiene: `hygiene.removed_event`). Each
carries the app's `fingerprint` (12 hex characters of the digest of its name and
redirect set, loopback
ports as `:*`), so that a registration of the same app anew is recognised
(`oauthd explain`: "client re-registered")."""

from __future__ import annotations

from oauthd.audit import AuditEvent, reasons
from oauthd.model import Client
from oauthd.oauth.hygiene import fingerprint as fingerprint


def registered(client: Client, event: str = "client_registered") -> AuditEvent:
    """`event`: "client_registered" (RFC 7591) or "client_created" (`oauthd clients add`)."""
    return AuditEvent(
        event,
        client_id=client.client_id,
        resource=client.resource,
        detail={
            "client_name": client.client_name,
            "fingerprint": fingerprint(client),
            "auth_method": client.token_endpoint_auth_method,
            "grant_types": " ".join(client.grant_types),
            "redirect_uris": " ".join(client.redirect_uris),
        },
    )


def deleted(client: Client) -> AuditEvent:
    """An admin deleted the client (`oauthd clients delete`); its grants end with it."""
    return AuditEvent(
        "client_deleted",
        client_id=client.client_id,
        reason=reasons.CLIENT_DELETED,
        detail={"client_name": client.client_name, "fingerprint": fingerprint(client)},
    )
