"""The identity headers alone, without a server: one builder for relayed requests and for
the DELETE that closes an ended grant's session."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from oauthd.config import Config, default_config
from oauthd.model import Grant
from oauthd.proxy.identity import Identity
from oauthd.proxy.request_keys import ACCESS_REQUEST_ID
from tests.support.records import make_grant

GRANT = make_grant(user="alice", client_id="client-1", scopes=("mcp", "files:read"))
IDENTITY = {
    "X-Forwarded-User": "alice",
    "X-Forwarded-Client-Id": "client-1",
    "X-Forwarded-Scopes": "mcp files:read",
    "X-Forwarded-Principal": "user",
}


def config(tmp_path: Path, **upstream: object) -> Config:
    base = default_config(tmp_path)
    return dataclasses.replace(
        base,
        server=dataclasses.replace(base.server, issuer="https://auth.example"),
        upstream=dataclasses.replace(base.upstream, **upstream),  # type: ignore[arg-type]
    )


async def no_idp_token(grant: Grant) -> str | None:
    return None


def identity(tmp_path: Path, **upstream: object) -> Identity:
    return Identity(config(tmp_path, **upstream), no_idp_token)


def test_a_relayed_request_says_who_calls_and_from_where(tmp_path: Path) -> None:
    request = make_mocked_request(
        "POST",
        "/mcp",
        headers={
            "Accept": "application/json",
            "Authorization": "Bearer the-clients-token",
            "X-Forwarded-User": "mallory",  # a client cannot claim an identity
            "x-forwarded-scopes": "admin",
            "X-Forwarded-Access-Token": "forged",
            "X-Forwarded-For": "10.0.0.1",
        },
    )
    request[ACCESS_REQUEST_ID] = "4f2a9c1e0b7d3a65"
    headers = identity(tmp_path).request_headers(request, GRANT)
    assert dict(headers) == {
        "Accept": "application/json",
        "X-Request-Id": "4f2a9c1e0b7d3a65",  # oauthd's, as in its log lines and records
        "X-Forwarded-For": "unknown",  # a mocked request has no peer; a forged XFF never counts
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "auth.example",
        **IDENTITY,
    }


def test_behind_a_trusted_proxy_the_upstream_learns_the_real_client(tmp_path: Path) -> None:
    base = config(tmp_path)
    trusting = dataclasses.replace(
        base, server=dataclasses.replace(base.server, trusted_proxies=("127.0.0.0/8",))
    )
    request = make_mocked_request(
        "POST", "/mcp", headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.7"}
    )
    request._transport_peername = ("127.0.0.1", 40000)  # type: ignore[attr-defined]
    headers = Identity(trusting, no_idp_token).request_headers(request, GRANT)
    assert headers.getall("X-Forwarded-For") == ["198.51.100.7"]
    untrusting = Identity(base, no_idp_token).request_headers(request, GRANT)
    assert untrusting.getall("X-Forwarded-For") == ["127.0.0.1"]


def test_the_header_names_are_configurable(tmp_path: Path) -> None:
    request = make_mocked_request("POST", "/mcp", headers={"X-User": "mallory"})
    named = identity(tmp_path, user_header="X-User", scopes_header="X-Scopes")
    headers = named.request_headers(request, GRANT)
    assert headers.getall("X-User") == ["alice"]
    assert headers["X-Scopes"] == "mcp files:read"
    assert "X-Forwarded-User" not in headers


def test_the_session_close_carries_the_same_identity(tmp_path: Path) -> None:
    headers = identity(tmp_path).session_close_headers(GRANT, "session-1")
    assert headers == {"Mcp-Session-Id": "session-1", **IDENTITY}


def test_a_static_credential_goes_with_both(tmp_path: Path) -> None:
    sender = Identity(config(tmp_path), no_idp_token, "Bearer upstream-secret")
    request = make_mocked_request("POST", "/mcp", headers={"Authorization": "Bearer client"})
    assert sender.request_headers(request, GRANT)["Authorization"] == "Bearer upstream-secret"
    closing = sender.session_close_headers(GRANT, "session-1")
    assert closing["Authorization"] == "Bearer upstream-secret"


def test_without_a_static_credential_none_is_sent(tmp_path: Path) -> None:
    request = make_mocked_request("POST", "/mcp", headers={"Authorization": "Bearer client"})
    assert "Authorization" not in identity(tmp_path).request_headers(request, GRANT)
    assert "Authorization" not in identity(tmp_path).session_close_headers(GRANT, "session-1")


async def test_the_idp_token_is_added_when_there_is_one(tmp_path: Path) -> None:
    asked: list[Grant] = []

    async def idp_token(grant: Grant) -> str | None:
        asked.append(grant)
        return "idp-access" if grant.user == "alice" else None

    sender = Identity(config(tmp_path, forward_idp_token=True), idp_token)
    assert sender.forwards_idp_token
    headers: CIMultiDict[str] = CIMultiDict()
    await sender.add_idp_token(headers, GRANT)
    assert headers["X-Forwarded-Access-Token"] == "idp-access"
    none: CIMultiDict[str] = CIMultiDict()
    await sender.add_idp_token(none, dataclasses.replace(GRANT, user="bob"))
    assert "X-Forwarded-Access-Token" not in none
    assert [g.user for g in asked] == ["alice", "bob"]


def test_no_idp_token_unless_configured(tmp_path: Path) -> None:
    assert not identity(tmp_path).forwards_idp_token
