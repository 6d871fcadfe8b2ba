"""Discovery: RFC 8414 authorization server metadata and RFC 9728 resource metadata."""

from __future__ import annotations

from tests.support.protocol import ISSUER, RESOURCE, SCOPES, Env, EnvFactory


def test_issuer_is_the_configured_string_everywhere(env: Env) -> None:
    doc = env.server.authorization_server_metadata()
    prm = env.server.protected_resource_metadata()
    assert doc["issuer"] == ISSUER
    assert prm["authorization_servers"] == [ISSUER]
    assert prm["resource"] == RESOURCE == f"{doc['issuer']}/mcp"


def test_endpoints_derive_from_the_issuer(env: Env) -> None:
    doc = env.server.authorization_server_metadata()
    assert doc["authorization_endpoint"] == f"{ISSUER}/authorize"
    assert doc["token_endpoint"] == f"{ISSUER}/token"
    assert doc["registration_endpoint"] == f"{ISSUER}/register"
    assert doc["revocation_endpoint"] == f"{ISSUER}/revoke"
    assert doc["introspection_endpoint"] == f"{ISSUER}/introspect"
    assert doc["device_authorization_endpoint"] == f"{ISSUER}/device_authorization"


def test_advertises_what_mcp_clients_check(env: Env) -> None:
    doc = env.server.authorization_server_metadata()
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["response_types_supported"] == ["code"]
    assert set(doc["token_endpoint_auth_methods_supported"]) == {
        "none",
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
    }
    assert {"authorization_code", "refresh_token"} <= set(doc["grant_types_supported"])
    # SEP-1046: the client credentials grant and an asymmetric client assertion
    assert "client_credentials" in doc["grant_types_supported"]
    assert {"RS256", "ES256"} <= set(doc["token_endpoint_auth_signing_alg_values_supported"])
    assert not {"HS256", "none"} & set(doc["token_endpoint_auth_signing_alg_values_supported"])
    assert "urn:ietf:params:oauth:grant-type:device_code" in doc["grant_types_supported"]
    assert doc["authorization_response_iss_parameter_supported"] is True
    assert doc["client_id_metadata_document_supported"] is True
    assert doc["scopes_supported"] == list(SCOPES)


def test_introspection_is_not_offered_to_public_clients(env: Env) -> None:
    doc = env.server.authorization_server_metadata()
    assert "none" not in doc["introspection_endpoint_auth_methods_supported"]


def test_protected_resource_metadata(env: Env) -> None:
    prm = env.server.protected_resource_metadata()
    assert prm["scopes_supported"] == list(SCOPES)
    assert prm["bearer_methods_supported"] == ["header"]


def test_registration_endpoint_absent_when_registration_is_off(env_with: EnvFactory) -> None:
    env = env_with(oauth={"registration": False})
    assert "registration_endpoint" not in env.server.authorization_server_metadata()


def test_cimd_support_follows_the_config(env_with: EnvFactory) -> None:
    env = env_with(oauth={"client_id_metadata_documents": False})
    assert env.server.authorization_server_metadata()["client_id_metadata_document_supported"] is (
        False
    )
