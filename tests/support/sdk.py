"""The official MCP Python SDK client (`OAuthClientProvider`, for streamable HTTP) whose
redirect handler is a person who signs in and allows at oauthd's pages (`Person`)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx2
from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from pydantic import AnyUrl

from tests.support.browser import Person
from tests.support.ports import free_port


class MemoryStorage:
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
    """The provider, its storage, the person at the browser, and the authorization URLs
    the redirect handler was given; `on_response` hooks see every HTTP answer."""

    provider: OAuthClientProvider
    storage: MemoryStorage
    browser: Person
    authorization_urls: list[str]
    on_response: list[Callable[[httpx2.Response], Awaitable[None]]] = field(default_factory=list)

    def http(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            auth=self.provider,
            timeout=httpx2.Timeout(30, read=120),
            event_hooks={"response": list(self.on_response)},
        )

    def force_refresh(self) -> None:
        """The SDK refreshes only on its own clock (checklist s5.6): move it past expiry."""
        self.provider.context.token_expiry_time = time.time() - 1


def sdk_client(
    issuer: str,
    resource: str,
    client_name: str,
    auth_method: str | None = "none",
    person: Person | None = None,
) -> SdkClient:
    """A client of `resource` that registers itself as `client_name` (DCR), with
    `auth_method` (None: the SDK's choice); its person (`person`, else a new one) signs
    in at `issuer`."""
    storage = MemoryStorage()
    browser = person or Person(issuer)
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    returned: list[AuthorizationCodeResult] = []
    urls: list[str] = []

    async def redirect_handler(authorization_url: str) -> None:
        urls.append(authorization_url)
        redirect = await browser.authorize(authorization_url)
        assert redirect.location.startswith(redirect_uri + "?"), redirect.location
        params = redirect.params
        assert "error" not in params, params
        returned.append(
            AuthorizationCodeResult(
                code=params["code"], state=params.get("state"), iss=params.get("iss")
            )
        )

    async def callback_handler() -> AuthorizationCodeResult:
        return returned.pop()

    metadata = OAuthClientMetadata(
        client_name=client_name,
        redirect_uris=[AnyUrl(redirect_uri)],
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method=auth_method,  # type: ignore[arg-type]
    )
    provider = OAuthClientProvider(
        resource,
        metadata,
        storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    return SdkClient(provider, storage, browser, urls)
