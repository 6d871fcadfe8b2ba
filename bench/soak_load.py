"""The mixed load of `bench/soak.py`: a pool of live grants kept at a fixed size, and one
loop per kind of work, each at its own rate (so the whole load is bounded):

- logins through the pages (authorize, the login form with its CSRF field, consent, then
  the code at /token), each adding a grant to the pool;
- device flows (RFC 8628: /device_authorization, the /device page, login, approval, one
  poll after the interval), each adding a grant too;
- whenever the pool holds more than its size, the oldest idle grant is revoked (/revoke
  of its refresh token, which ends the grant and its MCP session): creation and
  revocation balance, so the record count stays steady;
- refreshes (rotation: a grant always presents its last refresh token);
- `/mcp` calls (`tools/call` of `echo`, answered as an SSE stream by the demo server) on
  each grant's MCP session, and short-lived GET SSE streams on it;
- registrations of one app that is never used (oauth.unused_registrations_per_app bounds
  them), below oauth.registrations_per_minute.

Every request is timed into `Recorder` under its endpoint's name; a 5xx or a transport
error is counted as such, any other unexpected answer as `unexpected`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, urljoin, urlsplit

import aiohttp
from multidict import CIMultiDict
from proxy import PASSWORD, REDIRECT_URI, USER, _Form, authorize_params

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
ACCEPT = "application/json, text/event-stream"
PROTOCOL = "2025-06-18"
ENDPOINTS = (
    "authorize",
    "login",
    "consent",
    "device_page",
    "token_code",
    "token_device",
    "token_refresh",
    "revoke",
    "register",
    "device_authorization",
    "mcp_initialize",
    "mcp_call",
    "mcp_sse_open",
    "account",
    "account_logout",
)


class Forms(HTMLParser):
    """Every form of a page: action -> its hidden fields."""

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, dict[str, str]] = {}
        self._action: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._action = a.get("action", "")
            self.found.setdefault(self._action, {})
        elif tag == "input" and "name" in a and self._action is not None:
            self.found[self._action].setdefault(a["name"], a.get("value", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._action = None


@dataclass(slots=True)
class Recorder:
    """Latencies per endpoint since the last `take()`, and running error counts."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    requests: int = 0
    server_errors: int = 0
    transport_errors: int = 0
    unexpected: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    examples: dict[str, str] = field(default_factory=dict)  # the first body of each

    def record(
        self, endpoint: str, seconds: float, status: int, expected: tuple[int, ...], body: str = ""
    ) -> None:
        self.requests += 1
        self.latencies[endpoint].append(seconds)
        if status >= 500:
            self.server_errors += 1
        if status not in expected:
            key = f"{endpoint} {status}"
            self.unexpected[key] += 1
            self.examples.setdefault(key, body[:300])

    def take(self) -> dict[str, list[float]]:
        taken, self.latencies = self.latencies, defaultdict(list)
        return taken


@dataclass(slots=True)
class Grant:
    client_id: str
    access: str
    refresh: str
    session: str = ""
    busy: bool = False


@dataclass(slots=True)
class Rates:
    """Operations per second of each loop; `scale` multiplies them all."""

    refresh: float = 6.0
    mcp_call: float = 6.0
    sse: float = 0.3
    login: float = 0.4
    device: float = 0.1
    register: float = 0.1  # 6 a minute: below registrations_per_minute (20)

    def scaled(self, scale: float) -> Rates:
        return Rates(*(getattr(self, f) * scale for f in self.__slots__))  # type: ignore[attr-defined]


