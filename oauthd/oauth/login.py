"""The sign-in event: counted and audited the same way for a password and for an upstream
identity provider."""

from __future__ import annotations

import logging

from oauthd.log import audit
from oauthd.metrics import Metrics


def record_login(
    metrics: Metrics,
    result: str,
    *,
    method: str,
    user: str | None,
    client_id: str | None,
    address: str | None = None,
) -> None:
    """Count a sign-in attempt by `result` ("success", "failure", "rate_limited") and write
    its audit line; `address` is left out of the line when not known."""
    metrics.login(result)
    where = {} if address is None else {"address": address}
    audit(
        "login",
        f"sign-in: {result}",
        level=logging.INFO if result == "success" else logging.WARNING,
        result=result,
        method=method,
        user=user,
        client_id=client_id,
        **where,
    )
