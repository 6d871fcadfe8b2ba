"""`OauthdClient`: calls oauthd at a base URL as an MCP client would (registration, the
code flow through `tests.support.browser`, /token, introspection, the device grant).

Used against the app in process and against the real daemon alike: nothing here depends
on the app object, only on a base URL.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin

import aiohttp

from oauthd import crypto
from tests.support.browser import Answer, Browser, read_answer
from tests.support.configs import INTROSPECTION_ID

LOOPBACK_REDIRECT = "http://127.0.0.1/callback"  # registered; used with a random port


@dataclass(frozen=True, slots=True)
class Pkce:
    verifier: str
    challenge: str

    @classmethod
    def new(cls) -> Pkce:
        verifier = base64.urlsafe_b64encode(os.urandom(40)).rstrip(b"=").decode()
        return cls(verifier, crypto.pkce_challenge(verifier))


# -- the API client --------------------------------------------------------------------------


class OauthdClient:
    """Calls oauthd at `base` as an MCP client would (no cookies; or on the caller's
    `session`), and keeps every secret it was handed in `seen` (for the no-secret-in-clear
    checks)."""

    def __init__(
        self, base: str, issuer: str, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.base = base
        self.issuer = issuer
        self.resource = f"{issuer}/mcp"
        self._own_session = session is None  # else the caller's, closed by the caller
        self.session = session or aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        self.browsers: list[Browser] = []
        self.seen: set[str] = set()

    async def close(self) -> None:
        for browser in self.browsers:
            await browser.close()
        if self._own_session:
            await self.session.close()

    def remember(self, *values: str | None) -> None:
        self.seen.update(v for v in values if v)

    def secrets(self) -> set[str]:
        """Every secret handed out so far, browser cookies included."""
        cookies = {v for b in self.browsers for v in b.cookie_values()}
        return self.seen | cookies

    def browser(self) -> Browser:
        browser = Browser(self.base, origin=self.issuer)
        self.browsers.append(browser)
        return browser

    async def call(self, method: str, path: str, **kwargs: Any) -> Answer:
        async with self.session.request(
            method, urljoin(self.base + "/", path), allow_redirects=False, **kwargs
        ) as response:
            return await read_answer(response)

    # -- registration --------------------------------------------------------------------------

    async def register(self, **metadata: Any) -> dict[str, Any]:
        answer = await self.call("POST", "/register", json=metadata)
        assert answer.status == 201, answer.text
        body: dict[str, Any] = answer.json()
        self.remember(body.get("client_secret"))
        return body

    async def register_public(
        self, redirect_uris: Iterable[str] = (LOOPBACK_REDIRECT,), **metadata: Any
    ) -> dict[str, Any]:
        return await self.register(
            redirect_uris=list(redirect_uris),
            token_endpoint_auth_method="none",
            client_name=metadata.pop("client_name", "Test App"),
            **metadata,
        )

    # -- the code flow -------------------------------------------------------------------------

    def authorize_params(
        self, client_id: str, redirect_uri: str, pkce: Pkce, **extra: str | None
    ) -> dict[str, str]:
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "code_challenge": pkce.challenge,
            "code_challenge_method": "S256",
            "state": "state-" + crypto.new_key(),
            "resource": self.resource,
            "scope": "mcp",
        }
        params.update(extra)
        return {k: v for k, v in params.items() if v is not None}

    async def login_page(self) -> tuple[Browser, Answer]:
        """A new public client's authorization in a new browser, at the login page."""
        app = await self.register_public()
        browser = self.browser()
        params = self.authorize_params(app["client_id"], LOOPBACK_REDIRECT, Pkce.new())
        page = await browser.authorize(params)
        assert page.status == 200 and {"csrf_token", "request"} <= page.form().fields.keys()
        return browser, page

    async def authorization_code(
        self,
        client: Mapping[str, Any],
        redirect_uri: str = "http://127.0.0.1:43123/callback",
        *,
        browser: Browser | None = None,
        consent: bool = True,
    ) -> tuple[str, Pkce]:
        """A fresh code for `client` (and its PKCE verifier), through the browser."""
        pkce = Pkce.new()
        params = self.authorize_params(client["client_id"], redirect_uri, pkce)
        answer = await (browser or self.browser()).code_flow(params, consent=consent)
        query = answer.redirect_query()
        assert answer.location is not None and answer.location.startswith(redirect_uri + "?")
        assert query["state"] == params["state"] and query["iss"] == self.issuer, query
        self.remember(query["code"])
        return query["code"], pkce

    async def token(self, headers: Mapping[str, str] | None = None, **form: str) -> Answer:
        answer = await self.call("POST", "/token", data=form, headers=headers)
        if answer.status == 200:
            body = answer.json()
            self.remember(body.get("access_token"), body.get("refresh_token"))
        return answer

    async def tokens(
        self,
        client: Mapping[str, Any],
        redirect_uri: str = "http://127.0.0.1:43123/callback",
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Code flow plus code exchange: the token response body."""
        code, pkce = await self.authorization_code(client, redirect_uri, **kwargs)
        answer = await self.exchange(client, code, pkce, redirect_uri, resource=self.resource)
        assert answer.status == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    async def exchange(
        self, client: Mapping[str, Any], code: str, pkce: Pkce, redirect_uri: str, **extra: str
    ) -> Answer:
        """The code at /token, `client` authenticated as it registered."""
        return await self.token(
            grant_type="authorization_code",
            code=code,
            code_verifier=pkce.verifier,
            redirect_uri=redirect_uri,
            **extra,
            **client_auth(client),
        )

    async def refresh(self, client: Mapping[str, Any], refresh_token: str) -> Answer:
        return await self.token(
            grant_type="refresh_token", refresh_token=refresh_token, **client_auth(client)
        )

    async def call_mcp(self, access_token: str) -> Answer:
        """A JSON-RPC ping at /mcp with `access_token` (the bearer check marks it used)."""
        return await self.call(
            "POST",
            "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers={
                "Authorization": f"Bearer {access_token}",
                "Accept": "application/json, text/event-stream",
            },
        )

    # -- revocation, introspection ---------------------------------------------------------------

    async def introspect(self, token: str, secret: str) -> dict[str, Any]:
        answer = await self.call(
            "POST",
            "/introspect",
            data={"token": token},
            headers=basic_auth(INTROSPECTION_ID, secret),
        )
        assert answer.status == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    # -- the device grant ------------------------------------------------------------------------

    async def start_device(self, client: Mapping[str, Any]) -> dict[str, Any]:
        answer = await self.call("POST", "/device_authorization", data=client_auth(client))
        assert answer.status == 200, answer.text
        body: dict[str, Any] = answer.json()
        self.remember(body["device_code"])
        return body

    async def poll(self, client: Mapping[str, Any], device_code: str) -> Answer:
        return await self.token(
            grant_type="urn:ietf:params:oauth:grant-type:device_code",
            device_code=device_code,
            **client_auth(client),
        )


def client_auth(client: Mapping[str, Any]) -> dict[str, str]:
    """Form fields that authenticate `client` (client_secret_post when it has a secret)."""
    fields = {"client_id": client["client_id"]}
    if client.get("client_secret"):
        fields["client_secret"] = client["client_secret"]
    return fields


def basic_auth(client_id: str, secret: str) -> dict[str, str]:
    """An HTTP Basic header as RFC 6749 s2.3.1 has it: both parts form-encoded first."""
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def user_code_as_typed(user_code: str) -> str:
    """How a person types XXXX-XXXX: lower case, no dash."""
    return user_code.replace("-", "").lower()
