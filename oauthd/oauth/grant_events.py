"""What happens to grants, as audit events and counts: issued, issued again, refreshed,
revoked (and why), reuse detected. The events ride on the write that makes the change
(`audit=`), so that no token is answered without its record; the counts follow once the
write returned."""

from __future__ import annotations

from collections.abc import Mapping

from oauthd.audit import AuditEvent, Plain, reasons
from oauthd.metrics import Metrics
from oauthd.model import Grant
from oauthd.oauth.resources import Targets


class GrantEvents:
    def __init__(self, metrics: Metrics, targets: Targets) -> None:
        self._metrics = metrics
        self._targets = targets

    def path(self, resource: str) -> str:
        return self._targets.label_of(resource)

    def _about(
        self,
        event: str,
        grant: Grant,
        *,
        reason: str | None = None,
        detail: Mapping[str, Plain] | None = None,
    ) -> AuditEvent:
        return AuditEvent.of_grant(
            event, grant, self.path(grant.resource), reason=reason, detail=detail
        )

    def issued(self, grant: Grant, grant_type: str) -> AuditEvent:
        """A new grant (`grant_type`: how it was obtained); `expires_at`: when it ends
        unless refreshed (what `oauthd explain` infers an expiry from)."""
        return self._about(
            "token_issued",
            grant,
            detail={
                "grant_type": grant_type,
                "principal": grant.principal,
                "scopes": " ".join(grant.scopes),
                "expires_at": int(grant.expires_at or grant.access_expires_at),
            },
        )

    def count_issued(self, grant: Grant, grant_type: str) -> None:
        self._metrics.token_issued(grant_type, self.path(grant.resource), grant.principal)

    def reissued(self, grant: Grant) -> AuditEvent:
        return self._about(
            "token_reissued",
            grant,
            detail={"expires_at": int(grant.expires_at or 0)},
        )

    def refreshed(self, grant: Grant) -> AuditEvent:
        return self._about(
            "token_refreshed",
            grant,
            detail={
                "scopes": " ".join(grant.token_scopes),
                "expires_at": int(grant.expires_at or 0),
            },
        )

    def revoked(self, grant: Grant, token_type: str, by: str) -> AuditEvent:
        """An end on request: by the client (/revoke), its user, an admin, a deletion."""
        return self._about(
            "token_revoked",
            grant,
            reason=reasons.grant_ended_by(by),
            detail={"token_type": token_type, "by": by},
        )

    def count_revoked(self, grant: Grant, token_type: str) -> None:
        self._metrics.token_revoked(token_type, self.path(grant.resource))

    def reuse(self, grant: Grant, token_type: str, reason: str) -> AuditEvent:
        """A replayed refresh token or code: its grant ends (`reason` says which replay)."""
        return self._about(
            "reuse_detected",
            grant,
            reason=reason,
            detail={"token_type": token_type},
        )

    def count_reuse(self, token_type: str) -> None:
        self._metrics.reuse_detected(token_type)

    def refused(self, grant: Grant, endpoint: str, error: str, reason: str) -> AuditEvent:
        """A refusal that concerns a known grant (a refresh of a dead token of it, a token
        of another client or resource): its user and client are known."""
        return self._about(
            "refused",
            grant,
            reason=reason,
            detail={"endpoint": endpoint, "error": error},
        )