class Load:
    def __init__(self, base: str, clients: list[str], pool: int, sse_hold: float) -> None:
        self.base = base
        self.clients = clients
        self.pool_size = pool
        self.sse_hold = sse_hold
        self.grants: list[Grant] = []
        self.rec = Recorder()
        self.api = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32))

    async def close(self) -> None:
        await self.api.close()

    # -- timed requests ---------------------------------------------------------------------

    async def call(
        self,
        endpoint: str,
        method: str,
        url: str,
        *,
        expected: tuple[int, ...] = (200,),
        session: aiohttp.ClientSession | None = None,
        **kwargs: Any,
    ) -> tuple[int, str, CIMultiDict[str]]:
        """(status, body, headers) of one request, timed to its whole body."""
        started = time.perf_counter()
        try:
            async with (session or self.api).request(
                method, url, allow_redirects=False, **kwargs
            ) as response:
                body = await response.text()
                status, headers = response.status, response.headers.copy()
        except (TimeoutError, aiohttp.ClientError, OSError):
            self.rec.transport_errors += 1
            raise
        self.rec.record(endpoint, time.perf_counter() - started, status, expected, body)
        return status, body, headers

    async def token(self, endpoint: str, form: dict[str, str]) -> dict[str, Any] | None:
        status, body, _ = await self.call(endpoint, "POST", f"{self.base}/token", data=form)
        return json.loads(body) if status == 200 else None

    # -- creating grants ----------------------------------------------------------------------

    async def pages(
        self, browser: aiohttp.ClientSession, endpoint: str, method: str, url: str, **kw: Any
    ) -> tuple[int, str, str, str]:
        """One page request and oauthd's own redirects: (status, url, Location, body)."""
        for _ in range(10):
            status, text, headers = await self.call(
                endpoint, method, url, session=browser, expected=(200, 302, 303), **kw
            )
            location = headers.get("Location", "")
            if status not in (302, 303) or not location.startswith(("/", self.base + "/")):
                return status, url, location, text
            method, url, kw = "GET", urljoin(url, location), {}
            endpoint = urlsplit(url).path.strip("/").replace("/", "_") or endpoint
        raise RuntimeError("redirect loop")

    async def fill_forms(
        self, browser: aiohttp.ClientSession, page: Any, typed: dict[str, str]
    ) -> Any:
        """Submit the page's form (user code, then credentials, then allow) until a page
        without a form or a redirect to the client."""
        for _ in range(4):
            status, url, location, text = page
            if status in (302, 303) and location.startswith(REDIRECT_URI):
                return page
            form = _Form()
            form.feed(text)
            if form.action is None:
                return page
            data = dict(form.fields)
            for name in ("user_code", "username", "password"):
                if name in form.fields or (name == "password" and "username" in data):
                    data[name] = typed[name]
            if not {"user_code", "username"} & form.fields.keys():
                data["decision"] = "allow"
            target = urljoin(url, form.action)
            page = await self.pages(
                browser, urlsplit(target).path.strip("/") or "form", "POST", target, data=data
            )
        raise RuntimeError(f"no end to the forms at {page[1]}")

    async def sign_out(self, browser: aiohttp.ClientSession) -> None:
        """Sign the browser out on the account page (which lists the user's connected
        apps): its account session ends now rather than in 30 minutes."""
        _, text, _ = await self.call("account", "GET", f"{self.base}/account", session=browser)
        forms = Forms()
        forms.feed(text)
        fields = forms.found.get("/account/logout")
        if fields is None:
            self.rec.unexpected["no sign-out form on /account"] += 1
            return
        url = f"{self.base}/account/logout"
        await self.call(
            "account_logout", "POST", url, session=browser, data=fields, expected=(303,)
        )

    async def login(self) -> Grant | None:
        client_id = random.choice(self.clients)
        verifier, params = authorize_params(self.base, client_id)
        typed = {"username": USER, "password": PASSWORD, "user_code": ""}
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            page = await self.pages(
                browser, "authorize", "GET", f"{self.base}/authorize", params=params
            )
            _, _, location, _ = await self.fill_forms(browser, page, typed)
            await self.sign_out(browser)
        if not location.startswith(REDIRECT_URI + "?"):
            self.rec.unexpected["login did not end at the client"] += 1
            return None
        form = {
            "grant_type": "authorization_code",
            "code": dict(parse_qsl(urlsplit(location).query))["code"],
            "code_verifier": verifier,
            "redirect_uri": REDIRECT_URI,
            "client_id": client_id,
            "resource": f"{self.base}/mcp",
        }
        body = await self.token("token_code", form)
        return (
            None if body is None else Grant(client_id, body["access_token"], body["refresh_token"])
        )

    async def device_flow(self) -> Grant | None:
        client_id = random.choice(self.clients)
        form = {"client_id": client_id, "scope": "mcp", "resource": f"{self.base}/mcp"}
        status, body, _ = await self.call(
            "device_authorization", "POST", f"{self.base}/device_authorization", data=form
        )
        if status != 200:
            return None
        started = json.loads(body)
        typed = {"username": USER, "password": PASSWORD, "user_code": started["user_code"]}
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            page = await self.pages(browser, "device_page", "GET", f"{self.base}/device")
            await self.fill_forms(browser, page, typed)
            await self.sign_out(browser)
        await asyncio.sleep(started["interval"] + 0.2)
        poll = {
            "grant_type": DEVICE_GRANT,
            "device_code": started["device_code"],
            "client_id": client_id,
        }
        tokens = await self.token("token_device", poll)
        return (
            None
            if tokens is None
            else Grant(client_id, tokens["access_token"], tokens["refresh_token"])
        )

    async def add(self, grant: Grant | None) -> None:
        """Open the grant's MCP session, pool it, and revoke the oldest idle grants while
        the pool is over its size."""
        if grant is None:
            return
        grant.session = await self.initialize(grant)
        self.grants.append(grant)
        while len(self.grants) > self.pool_size:
            oldest = next((g for g in self.grants if not g.busy), None)
            if oldest is None:
                return
            self.grants.remove(oldest)
            form = {
                "token": oldest.refresh,
                "token_type_hint": "refresh_token",
                "client_id": oldest.client_id,
            }
            await self.call("revoke", "POST", f"{self.base}/revoke", data=form)

    # -- using grants ------------------------------------------------------------------------

    def mcp_headers(self, grant: Grant) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {grant.access}", "Accept": ACCEPT}
        if grant.session:
            headers |= {"Mcp-Session-Id": grant.session, "MCP-Protocol-Version": PROTOCOL}
        return headers

    async def initialize(self, grant: Grant) -> str:
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL,
                "capabilities": {},
                "clientInfo": {"name": "soak", "version": "1"},
            },
        }
        url = f"{self.base}/mcp"
        _, _, headers = await self.call(
            "mcp_initialize", "POST", url, json=init, headers=self.mcp_headers(grant)
        )
        grant.session = headers.get("Mcp-Session-Id", "")
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        await self.call(
            "mcp_initialize",
            "POST",
            url,
            json=note,
            headers=self.mcp_headers(grant),
            expected=(202, 200),
        )
        return grant.session

    def idle_grant(self) -> Grant | None:
        idle = [g for g in self.grants if not g.busy]
        return random.choice(idle) if idle else None

    async def refresh(self, grant: Grant) -> None:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": grant.refresh,
            "client_id": grant.client_id,
        }
        body = await self.token("token_refresh", form)
        if body is not None:
            grant.access, grant.refresh = body["access_token"], body["refresh_token"]

    async def mcp_call(self, grant: Grant) -> None:
        rpc = {
            "jsonrpc": "2.0",
            "id": random.randrange(1 << 30),
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "soak"}},
        }
        await self.call(
            "mcp_call", "POST", f"{self.base}/mcp", json=rpc, headers=self.mcp_headers(grant)
        )

    async def sse(self, grant: Grant) -> None:
        """A GET stream held open `sse_hold` seconds (its latency: until the headers)."""
        headers = self.mcp_headers(grant) | {"Accept": "text/event-stream"}
        started = time.perf_counter()
        try:
            async with self.api.get(f"{self.base}/mcp", headers=headers) as response:
                self.rec.record(
                    "mcp_sse_open", time.perf_counter() - started, response.status, (200, 405)
                )
                if response.status == 200:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(response.content.read(), self.sse_hold)
        except (aiohttp.ClientError, OSError):
            self.rec.transport_errors += 1

    async def register(self) -> None:
        metadata = {
            "redirect_uris": [REDIRECT_URI],
            "token_endpoint_auth_method": "none",
            "client_name": "soak-unused",
        }
        await self.call("register", "POST", f"{self.base}/register", json=metadata, expected=(201,))

    # -- the loops ----------------------------------------------------------------------------

    async def with_grant(self, work: Any) -> None:
        grant = self.idle_grant()
        if grant is None:
            return
        grant.busy = True
        try:
            await work(grant)
        finally:
            grant.busy = False

    async def run(self, rates: Rates, until: float) -> None:
        """Every loop until the monotonic time `until`; the work started is awaited."""
        loops = {
            "refresh": lambda: self.with_grant(self.refresh),
            "mcp_call": lambda: self.with_grant(self.mcp_call),
            "sse": lambda: self.with_grant(self.sse),
            "login": lambda: self.creating(self.login),
            "device": lambda: self.creating(self.device_flow),
            "register": self.register,
        }
        await asyncio.gather(
            *(self.every(getattr(rates, name), work, until) for name, work in loops.items())
        )

    async def creating(self, make: Any) -> None:
        await self.add(await make())

    async def fill(self, at_once: int = 4) -> None:
        """Logins until the pool is full (before the measured run)."""
        while (missing := self.pool_size - len(self.grants)) > 0:
            await asyncio.gather(*(self.creating(self.login) for _ in range(min(at_once, missing))))

    async def every(self, rate: float, work: Any, until: float, in_flight: int = 8) -> None:
        """Start `work()` `rate` times a second (Poisson arrivals), at most `in_flight` at
        once (more are skipped: the load stays bounded when oauthd slows down)."""
        if rate <= 0:
            return
        running: set[asyncio.Task[None]] = set()
        while (now := time.monotonic()) < until:
            await asyncio.sleep(min(random.expovariate(rate), max(0.0, until - now)))
            if len(running) < in_flight and time.monotonic() < until:
                task = asyncio.create_task(self.guarded(work))
                running.add(task)
                task.add_done_callback(running.discard)
        if running:
            await asyncio.wait(running, timeout=60)

    async def guarded(self, work: Any) -> None:
        """A transport error is counted by `call` already; the loop carries on."""
        with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
            await work()
