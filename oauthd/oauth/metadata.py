"""Discovery documents: RFC 8414 authorization server metadata and RFC 9728 protected
resource metadata, one document per resource (at `/.well-known/oauth-protected-resource`
followed by its path; without a path: the default resource's). Everything derives from the
configured issuer, never from a Host header."""

from __future__ import annotations

from typing import Any

from oauthd.config import Config, ResourceConfig
from oauthd.oauth.assertions import ALGORITHMS, JWT_BEARER
from oauthd.oauth.signing import KeyRing

GRANT_TYPES = (
    "authorization_code",
    "refresh_token",
    "urn:ietf:params:oauth:grant-type:device_code",
    "client_credentials",
    JWT_BEARER,
)
JWKS_PATH = "/.well-known/jwks.json"
AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post", "private_key_jwt")


def authorization_server_metadata(config: Config) -> dict[str, Any]:
    issuer = config.server.issuer
    doc: dict[str, Any] = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}{JWKS_PATH}",
        "revocation_endpoint": f"{issuer}/revoke",
        "introspection_endpoint": f"{issuer}/introspect",
        "device_authorization_endpoint": f"{issuer}/device_authorization",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        # the JWT bearer grant only with a [[trusted_issuer]] whose assertions it takes
        "grant_types_supported": [
            g for g in GRANT_TYPES if g != JWT_BEARER or config.trusted_issuer
        ],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
        "revocation_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "revocation_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
        ],
        "scopes_supported": list(config.scopes_supported),
        "authorization_response_iss_parameter_supported": True,
        "client_id_metadata_document_supported": config.oauth.client_id_metadata_documents,
    }
    if config.oauth.registration:
        doc["registration_endpoint"] = f"{issuer}/register"
    return doc


def protected_resource_metadata(config: Config, resource: ResourceConfig) -> dict[str, Any]:
    return {
        "resource": resource.uri(config.server.issuer),
        "authorization_servers": [config.server.issuer],
        "scopes_supported": list(resource.scopes),
        "bearer_methods_supported": ["header"],
        "resource_name": resource.name,
    }


class Discovery:
    """The discovery documents, as `AuthServer` (the door) serves them."""

    config: Config
    keys: KeyRing

    def authorization_server_metadata(self) -> dict[str, Any]:
        return authorization_server_metadata(self.config)

    def protected_resource_metadata(self, path: str = "") -> dict[str, Any] | None:
        """The RFC 9728 document of the resource at `path` ("": the default resource's);
        None if no resource is there."""
        config = self.config
        resource = config.resource_named(path) if path else config.default_resource
        return None if resource is None else protected_resource_metadata(config, resource)

    def jwks(self) -> dict[str, Any]:
        """The JWKS document (`/.well-known/jwks.json`): the public keys of the ring."""
        return self.keys.jwks()
