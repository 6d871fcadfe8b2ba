"""RFC 7009 /revoke and RFC 7662 /introspect over HTTP."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.app import Running, Start
from tests.support.configs import INTROSPECTION_ID
from tests.support.http_client import basic_auth, client_auth


@pytest.fixture
async def app(oauthd: Running) -> dict[str, Any]:
    return await oauthd.client.register_public(client_name="App")


async def revoke(oauthd: Running, client: dict[str, Any], token: str, **extra: str) -> int:
    answer = await oauthd.client.call(
        "POST", "/revoke", data={"token": token, **extra, **client_auth(client)}
    )
    assert answer.headers["Cache-Control"] == "no-store"
    return answer.status


async def active(oauthd: Running, token: str) -> bool:
    body = await oauthd.client.introspect(token, oauthd.introspection_secret)
    return bool(body["active"])


async def test_revoking_the_access_token_keeps_the_grant(
    oauthd: Running, app: dict[str, Any]
) -> None:
    tokens = await oauthd.client.tokens(app)
    assert await revoke(oauthd, app, tokens["access_token"], token_type_hint="access_token") == 200
    assert not await active(oauthd, tokens["access_token"])
    assert (await oauthd.client.refresh(app, tokens["refresh_token"])).status == 200


async def test_revoking_the_refresh_token_ends_the_grant(
    oauthd: Running, app: dict[str, Any]
) -> None:
    tokens = await oauthd.client.tokens(app)
    assert await revoke(oauthd, app, tokens["refresh_token"]) == 200
    assert not await active(oauthd, tokens["access_token"])
    assert not await active(oauthd, tokens["refresh_token"])
    assert (await oauthd.client.refresh(app, tokens["refresh_token"])).status == 400


@pytest.mark.parametrize("token", ["unknown", "no.such", "a" * 600, "", "..."])
async def test_unknown_tokens_are_200(oauthd: Running, app: dict[str, Any], token: str) -> None:
    if not token:  # an empty token parameter is a malformed request
        assert await revoke(oauthd, app, token) == 400
        return
    assert await revoke(oauthd, app, token) == 200


async def test_another_clients_token_is_not_revoked(oauthd: Running, app: dict[str, Any]) -> None:
    other = await oauthd.client.register_public(client_name="Other")
    tokens = await oauthd.client.tokens(app)
    assert await revoke(oauthd, other, tokens["refresh_token"]) == 200
    assert await active(oauthd, tokens["access_token"])


async def test_revoke_needs_client_authentication(oauthd: Running, app: dict[str, Any]) -> None:
    tokens = await oauthd.client.tokens(app)
    answer = await oauthd.client.call("POST", "/revoke", data={"token": tokens["access_token"]})
    assert (answer.status, answer.json()["error"]) == (401, "invalid_client")
    answer = await oauthd.client.call(
        "POST",
        "/revoke",
        data={"token": tokens["access_token"]},
        headers=basic_auth("unknown", "x"),
    )
    assert answer.status == 401 and answer.headers["WWW-Authenticate"].startswith("Basic")
    assert await active(oauthd, tokens["access_token"])


async def test_confidential_client_revokes_with_basic(oauthd: Running) -> None:
    web = await oauthd.client.register(redirect_uris=["https://app.example/cb"])
    tokens = await oauthd.client.tokens(web, "https://app.example/cb")
    answer = await oauthd.client.call(
        "POST",
        "/revoke",
        data={"token": tokens["refresh_token"]},
        headers=basic_auth(web["client_id"], web["client_secret"]),
    )
    assert answer.status == 200
    assert not await active(oauthd, tokens["access_token"])


async def test_introspection_of_an_active_token(oauthd: Running, app: dict[str, Any]) -> None:
    tokens = await oauthd.client.tokens(app)
    answer = await oauthd.client.call(
        "POST",
        "/introspect",
        data={"token": tokens["access_token"]},
        headers=basic_auth(INTROSPECTION_ID, oauthd.introspection_secret),
    )
    assert answer.status == 200
    assert answer.headers["Cache-Control"] == "no-store"
    info = answer.json()
    assert info["active"] is True
    assert info["client_id"] == app["client_id"]
    assert info["sub"] == info["username"] == "alice"
    assert info["scope"] == "mcp"
    assert info["aud"] == oauthd.client.resource
    assert info["iss"] == oauthd.config.server.issuer
    assert info["exp"] > info["iat"]
    assert info["token_type"] == "Bearer"


async def test_introspection_with_client_secret_post(oauthd: Running, app: dict[str, Any]) -> None:
    tokens = await oauthd.client.tokens(app)
    answer = await oauthd.client.call(
        "POST",
        "/introspect",
        data={
            "token": tokens["refresh_token"],
            "client_id": INTROSPECTION_ID,
            "client_secret": oauthd.introspection_secret,
        },
    )
    assert answer.status == 200
    assert answer.json()["active"] is True


@pytest.mark.parametrize("token", ["unknown", "no.such", "x" * 600])
async def test_inactive_is_only_active_false(oauthd: Running, token: str) -> None:
    answer = await oauthd.client.call(
        "POST",
        "/introspect",
        data={"token": token},
        headers=basic_auth(INTROSPECTION_ID, oauthd.introspection_secret),
    )
    assert answer.status == 200
    assert answer.json() == {"active": False}


async def test_expired_access_token_is_inactive(oauthd: Running, app: dict[str, Any]) -> None:
    tokens = await oauthd.client.tokens(app)
    oauthd.clock.advance(oauthd.config.tokens.access_ttl + 1)
    answer = await oauthd.client.introspect(tokens["access_token"], oauthd.introspection_secret)
    assert answer == {"active": False}


@pytest.mark.parametrize(
    "headers_or_form",
    [
        {},
        {"headers": basic_auth(INTROSPECTION_ID, "wrong")},
        {"headers": basic_auth("someone-else", "x")},
        {"form": {"client_id": INTROSPECTION_ID}},
        {"form": {"client_id": INTROSPECTION_ID, "client_secret": ""}},
    ],
)
async def test_introspection_needs_the_configured_credential(
    oauthd: Running, app: dict[str, Any], headers_or_form: dict[str, Any]
) -> None:
    tokens = await oauthd.client.tokens(app)
    answer = await oauthd.client.call(
        "POST",
        "/introspect",
        data={"token": tokens["access_token"], **headers_or_form.get("form", {})},
        headers=headers_or_form.get("headers"),
    )
    assert (answer.status, answer.json()["error"]) == (401, "invalid_client")
    assert "active" not in answer.text
    if "headers" in headers_or_form:
        assert answer.headers["WWW-Authenticate"].startswith("Basic")


async def test_a_registered_client_cannot_introspect(oauthd: Running, app: dict[str, Any]) -> None:
    web = await oauthd.client.register(redirect_uris=["https://app.example/cb"])
    tokens = await oauthd.client.tokens(app)
    answer = await oauthd.client.call(
        "POST",
        "/introspect",
        data={"token": tokens["access_token"]},
        headers=basic_auth(web["client_id"], web["client_secret"]),
    )
    assert answer.status == 401


async def test_introspection_without_configured_client(start_oauthd: Start) -> None:
    oauthd = await start_oauthd(introspection={"client_id": "", "client_secret": ""})
    answer = await oauthd.client.call(
        "POST", "/introspect", data={"token": "a.b"}, headers=basic_auth("", "")
    )
    assert answer.status == 401
