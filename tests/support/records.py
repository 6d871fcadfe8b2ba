"""Valid records of every kind, for any test: `make_grant(**overrides)` and friends.

Every factory fills every field (bytes, tuples and the optional fields set), with a fresh
key per call (overriding a field the record lacks is the constructor's TypeError), and
times relative to `NOW` (the start of `oauthd.clock.FakeClock`), using the default
lifetimes of design.md section 2. `nulled(record)` sets every optional field
to None, to check that None survives a backend as well.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import time
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from oauthd.clock import FakeClock
from oauthd.model import (
    RECORD_TYPES,
    AccountLink,
    AccountSession,
    AuthCode,
    Client,
    Consent,
    DeviceFlow,
    Grant,
    McpSession,
    PendingAuthorization,
    Record,
    RegistrationGroup,
    SigningKey,
    UsedAssertion,
)

NOW = FakeClock().now()
DAY = 86_400.0
_serial = itertools.count(1)

T = TypeVar("T", bound=Record)


def _n() -> int:
    return next(_serial)


def digest(label: str) -> bytes:
    """A SHA-256 digest, as stored for a secret."""
    return hashlib.sha256(label.encode()).digest()


def make_client(**overrides: Any) -> Client:
    n = _n()
    fields = {
        "client_id": f"client-{n}",
        "client_name": f"Client {n}",
        "redirect_uris": (f"https://app{n}.example/cb", "http://127.0.0.1/cb"),
        "grant_types": ("authorization_code", "refresh_token"),
        "response_types": ("code",),
        "token_endpoint_auth_method": "client_secret_basic",
        "application_type": "web",
        "scope": "mcp:read mcp:write",
        "secret_hash": digest(f"client-secret-{n}"),
        "source": "dcr",
        "created_at": NOW - 60,
        "expires_at": NOW + 30 * DAY,
        "last_used_at": NOW - 30,
    }
    return Client(**{**fields, **overrides})


def make_consent(**overrides: Any) -> Consent:
    n = _n()
    fields = {
        "user": f"user-{n}",
        "client_id": f"client-{n}",
        "scopes": ("mcp:read", "mcp:write"),
        "created_at": NOW - 60,
        "expires_at": NOW + 90 * DAY,
    }
    return Consent(**{**fields, **overrides})


def make_pending(**overrides: Any) -> PendingAuthorization:
    n = _n()
    fields = {
        "id": f"pending-{n}",
        "client_id": f"client-{n}",
        "redirect_uri": f"https://app{n}.example/cb",
        "scopes": ("mcp:read",),
        "resource": "https://mcp.example/",
        "state": f"state-{n}",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "user": f"user-{n}",
        "browser_hash": digest(f"browser-{n}"),
        "device_key": None,
        "upstream": b"\x00\x01ciphertext\xff" + n.to_bytes(4, "big"),
        "created_at": NOW - 5,
        "expires_at": NOW + 600,
    }
    return PendingAuthorization(**{**fields, **overrides})


def make_code(**overrides: Any) -> AuthCode:
    n = _n()
    fields = {
        "code_key": f"code-{n}",
        "secret_hash": digest(f"code-secret-{n}"),
        "client_id": f"client-{n}",
        "redirect_uri": f"https://app{n}.example/cb",
        "user": f"user-{n}",
        "scopes": ("mcp:read",),
        "resource": "https://mcp.example/",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "grant_id": f"grant-of-code-{n}",
        "upstream_tokens": b"\x00code-upstream\xff" + n.to_bytes(4, "big"),
        "created_at": NOW - 1,
        "expires_at": NOW + 60,
    }
    return AuthCode(**{**fields, **overrides})


def make_grant(**overrides: Any) -> Grant:
    n = _n()
    fields = {
        "id": f"grant-{n}",
        "user": f"user-{n}",
        "client_id": f"client-{n}",
        "scopes": ("mcp:read", "mcp:write"),
        "resource": "https://mcp.example/",
        "access_hash": digest(f"access-{n}"),
        "access_expires_at": NOW + 3600,
        "refresh_hash": digest(f"refresh-{n}"),
        "previous_refresh_hash": digest(f"previous-refresh-{n}"),
        "rotated_at": NOW - 10,
        "successor_used": False,
        "upstream_tokens": b"\x00upstream-ciphertext\xff" + n.to_bytes(4, "big"),
        "mcp_sessions": (f"session-{n}",),
        "created_at": NOW - DAY,
        "last_used_at": NOW - 10,
        "expires_at": NOW + 30 * DAY,
        "groups": ("ops", "staff"),  # format 4
    }
    return Grant(**{**fields, **overrides})


def make_device(**overrides: Any) -> DeviceFlow:
    n = _n()
    fields = {
        "device_key": f"device-{n}",
        "secret_hash": digest(f"device-secret-{n}"),
        "client_id": f"client-{n}",
        "scopes": ("mcp:read",),
        "resource": "https://mcp.example/",
        "status": "approved",
        "user": f"user-{n}",
        "grant_id": f"grant-of-device-{n}",
        "interval": 5.0,
        "last_poll_at": NOW - 5,
        "deadline": NOW + 540,
        "created_at": NOW - 60,
        "expires_at": NOW + 600,
    }
    return DeviceFlow(**{**fields, **overrides})


def make_mcp_session(**overrides: Any) -> McpSession:
    n = _n()
    fields = {
        "session_key": f"mcp-session-{n}",
        "grant_id": f"grant-{n}",
        "user": f"user-{n}",
        "client_id": f"client-{n}",
        "sealed_id": b"\x01sealed-session-id\xfe" + n.to_bytes(4, "big"),
        "created_at": NOW - 60,
        "expires_at": NOW + 30 * DAY,
        "resource": "https://mcp.example/",  # its grant's (format 4)
    }
    return McpSession(**{**fields, **overrides})


def make_registration_group(**overrides: Any) -> RegistrationGroup:
    n = _n()
    fields = {
        "group_key": f"group-{n}",
        "client_ids": (f"client-{n}a", f"client-{n}b"),
        "created_at": NOW - 60,
        "expires_at": NOW + DAY,
    }
    return RegistrationGroup(**{**fields, **overrides})


def make_account_session(**overrides: Any) -> AccountSession:
    n = _n()
    fields = {
        "session_key": f"account-session-{n}",
        "secret_hash": digest(f"account-secret-{n}"),
        "user": f"user-{n}",
        "created_at": NOW - 60,
        "expires_at": NOW + 1800,
    }
    return AccountSession(**{**fields, **overrides})


def make_signing_key(**overrides: Any) -> SigningKey:
    n = _n()
    fields = {
        "kid": f"kid-{n}",
        "alg": "ES256",
        "state": "active",
        "public_jwk": f'{{"kty":"EC","crv":"P-256","x":"AAAA","y":"BBBB","kid":"kid-{n}"}}',
        "sealed_private": b"\x02sealed-private\xff" + n.to_bytes(4, "big"),
        "created_at": NOW - DAY,
        "activate_after": NOW - DAY,
        "activated_at": NOW - DAY,
        "retired_at": None,
        "expires_at": None,
    }
    return SigningKey(**{**fields, **overrides})


def make_used_assertion(**overrides: Any) -> UsedAssertion:
    n = _n()
    fields = {
        "assertion_key": f"assertion-{n}",
        "issuer": "https://idp.example",
        "created_at": NOW - 10,
        "expires_at": NOW + 300,
    }
    return UsedAssertion(**{**fields, **overrides})


def make_account_link(**overrides: Any) -> AccountLink:
    n = _n()
    fields = {
        "issuer": "https://idp.example",
        "subject": f"subject-{n}",
        "user": f"user-{n}",
        "via": "subject",
        "created_at": NOW - 60,
        "expires_at": None,
    }
    return AccountLink(**{**fields, **overrides})


FACTORIES: dict[str, Callable[..., Record]] = {
    Client.KIND: make_client,
    Consent.KIND: make_consent,
    PendingAuthorization.KIND: make_pending,
    AuthCode.KIND: make_code,
    Grant.KIND: make_grant,
    DeviceFlow.KIND: make_device,
    McpSession.KIND: make_mcp_session,
    RegistrationGroup.KIND: make_registration_group,
    AccountSession.KIND: make_account_session,
    SigningKey.KIND: make_signing_key,
    UsedAssertion.KIND: make_used_assertion,
    AccountLink.KIND: make_account_link,
}
KINDS: tuple[str, ...] = tuple(cls.KIND for cls in RECORD_TYPES)
assert set(FACTORIES) == set(KINDS), "a record class has no factory"


def make(kind: str, **overrides: Any) -> Record:
    """A valid record of `kind` (a `KIND`, e.g. "grants")."""
    return FACTORIES[kind](**overrides)


def optional_fields(cls: type[Record]) -> tuple[str, ...]:
    """The fields whose type admits None."""
    hints = typing.get_type_hints(cls)
    return tuple(
        f.name
        for f in dataclasses.fields(cls)
        if isinstance(hints[f.name], types.UnionType)
        and type(None) in typing.get_args(hints[f.name])
    )


def nulled(record: T) -> T:
    """`record` with every optional field None (`expires_at` too: it never expires)."""
    return dataclasses.replace(record, **dict.fromkeys(optional_fields(type(record))))


# What the crash and disk-fault children write and read back: a grant (its `last_used_at`)
# or a code (its `created_at`) holding a value, live for a day of real time.
def valued_grant(key: str, value: float) -> Grant:
    return make_grant(id=key, last_used_at=value, expires_at=time.time() + DAY)


def valued_code(key: str, value: float) -> AuthCode:
    return make_code(code_key=key, created_at=value, expires_at=time.time() + DAY)
