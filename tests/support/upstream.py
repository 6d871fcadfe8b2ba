"""The `/mcp` proxy over real HTTP: a scriptable fake MCP upstream that records what it
gets, oauthd on a `TestServer` in front of it, and quick ways to obtain tokens.

There is deliberately no `tests/proxy/__init__.py`; helpers live in this uniquely named
module next to `conftest.py` (see `tests/http/conftest.py` for why).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import aiohttp
import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDictProxy

from oauthd import crypto
from oauthd.clock import FakeClock
from oauthd.config import Config, Listen, LocalUser, default_config
from oauthd.http import create_app
from oauthd.http.keys import AUTH, STORE
from oauthd.oauth import AuthServer
from oauthd.store import Store
from tests.support.forms import parse_forms

USER = "alice"
PASSWORD = "correct horse battery staple"
OTHER_USER = "bob"
REDIRECT_URI = "http://127.0.0.1/callback"  # registered; any loopback port matches


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=")


def fast_password_hash(password: str) -> str:
    """A hash `Users` accepts, at the lowest allowed cost, so a login takes ~1 ms."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**10, r=8, p=1, dklen=32)
    return f"scrypt$ln=10,r=8,p=1${_b64(salt)}${_b64(digest)}"


PASSWORD_HASH = fast_password_hash(PASSWORD)


async def eventually(check: Callable[[], bool], within: float = 2.0) -> None:
    """Wait until `check()` holds; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {check}")
        await asyncio.sleep(0.01)


# -- the fake upstream MCP server ------------------------------------------------------------


@dataclass
class Seen:
    """One request as the upstream got it. `body` is None when it was not read completely
    (the answer streams it itself, or the sender gave up half way)."""

    method: str
    raw_path: str  # path and query as they came on the request line
    headers: CIMultiDictProxy[str]
    body: bytes | None = None

    @property
    def session_id(self) -> str | None:
        return self.headers.get("Mcp-Session-Id")


Answer = Callable[[web.Request, Seen], Awaitable[web.StreamResponse]]


async def echo(request: web.Request, seen: Seen) -> web.StreamResponse:
    """The default answer: a JSON-RPC result describing what arrived."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "result": {"method": seen.method, "bytes": len(seen.body or b"")},
    }
    return web.json_response(body)


def sse_event(data: str, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: message\ndata: {data}\n\n".encode()


async def start_sse(request: web.Request, **headers: str) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **headers}
    )
    await response.prepare(request)
    return response


