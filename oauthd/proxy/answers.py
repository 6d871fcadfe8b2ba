"""The proxy's own answers: OAuth challenges (RFC 6750 s3) and JSON-RPC errors.

JSON-RPC error codes of oauthd's own (MCP leaves -32000 to -32019 to implementations:
schema/2026-07-28/schema.ts, "MCP error codes"): -32000 a refusal of the proxy (origin,
store outage, busy, upstream failure), -32001 an unknown MCP session, -32003 a call the
resource's policy denies, -32004 a call that needs more scopes (the step-up 403)."""

from __future__ import annotations

import math
from typing import Any

import orjson
from aiohttp import web

from oauthd.audit import reasons
from oauthd.model import Grant
from oauthd.store import Unavailable

NO_STORE = {"Cache-Control": "no-store"}


class ProxyRefusal(Exception):
    """A request the proxy answers itself; `response` is what the client gets."""

    def __init__(self, response: web.Response, reason: str = reasons.OTHER) -> None:
        super().__init__(response.status)
        self.response = response
        self.reason = reason  # `oauthd.audit.reasons`: logged and counted
        self.grant: Grant | None = None  # the known grant it concerns: recorded too


def challenge(
    status: int,
    resource_metadata: str,
    scope: str,
    error: str | None = None,
    description: str | None = None,
    reason: str = reasons.OTHER,
) -> ProxyRefusal:
    parts = [f'resource_metadata="{resource_metadata}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{description}"')
    parts.append(f'scope="{scope}"')
    headers = {"WWW-Authenticate": "Bearer " + ", ".join(parts), **NO_STORE}
    body = {
        "error": error or "unauthorized",
        "error_description": description
        or "a bearer token from this server's authorization server is required",
    }
    return ProxyRefusal(web.json_response(body, status=status, headers=headers), reason)


POLICY_DENIED = -32003
INSUFFICIENT_SCOPE = -32004


def jsonrpc_error(
    status: int,
    code: int,
    message: str,
    headers: dict[str, str] | None = None,
    request_id: str | int | None = None,
    data: dict[str, Any] | None = None,
    reason: str = reasons.OTHER,
) -> ProxyRefusal:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    body = {"jsonrpc": "2.0", "id": request_id, "error": error}
    return ProxyRefusal(
        web.Response(
            body=orjson.dumps(body),
            status=status,
            content_type="application/json",
            headers={**NO_STORE, **headers} if headers else NO_STORE,
        ),
        reason,
    )


def store_unavailable(exc: Unavailable) -> ProxyRefusal:
    """The store cannot answer now: 503 with Retry-After, as on every other endpoint."""
    retry = str(max(1, math.ceil(exc.retry_after)))
    return jsonrpc_error(
        503, -32000, "temporarily unavailable; retry later", {"Retry-After": retry}
    )


def overloaded() -> ProxyRefusal:
    """No local slot for a call to the upstream came free in time (`upstream.max_connections`)."""
    return jsonrpc_error(503, -32000, "server busy; retry later", {"Retry-After": "1"})


def internal_error(request_id: str) -> ProxyRefusal:
    return jsonrpc_error(
        500, -32603, f"internal error (request id {request_id})", {"X-Request-Id": request_id}
    )


def body_too_large() -> ProxyRefusal:
    return jsonrpc_error(413, -32600, "request body too large")


def session_not_found() -> ProxyRefusal:
    """An `Mcp-Session-Id` unknown, or bound to another grant: never a hint which."""
    return jsonrpc_error(404, -32001, "Session not found")


def header_mismatch(message: str, request_id: str | int | None) -> ProxyRefusal:
    """A 2026-07-28 request whose mirrored headers disagree with its body."""
    return jsonrpc_error(400, -32020, f"Header mismatch: {message}", request_id=request_id)


def not_json() -> ProxyRefusal:
    return jsonrpc_error(400, -32700, "Parse error: the request body is not JSON")


def policy_denied(message: str, request_id: str | int | None, reason: str) -> ProxyRefusal:
    """A call the resource's rules deny: 403, the rule's message, never a challenge (no
    token would help)."""
    return jsonrpc_error(403, POLICY_DENIED, message, request_id=request_id, reason=reason)


def scope_challenge(
    resource_metadata: str,
    needed: tuple[str, ...],
    upgrade_url: str,
    request_id: str | int | None,
    reason: str = reasons.DEFAULT_POLICY,
) -> ProxyRefusal:
    """A call that needs scopes the token lacks (MCP 2026-07-28 authorization, "Scope
    Challenge Handling"): 403 with the challenge naming every scope the call needs, and a
    JSON-RPC error whose `data` carries them and the page where the grant's owner can add
    the missing ones to the grant in place (`upgrade_url`)."""
    scope = " ".join(needed)
    challenge = (
        f'Bearer error="insufficient_scope", scope="{scope}", '
        f'resource_metadata="{resource_metadata}"'
    )
    return jsonrpc_error(
        403,
        INSUFFICIENT_SCOPE,
        f"insufficient scope: this call needs {scope}",
        {"WWW-Authenticate": challenge},
        request_id,
        {"scopes": list(needed), "upgrade_url": upgrade_url},
        reason,
    )
