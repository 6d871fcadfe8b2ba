"""OAuth errors as values. The protocol raises them; `oauthd/http/errors.py` renders them.

How an error reaches the user depends on what was already validated (RFC 6749 s4.1.2.1):
- `JSON`: an API answer (token, register, revoke, introspect, device endpoints);
- `REDIRECT`: back to the client's validated redirect URI, with `state` and `iss`;
- `PAGE`: an HTML page, because the client or its redirect URI cannot be trusted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from oauthd.audit import reasons


class Delivery(Enum):
    JSON = "json"
    REDIRECT = "redirect"
    PAGE = "page"


@dataclass(slots=True, frozen=True)
class RedirectTarget:
    """Where a REDIRECT error goes: a redirect URI that was already validated."""

    redirect_uri: str
    state: str | None


@dataclass(slots=True)
class OAuthError(Exception):
    error: str  # the RFC code, e.g. "invalid_request"
    description: str
    status: int = 400
    delivery: Delivery = Delivery.JSON
    redirect: RedirectTarget | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # why (`oauthd.audit.reasons`): logged with the error and counted, never sent
    reason: str = reasons.OTHER

    def __str__(self) -> str:
        return f"{self.error}: {self.description}"


def invalid_request(description: str) -> OAuthError:
    return OAuthError("invalid_request", description)


def invalid_client(description: str, *, challenge: bool = False) -> OAuthError:
    """401; with `challenge` (the client tried HTTP Basic) a WWW-Authenticate header."""
    headers = {"WWW-Authenticate": 'Basic realm="oauthd"'} if challenge else {}
    return OAuthError(
        "invalid_client", description, 401, headers=headers, reason=reasons.INVALID_CLIENT
    )


def invalid_grant(description: str, reason: str) -> OAuthError:
    """`reason`: a code of `oauthd.audit.reasons` (every invalid_grant names one)."""
    return OAuthError("invalid_grant", description, reason=reason)


def page_error(
    error: str, description: str, status: int = 400, reason: str = reasons.OTHER
) -> OAuthError:
    return OAuthError(error, description, status, Delivery.PAGE, reason=reason)


def redirect_error(error: str, description: str, target: RedirectTarget) -> OAuthError:
    return OAuthError(error, description, 302, Delivery.REDIRECT, target)