class FakeUpstream:
    """An MCP server stand-in on 127.0.0.1. Set `answer` to script it; every request is
    recorded in `requests` (the body is read before `answer` runs unless
    `read_body_first` is False). `session_id`, when set, is returned in `Mcp-Session-Id`
    on every answer that does not set one itself. `gone` is set when a handler was cut
    off because its client (oauthd) went away."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.answer: Answer = echo
        self.read_body_first = True
        self.session_id: str | None = None
        self.gone = asyncio.Event()
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/mcp", self._handle)
        self.server = TestServer(app, host="127.0.0.1")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/mcp"

    async def start(self) -> None:
        await self.server.start_server()

    async def close(self) -> None:
        await self.server.close()

    def of_method(self, method: str) -> list[Seen]:
        return [seen for seen in self.requests if seen.method == method]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        seen = Seen(request.method, request.raw_path, request.headers)
        self.requests.append(seen)
        try:
            if self.read_body_first and request.body_exists:
                seen.body = await request.read()
            elif not request.body_exists:
                seen.body = b""
            response = await self.answer(request, seen)
        except (asyncio.CancelledError, ConnectionError):
            self.gone.set()
            raise
        if self.session_id and "Mcp-Session-Id" not in response.headers and not response.prepared:
            response.headers["Mcp-Session-Id"] = self.session_id
        return response


# -- oauthd -----------------------------------------------------------------------------------


def make_config(tmp: Path, port: int, upstream_url: str, **sections: Mapping[str, Any]) -> Config:
    """Defaults, plus: issuer and listen on `port`, the file backend in `tmp/state`, the
    users alice and bob, `upstream.url`. `sections` change single keys:
    `upstream={"read_timeout": 0.3}`."""
    base = default_config(tmp)
    config = dataclasses.replace(
        base,
        server=dataclasses.replace(
            base.server, listen=Listen("127.0.0.1", port), issuer=f"http://127.0.0.1:{port}"
        ),
        storage=dataclasses.replace(base.storage, backend="file", path=tmp / "state"),
        login=dataclasses.replace(
            base.login,
            users=(LocalUser(USER, PASSWORD_HASH), LocalUser(OTHER_USER, PASSWORD_HASH)),
        ),
        upstream=dataclasses.replace(base.upstream, url=upstream_url),
    )
    changed = {
        name: dataclasses.replace(getattr(config, name), **keys) for name, keys in sections.items()
    }
    return dataclasses.replace(config, **changed)


@dataclass
class Reply:
    """One answer, read completely."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return orjson.loads(self.body)

    def challenge(self) -> dict[str, str]:
        """The `WWW-Authenticate: Bearer` parameters."""
        header = self.headers.get("WWW-Authenticate", "")
        scheme, _, rest = header.partition(" ")
        assert scheme == "Bearer", header
        params: dict[str, str] = {}
        for part in rest.split('", '):
            name, _, value = part.partition("=")
            params[name.strip()] = value.strip().strip('"')
        return params

    def assert_jsonrpc_error(self, status: int) -> dict[str, Any]:
        assert self.status == status, (self.status, self.text)
        assert self.headers.get("Content-Type", "").startswith("application/json")
        body = self.json()
        assert body["jsonrpc"] == "2.0" and body["id"] is None, body
        assert isinstance(body["error"]["code"], int) and body["error"]["message"], body
        error: dict[str, Any] = body["error"]
        return error


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
class Oauthd:
    """oauthd in front of the fake upstream. `restart()` stops it and starts a new app
    on the same port, config, clock and state dir."""

    config: Config
    clock: FakeClock
    server: TestServer | None = None
    session: aiohttp.ClientSession = field(
        default_factory=lambda: aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
    )

    @property
    def base(self) -> str:
        return self.config.server.issuer

    @property
    def mcp_url(self) -> str:
        return f"{self.base}/mcp"

    @property
    def app(self) -> web.Application:
        assert self.server is not None
        return self.server.app

    @property
    def auth(self) -> AuthServer:
        return self.app[AUTH]

    @property
    def store(self) -> Store:
        return self.app[STORE]

    async def start(self) -> None:
        port = self.config.server.listen.port
        self.server = TestServer(create_app(self.config, clock=self.clock), port=port)
        await self.server.start_server()
        # As in the daemon: a client that goes away cancels its handler. aiohttp's
        # TestServer sets this itself (passing it again is a TypeError); make sure it did.
        assert self.server.runner is not None
        assert self.server.runner._kwargs.get("handler_cancellation") is True

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def close(self) -> None:
        await self.session.close()
        await self.stop()

    async def call(self, method: str, path: str, **kwargs: Any) -> Reply:
        async with self.session.request(
            method, urljoin(self.base + "/", path), allow_redirects=False, **kwargs
        ) as response:
            return Reply(response.status, response.headers, await response.read())

    async def mcp(
        self, method: str = "POST", granted: Granted | None = None, **kwargs: Any
    ) -> Reply:
        """A request to /mcp; with `granted`, its bearer token (plus `headers`)."""
        headers = dict(kwargs.pop("headers", {}))
        if granted is not None:
            headers = granted.bearer(**headers)
        if method == "POST" and "data" not in kwargs and "json" not in kwargs:
            kwargs["json"] = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        return await self.call(method, "/mcp", headers=headers, **kwargs)

    # -- tokens --------------------------------------------------------------------------

    async def register(self) -> str:
        registration = await self.auth.clients.register(
            {"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none"}
        )
        return registration.client.client_id

    async def grant(
        self,
        user: str = USER,
        scopes: tuple[str, ...] = ("mcp",),
        resource: str | None = None,
        client_id: str | None = None,
    ) -> Granted:
        """A new grant straight from the protocol (what /token issues after a login)."""
        client_id = client_id or await self.register()
        issued = await self.auth.tokens.issue(
            crypto.new_key(), user, client_id, scopes, resource or self.mcp_url
        )
        assert issued.refresh_token is not None
        return Granted(client_id, issued.access_token, issued.refresh_token)

    async def refresh(self, granted: Granted) -> Reply:
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

    async def login(self, username: str = USER, password: str = PASSWORD) -> Granted:
        """The whole way a real client goes: /register, /authorize, the login and consent
        pages (their forms followed as a browser would), then /token."""
        reply = await self.call(
            "POST",
            "/register",
            json={
                "redirect_uris": [REDIRECT_URI],
                "token_endpoint_auth_method": "none",
                "client_name": "proxy test",
            },
        )
        assert reply.status == 201, reply.text
        client_id = reply.json()["client_id"]
        verifier = base64.urlsafe_b64encode(os.urandom(40)).rstrip(b"=").decode()
        redirect_uri = "http://127.0.0.1:43123/callback"
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "code_challenge": crypto.pkce_challenge(verifier),
            "code_challenge_method": "S256",
            "state": "s-" + crypto.new_key(),
            "resource": self.mcp_url,
            "scope": "mcp",
        }
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            page = await _browse(browser, self.base, "GET", "/authorize", params=params)
            page = await _submit(browser, self.base, page, username=username, password=password)
            page = await _submit(browser, self.base, page, button=("decision", "allow"))
        assert page.status == 303, (page.status, page.text[:300])
        location = page.headers["Location"]
        assert location.startswith(redirect_uri + "?"), location
        query = dict(parse_qsl(urlsplit(location).query))
        assert query["state"] == params["state"], query
        reply = await self.call(
            "POST",
            "/token",
            data={
                "grant_type": "authorization_code",
                "code": query["code"],
                "code_verifier": verifier,
                "redirect_uri": redirect_uri,
                "client_id": client_id,
                "resource": self.mcp_url,
            },
        )
        assert reply.status == 200, reply.text
        body = reply.json()
        return Granted(client_id, body["access_token"], body["refresh_token"])


