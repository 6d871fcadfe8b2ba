"""The sign-in event: counted and recorded the same way for a password and for an upstream
identity provider."""

from __future__ import annotations

from oauthd.audit import AuditEvent, reasons
from oauthd.metrics import Metrics
from oauthd.store import Store

REASONS = {"rate_limited": reasons.RATE_LIMITED}


async def record_login(
    store: Store,
    metrics: Metrics,
    result: str,
    *,
    method: str,
    user: str | None,
    client_id: str | None,
    address: str | None = None,
) -> None:
    """Count a sign-in attempt by `result` ("success", "failure", "rate_limited") and
    write its record, durable on return (no state changes with it); `address` is left out
    when not known. A failure's reason: `bad_credentials` for a password, else
    `provider_refused`."""
    metrics.login(result)
    detail: dict[str, str] = {"result": result, "method": method}
    if address is not None:
        detail["address"] = address
    reason = None
    if result != "success":
        failed = reasons.BAD_CREDENTIALS if method == "password" else reasons.PROVIDER_REFUSED
        reason = REASONS.get(result, failed)
    await store.audit.append(
        AuditEvent("login", user=user, client_id=client_id, reason=reason, detail=detail)
    )
