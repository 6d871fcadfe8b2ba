"""RFC 7591 registration over HTTP: what real clients send, and what attackers send."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
import pytest

from tests.support.app import Running, Start
from tests.support.http_client import Pkce, basic_auth, client_auth

# Shaped like the registrations the clients send (mcp-auth-checklist section 2).
CLAUDE_CODE = {
    "client_name": "Claude Code (my-mcp-server)",
    "redirect_uris": ["http://localhost:52123/callback"],
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "token_endpoint_auth_method": "none",
    "application_type": "native",
}
VS_CODE = {
    "client_name": "Visual Studio Code",
    "client_uri": "https://code.visualstudio.com/",
    "redirect_uris": [
        "https://insiders.vscode.dev/redirect",
        "https://vscode.dev/redirect",
        "http://127.0.0.1/",
        "http://127.0.0.1:33418/",
    ],
    "grant_types": [
        "authorization_code",
        "refresh_token",
        "urn:ietf:params:oauth:grant-type:device_code",
    ],
    "response_types": ["code"],
    "token_endpoint_auth_method": "none",
}
CURSOR = {
    "client_name": "Cursor",
    "redirect_uris": [
        "cursor://anysphere.cursor-mcp/oauth/callback",
        "https://www.cursor.com/agents/mcp/oauth/callback",
        "http://localhost:8787/callback",
    ],
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "token_endpoint_auth_method": "none",
}
PYTHON_SDK = {
    "client_name": "Simple Auth Client",
    "redirect_uris": ["http://127.0.0.1:3030/callback"],
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
    "token_endpoint_auth_method": "client_secret_post",
    "application_type": "native",
    "scope": "mcp",
}


def random_port() -> int:
    return random.randint(20000, 60000)


async def test_public_client_is_registered(oauthd: Running) -> None:
    answer = await oauthd.client.call(
        "POST",
        "/register",
        json={
            "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "none",
            "client_name": "Inspector",
        },
    )
    assert answer.status == 201
    assert answer.headers["Cache-Control"] == "no-store"
    body = answer.json()
    assert body["client_id"]
    assert isinstance(body["client_id_issued_at"], int)
    assert body["client_name"] == "Inspector"
    assert body["redirect_uris"] == ["http://127.0.0.1/callback"]
    assert body["token_endpoint_auth_method"] == "none"
    assert body["grant_types"] == ["authorization_code", "refresh_token"]
    assert body["response_types"] == ["code"]
    assert body["application_type"] == "native"
    assert "client_secret" not in body


async def test_confidential_client_gets_a_secret_once(oauthd: Running) -> None:
    body = await oauthd.client.register(redirect_uris=["https://app.example/cb"])
    assert body["token_endpoint_auth_method"] == "client_secret_basic"
    assert len(body["client_secret"]) >= 32
    assert body["client_secret_expires_at"] == 0
    assert body["application_type"] == "web"


@pytest.mark.parametrize(
    ("metadata", "redirect_uri"),
    [
        (CLAUDE_CODE, "http://localhost:{port}/callback"),
        (VS_CODE, "http://127.0.0.1:{port}/"),
        (CURSOR, "http://localhost:{port}/callback"),
        (PYTHON_SDK, "http://127.0.0.1:{port}/callback"),
    ],
    ids=["claude-code", "vs-code", "cursor", "python-sdk"],
)
async def test_real_client_registrations_work_at_authorize(
    oauthd: Running, metadata: dict[str, Any], redirect_uri: str
) -> None:
    client = await oauthd.client.register(**metadata)
    uri = redirect_uri.format(port=random_port())
    tokens = await oauthd.client.tokens(client, uri)
    assert tokens["token_type"] == "Bearer"


async def test_cursor_keeps_its_good_uris_when_its_scheme_is_not_listed(oauthd: Running) -> None:
    body = await oauthd.client.register(**CURSOR)
    assert body["redirect_uris"] == CURSOR["redirect_uris"][1:]


async def test_cursor_scheme_when_listed(start_oauthd: Start) -> None:
    oauthd = await start_oauthd(oauth={"allowed_redirect_schemes": ("cursor",)})
    client = await oauthd.client.register(**CURSOR)
    assert client["redirect_uris"] == CURSOR["redirect_uris"]
    browser = oauthd.client.browser()
    answer = await browser.code_flow(
        oauthd.client.authorize_params(
            client["client_id"],
            CURSOR["redirect_uris"][0],
            Pkce.new(),
        )
    )
    assert answer.location is not None
    assert answer.location.startswith("cursor://anysphere.cursor-mcp/oauth/callback?code=")


@pytest.mark.parametrize(
    ("metadata", "error"),
    [
        ({"redirect_uris": ["http://evil.example/cb"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["javascript:alert(1)"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["https://app.example/cb#x"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["https://user@app.example/cb"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["/relative"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["cursor://only/private"]}, "invalid_redirect_uri"),
        ({"redirect_uris": []}, "invalid_redirect_uri"),
        ({}, "invalid_redirect_uri"),
        ({"redirect_uris": "https://app.example/cb"}, "invalid_client_metadata"),
        ({"redirect_uris": [1]}, "invalid_client_metadata"),
        ({"redirect_uris": ["https://app.example/cb"] * 21}, "invalid_redirect_uri"),
        (
            {"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "tls"},
            "invalid_client_metadata",
        ),
        (
            {"redirect_uris": ["https://a.example/cb"], "grant_types": ["password"]},
            "invalid_client_metadata",
        ),
        (
            {"redirect_uris": ["https://a.example/cb"], "response_types": ["token"]},
            "invalid_client_metadata",
        ),
        (
            {"redirect_uris": ["https://a.example/cb"], "application_type": "ios"},
            "invalid_client_metadata",
        ),
        ({"redirect_uris": ["https://a.example/cb"], "scope": "admin"}, "invalid_client_metadata"),
        ({"redirect_uris": ["https://a.example/cb"], "client_name": 7}, "invalid_client_metadata"),
        (
            {"redirect_uris": ["https://a.example/cb"], "client_name": "x" * 201},
            "invalid_client_metadata",
        ),
    ],
)
async def test_bad_metadata_is_refused_precisely(
    oauthd: Running, metadata: dict[str, Any], error: str
) -> None:
    answer = await oauthd.client.call("POST", "/register", json=metadata)
    assert answer.status == 400, answer.text
    assert answer.json()["error"] == error
    assert answer.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'"a string"', "application/json"),
        (b"\xff\xfe", "application/json"),
        (b'{"redirect_uris": ["https://a.example/cb"]}', "text/plain"),
        (b"redirect_uris=https://a.example/cb", "application/x-www-form-urlencoded"),
        (b"", "application/json"),
    ],
)
async def test_malformed_bodies_are_400(oauthd: Running, body: bytes, content_type: str) -> None:
    answer = await oauthd.client.call(
        "POST", "/register", data=body, headers={"Content-Type": content_type}
    )
    assert answer.status == 400, answer.text
    assert answer.json()["error"] == "invalid_client_metadata"
    assert "Traceback" not in answer.text


async def test_oversized_body_is_413(oauthd: Running) -> None:
    document = {"redirect_uris": ["https://a.example/cb"], "client_name": "x" * (17 * 1024)}
    answer = await oauthd.client.call("POST", "/register", json=document)
    assert answer.status == 413
    assert answer.json()["error"] == "invalid_request"


async def test_oversized_chunked_body_is_413(oauthd: Running) -> None:
    async def chunks():  # no Content-Length: the limit is enforced while reading
        yield b'{"client_name": "'
        for _ in range(20):
            yield b"x" * 1024
        yield b'"}'

    answer = await oauthd.client.call(
        "POST", "/register", data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert answer.status == 413
    assert answer.json()["error"] == "invalid_request"


async def test_registration_rate_limit(start_oauthd: Start) -> None:
    oauthd = await start_oauthd(oauth={"registrations_per_minute": 2})
    for _ in range(2):
        await oauthd.client.register_public()
    answer = await oauthd.client.call(
        "POST", "/register", json={"redirect_uris": ["http://localhost/cb"]}
    )
    assert answer.status == 429
    assert int(answer.headers["Retry-After"]) >= 1
    oauthd.clock.advance(61)
    await oauthd.client.register_public()


async def test_registration_disabled(start_oauthd: Start) -> None:
    oauthd = await start_oauthd(oauth={"registration": False})
    meta = (await oauthd.client.call("GET", "/.well-known/oauth-authorization-server")).json()
    assert "registration_endpoint" not in meta
    answer = await oauthd.client.call(
        "POST", "/register", json={"redirect_uris": ["http://localhost/cb"]}
    )
    assert answer.status == 403


async def test_registered_confidential_client_authenticates_both_ways(oauthd: Running) -> None:
    client = await oauthd.client.register(
        redirect_uris=["https://app.example/cb"], client_name="Web app"
    )
    tokens = await oauthd.client.tokens(client, "https://app.example/cb")
    basic = basic_auth(client["client_id"], client["client_secret"])
    refreshed = await oauthd.client.token(
        headers=basic, grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    assert refreshed.status == 200, refreshed.text
    wrong = dict(client_auth(client), client_secret="wrong")
    answer = await oauthd.client.token(
        grant_type="refresh_token", refresh_token=refreshed.json()["refresh_token"], **wrong
    )
    assert (answer.status, answer.json()["error"]) == (401, "invalid_client")
    assert orjson.loads(answer.body)["error_description"]


async def test_a_flood_of_identical_registrations_leaves_the_registry_bounded(
    start_oauthd: Start,
) -> None:
    """Claude Code registers again on every fresh connection, each time with a new loopback
    port: 1,000 in a minute, from 50 addresses (behind a trusted proxy) so that the limit of
    20 per address does not stop them. Every one is answered 201, and at most
    `oauth.unused_registrations_per_app` of them stay (plus the one that was used)."""
    running = await start_oauthd(server={"trusted_proxies": ("127.0.0.1/32",)})
    client = running.client
    used = await client.register(**CLAUDE_CODE)
    await running.auth.clients.find(used["client_id"])  # its first use (as /authorize)

    async def register(n: int) -> int:
        body = {**CLAUDE_CODE, "redirect_uris": [f"http://localhost:{40000 + n}/callback"]}
        headers = {"X-Forwarded-For": f"198.51.100.{n % 50 + 1}"}
        answer = await client.call("POST", "/register", json=body, headers=headers)
        return answer.status

    statuses: list[int] = []
    for start in range(0, 1000, 100):
        batch = [register(n) for n in range(start, start + 100)]
        statuses += await asyncio.gather(*batch)
        running.clock.advance(5)  # 50 s in all: within the minute of the per-address limit
    assert statuses == [201] * 1000
    kept = [c async for c in running.store.clients.scan()]
    assert len(kept) == 21 and used["client_id"] in {c.client_id for c in kept}
    assert await running.store.clients.count() <= 21 + 1000  # purged by housekeeping
    await running.store.purge_expired()
    assert await running.store.clients.count() == 21
