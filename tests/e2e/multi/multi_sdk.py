"""The official MCP Python SDK client (`OAuthClientProvider` + streamable HTTP) for the
multi-instance tests: everything it does goes through the balancer, and its redirect
handler is a person who signs in and allows at oauthd's pages."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx2
from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from pydantic import AnyUrl

from tests.e2e.multi.multi_stack import Cluster
from tests.support.browser import Person
from tests.support.ports import free_port

# -- the official Python SDK client --------------------------------------------------------------


class MemoryTokenStorage:
    """The SDK's `TokenStorage`, in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


@dataclass
class SdkClient:
    provider: OAuthClientProvider
    storage: MemoryTokenStorage
    browser: Person

    def http(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(auth=self.provider, timeout=httpx2.Timeout(30, read=60))

    def force_refresh(self) -> None:
        """The SDK refreshes only on its own clock: move it past the token's expiry."""
        self.provider.context.token_expiry_time = time.time() - 1


def sdk_client(cluster: Cluster) -> SdkClient:
    """`OAuthClientProvider` whose redirect handler is a person at a browser; everything
    goes through the balancer (the issuer)."""
    storage = MemoryTokenStorage()
    browser = Person(cluster.issuer)
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    returned: list[AuthorizationCodeResult] = []

    async def redirect_handler(authorization_url: str) -> None:
        back = await browser.authorize(authorization_url)
        assert back.location.startswith(redirect_uri + "?"), back.location
        params = back.params
        returned.append(
            AuthorizationCodeResult(
                code=params["code"], state=params.get("state"), iss=params.get("iss")
            )
        )

    async def callback_handler() -> AuthorizationCodeResult:
        return returned.pop()

    metadata = OAuthClientMetadata(
        client_name="oauthd multi-instance (mcp python sdk)",
        redirect_uris=[AnyUrl(redirect_uri)],
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="none",
    )
    provider = OAuthClientProvider(
        cluster.resource,
        metadata,
        storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    return SdkClient(provider, storage, browser)
