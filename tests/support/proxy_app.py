"""oauthd's app in process (on a `TestServer`, in the test's event loop) for the `/mcp`
proxy tests: requests to /mcp and quick ways to obtain tokens (`Granted`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from oauthd import crypto
from tests.support.app import Running
from tests.support.browser import Answer
from tests.support.configs import USER
from tests.support.http_client import LOOPBACK_REDIRECT


@dataclass(frozen=True)
class Granted:
    """A grant's tokens and the public client that holds them."""

    client_id: str
    access: str
    refresh: str

    @property
    def grant_id(self) -> str:
        return self.access.partition(".")[0]

    def bearer(self, **headers: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}", **headers}


@dataclass
class Oauthd(Running):
    """oauthd in front of the fake upstream; `call` and `client` call it without cookies."""

    async def call(self, method: str, path: str, **kwargs: Any) -> Answer:
        return await self.client.call(method, path, **kwargs)

    async def mcp(
        self,
        method: str = "POST",
        granted: Granted | None = None,
        path: str = "/mcp",
        **kwargs: Any,
    ) -> Answer:
        """A request to /mcp (or another resource's `path`); with `granted`, its bearer
        token (plus `headers`)."""
        headers = dict(kwargs.pop("headers", {}))
        if granted is not None:
            headers = granted.bearer(**headers)
        if method == "POST" and "data" not in kwargs and "json" not in kwargs:
            kwargs["json"] = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        return await self.call(method, path, headers=headers, **kwargs)

    def resource_uri(self, path: str) -> str:
        """The RFC 8707 identifier of the resource at `path`."""
        return f"{self.config.server.issuer}{path}"

    # -- tokens --------------------------------------------------------------------------

    async def register(self) -> str:
        registration = await self.auth.clients.register(
            {"redirect_uris": [LOOPBACK_REDIRECT], "token_endpoint_auth_method": "none"}
        )
        return registration.client.client_id

    async def grant(
        self,
        user: str = USER,
        scopes: tuple[str, ...] = ("mcp",),
        resource: str | None = None,
        client_id: str | None = None,
    ) -> Granted:
        """A new grant straight from the protocol (what /token issues after a login); the
        client is noted as used, as by the /authorize and /token calls this skips."""
        client_id = client_id or await self.register()
        await self.auth.clients.find(client_id)
        issued = await self.auth.tokens.issue(
            crypto.new_key(), user, client_id, scopes, resource or self.mcp_url
        )
        assert issued.refresh_token is not None
        return Granted(client_id, issued.access_token, issued.refresh_token)

    async def refresh(self, granted: Granted) -> Answer:
        return await self.call(
            "POST",
            "/token",
            data={
                "grant_type": "refresh_token",
                "refresh_token": granted.refresh,
                "client_id": granted.client_id,
            },
        )

    async def refreshed(self, granted: Granted) -> Granted:
        reply = await self.refresh(granted)
        assert reply.status == 200, reply.text
        body = reply.json()
        return Granted(granted.client_id, body["access_token"], body["refresh_token"])

    async def revoke(self, token: str, client_id: str) -> None:
        reply = await self.call("POST", "/revoke", data={"token": token, "client_id": client_id})
        assert reply.status == 200, reply.text

    async def login(self) -> Granted:
        """The whole way a real client goes: /register, /authorize, the login and consent
        pages (through the test browser), then /token."""
        app = await self.client.register_public(client_name="proxy test")
        body = await self.client.tokens(app)
        return Granted(app["client_id"], body["access_token"], body["refresh_token"])


StartOauthd = Callable[..., Awaitable[Oauthd]]
