"""Discovery documents, CORS for browser-based clients, the stylesheet."""

from __future__ import annotations

import pytest

from oauthd.http import pages
from tests.support.app import Running, Start

AS_PATHS = ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")
PRM_PATHS = ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource")
CORS_POST_PATHS = ("/register", "/token", "/revoke", "/device_authorization")


@pytest.mark.parametrize("path", AS_PATHS)
async def test_authorization_server_metadata(oauthd: Running, path: str) -> None:
    answer = await oauthd.client.call("GET", path)
    assert answer.status == 200
    doc = answer.json()
    issuer = oauthd.config.server.issuer
    assert doc["issuer"] == issuer
    assert doc["authorization_endpoint"] == f"{issuer}/authorize"
    assert doc["token_endpoint"] == f"{issuer}/token"
    assert doc["registration_endpoint"] == f"{issuer}/register"
    assert doc["revocation_endpoint"] == f"{issuer}/revoke"
    assert doc["introspection_endpoint"] == f"{issuer}/introspect"
    assert doc["device_authorization_endpoint"] == f"{issuer}/device_authorization"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["response_types_supported"] == ["code"]
    assert "none" in doc["token_endpoint_auth_methods_supported"]
    assert {"client_secret_basic", "client_secret_post"} <= set(
        doc["token_endpoint_auth_methods_supported"]
    )
    assert {"authorization_code", "refresh_token"} <= set(doc["grant_types_supported"])
    assert doc["authorization_response_iss_parameter_supported"] is True
    assert doc["client_id_metadata_document_supported"] is True
    assert answer.headers["Access-Control-Allow-Origin"] == "*"


async def test_both_metadata_paths_serve_the_same_document(oauthd: Running) -> None:
    docs = [(await oauthd.client.call("GET", path)).json() for path in AS_PATHS]
    assert docs[0] == docs[1]


@pytest.mark.parametrize("path", PRM_PATHS)
async def test_protected_resource_metadata(oauthd: Running, path: str) -> None:
    answer = await oauthd.client.call("GET", path)
    assert answer.status == 200
    doc = answer.json()
    issuer = oauthd.config.server.issuer
    assert doc["resource"] == f"{issuer}/mcp"
    assert doc["authorization_servers"] == [issuer]
    assert doc["bearer_methods_supported"] == ["header"]
    assert doc["scopes_supported"] == ["mcp"]
    assert answer.headers["Access-Control-Allow-Origin"] == "*"


async def test_issuer_comes_from_config_not_the_host_header(oauthd: Running) -> None:
    answer = await oauthd.client.call(
        "GET", AS_PATHS[0], headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"}
    )
    assert answer.json()["issuer"] == oauthd.config.server.issuer


@pytest.mark.parametrize("path", AS_PATHS + PRM_PATHS + CORS_POST_PATHS)
async def test_cors_preflight(oauthd: Running, path: str) -> None:
    answer = await oauthd.client.call(
        "OPTIONS",
        path,
        headers={
            "Origin": "http://localhost:6274",
            "Access-Control-Request-Method": "POST" if path in CORS_POST_PATHS else "GET",
            "Access-Control-Request-Headers": "content-type, authorization",
        },
    )
    assert answer.status in (200, 204)
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in answer.headers["Access-Control-Allow-Methods"]
    allowed = answer.headers["Access-Control-Allow-Headers"].lower()
    assert "content-type" in allowed and "authorization" in allowed


async def test_cors_on_register_and_token_answers_errors_included(oauthd: Running) -> None:
    origin = {"Origin": "http://localhost:6274"}
    registered = await oauthd.client.call(
        "POST",
        "/register",
        json={"redirect_uris": ["http://localhost/cb"], "token_endpoint_auth_method": "none"},
        headers=origin,
    )
    assert registered.status == 201
    assert registered.headers["Access-Control-Allow-Origin"] == "*"
    refused = await oauthd.client.call(
        "POST", "/token", data={"grant_type": "authorization_code"}, headers=origin
    )
    assert (refused.status, refused.json()["error"]) == (401, "invalid_client")
    assert refused.headers["Access-Control-Allow-Origin"] == "*"


async def test_no_cors_on_browser_pages(oauthd: Running) -> None:
    answer = await oauthd.client.call("GET", "/device", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in answer.headers


async def test_stylesheet(oauthd: Running) -> None:
    answer = await oauthd.client.call("GET", "/static/oauthd.css")
    assert answer.status == 200
    assert answer.content_type == "text/css"
    assert answer.body == pages.STYLESHEET
    assert "immutable" in answer.headers["Cache-Control"]
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


async def test_each_resource_has_its_own_metadata(start_oauthd: Start) -> None:
    oauthd = await start_oauthd(
        resources=[("/mcp", "Notes", ("mcp",)), ("/files/mcp", "Files", ("files:read",))],
        oauth={"scopes": ("mcp", "files:read")},
    )
    issuer = oauthd.config.server.issuer
    files = await oauthd.client.call("GET", "/.well-known/oauth-protected-resource/files/mcp")
    assert files.status == 200 and files.headers["Access-Control-Allow-Origin"] == "*"
    assert files.json() == {
        "resource": f"{issuer}/files/mcp",
        "authorization_servers": [issuer],
        "scopes_supported": ["files:read"],
        "bearer_methods_supported": ["header"],
        "resource_name": "Files",
    }
    bare = await oauthd.client.call("GET", "/.well-known/oauth-protected-resource")
    notes = await oauthd.client.call("GET", "/.well-known/oauth-protected-resource/mcp")
    assert bare.json() == notes.json() and notes.json()["resource_name"] == "Notes"
    preflight = await oauthd.client.call(
        "OPTIONS", "/.well-known/oauth-protected-resource/files/mcp"
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    missing = await oauthd.client.call("GET", "/.well-known/oauth-protected-resource/nowhere")
    assert missing.status == 404
    doc = (await oauthd.client.call("GET", AS_PATHS[0])).json()
    assert doc["scopes_supported"] == ["mcp", "files:read"]


async def test_the_default_resource_answers_the_bare_path(start_oauthd: Start) -> None:
    oauthd = await start_oauthd(
        resources=[("/mcp", "Notes", ("mcp",)), ("/files/mcp", "Files", ("files:read",))],
        oauth={"scopes": ("mcp", "files:read"), "default_resource": "/files/mcp"},
    )
    bare = await oauthd.client.call("GET", "/.well-known/oauth-protected-resource")
    assert bare.json()["resource"] == f"{oauthd.config.server.issuer}/files/mcp"