StartOauthd = Callable[..., Awaitable[Oauthd]]


# -- a minimal browser for `Oauthd.login` ------------------------------------------------


@dataclass
class _Page:
    url: str
    status: int
    headers: CIMultiDictProxy[str]
    text: str


async def _browse(
    browser: aiohttp.ClientSession, base: str, method: str, path: str, **kwargs: Any
) -> _Page:
    url = urljoin(base + "/", path)
    for _ in range(10):
        async with browser.request(method, url, allow_redirects=False, **kwargs) as response:
            page = _Page(url, response.status, response.headers, await response.text())
        location = page.headers.get("Location", "")
        ours = location.startswith("/") or location.startswith(base + "/")
        if page.status not in (301, 302, 303, 307) or not ours:
            return page
        method, url, kwargs = "GET", urljoin(url, location), {}
    raise AssertionError("redirect loop")


async def _submit(
    browser: aiohttp.ClientSession,
    base: str,
    page: _Page,
    button: tuple[str, str] | None = None,
    **typed: str,
) -> _Page:
    forms = parse_forms(page.text)
    assert forms, (page.status, page.text[:500])
    data = {**forms[0].fields, **typed}
    if button is not None:
        data[button[0]] = button[1]
    return await _browse(browser, base, "POST", urljoin(page.url, forms[0].action), data=data)
