"""Clients of the multi-instance tests, each call aimed at one instance (or the balancer):
OAuth by hand (register, a code through the pages, /token, /revoke, /introspect), MCP by
hand, the same request to every instance at once, the instances' counters, and the person
who approves a device."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.multi.multi_stack import Cluster
from tests.support.browser import Answer, Browser, Person
from tests.support.configs import INTEROP_PASSWORD as PASSWORD
from tests.support.configs import INTEROP_USER as USER
from tests.support.daemon import OauthdProcess
from tests.support.http_client import OauthdClient, Pkce
from tests.support.ports import free_port

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
MCP_ACCEPT = "application/json, text/event-stream"
CALL_TIMEOUT = aiohttp.ClientTimeout(total=30)


# -- OAuth by hand, aimed at one instance -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Code:
    code: str
    verifier: str
    redirect_uri: str


class OAuth:
    """A public client (registered once) calling the instances' endpoints by hand on the
    test's session; `base` is one instance's URL (or the balancer's). The resource is
    always the cluster's."""

    def __init__(self, cluster: Cluster, http: aiohttp.ClientSession) -> None:
        self.cluster = cluster
        self.http = http
        self.redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
        self.client_id = ""

    def at(self, base: str) -> OauthdClient:
        return OauthdClient(base, self.cluster.issuer, self.http)

    async def register(self, base: str, *grant_types: str) -> None:
        registered = await self.at(base).register_public(
            [self.redirect_uri],
            client_name="oauthd multi-instance test",
            grant_types=list(grant_types or ("authorization_code", "refresh_token")),
            response_types=["code"],
        )
        self.client_id = registered["client_id"]

    async def code(self, base: str) -> Code:
        """Through the login and consent pages of `base` (a person at the browser)."""
        pkce = Pkce.new()
        query = self.at(base).authorize_params(self.client_id, self.redirect_uri, pkce)
        # An instance's own address, as if the pages were served at the issuer (the
        # balancer): the forms' Origin is the issuer's.
        person = Person(base, origin=self.cluster.issuer)
        back = await person.authorize(f"{base}/authorize?{urlencode(query)}")
        assert back.params.get("state") == query["state"], back.location
        assert back.params.get("iss") == self.cluster.issuer, back.location
        return Code(back.params["code"], pkce.verifier, self.redirect_uri)

    def code_form(self, code: Code) -> dict[str, str]:
        return {
            "grant_type": "authorization_code",
            "code": code.code,
            "redirect_uri": code.redirect_uri,
            "client_id": self.client_id,
            "code_verifier": code.verifier,
            "resource": self.cluster.resource,
        }

    def refresh_form(self, refresh_token: str) -> dict[str, str]:
        return {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": self.client_id,
        }

    async def post(self, base: str, path: str, form: dict[str, str]) -> Answer:
        return await self.at(base).call("POST", path, data=form, timeout=CALL_TIMEOUT)

    async def token(self, base: str, form: dict[str, str]) -> Answer:
        return await self.post(base, "/token", form)

    async def tokens(self, base: str) -> dict[str, Any]:
        """A new grant: code on `base`, redeemed on `base`."""
        answer = await self.token(base, self.code_form(await self.code(base)))
        assert answer.status == 200, answer
        body: dict[str, Any] = answer.json()
        return body

    async def revoke(self, base: str, token: str) -> Answer:
        return await self.post(base, "/revoke", {"token": token, "client_id": self.client_id})

    async def introspect(self, base: str, token: str) -> dict[str, Any]:
        return await self.at(base).introspect(token, self.cluster.introspection_secret)


# -- MCP by hand --------------------------------------------------------------------------------


def rpc(method: str, params: dict[str, Any] | None = None, id: int | None = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if id is not None:
        message["id"] = id
    if params is not None:
        message["params"] = params
    return message


INITIALIZE = rpc(
    "initialize",
    {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "oauthd-multi", "version": "1.0"},
    },
)


async def mcp_post(
    http: aiohttp.ClientSession,
    base: str,
    access_token: str,
    message: dict[str, Any],
    session_id: str | None = None,
) -> tuple[int, str | None, str]:
    """POST one JSON-RPC message to `base`/mcp: (status, Mcp-Session-Id answered, body)."""
    headers = {"Authorization": f"Bearer {access_token}", "Accept": MCP_ACCEPT}
    if session_id is not None:
        headers["Mcp-Session-Id"] = session_id
    async with http.post(
        f"{base}/mcp", json=message, headers=headers, timeout=CALL_TIMEOUT
    ) as response:
        return response.status, response.headers.get("Mcp-Session-Id"), await response.text()


async def open_mcp_session(http: aiohttp.ClientSession, base: str, access_token: str) -> str:
    """initialize + notifications/initialized on `base`; the session id."""
    status, session_id, body = await mcp_post(http, base, access_token, INITIALIZE)
    assert status == 200 and session_id, (status, body)
    note = rpc("notifications/initialized", id=None)
    status, _, body = await mcp_post(http, base, access_token, note, session_id)
    assert status == 202, (status, body)
    return session_id


async def mcp_status(http: aiohttp.ClientSession, base: str, access_token: str) -> int:
    """What `base` answers a token on a fresh initialize (200 or 401)."""
    return (await mcp_post(http, base, access_token, INITIALIZE))[0]


async def upstream_has_session(http: aiohttp.ClientSession, upstream: str, session: str) -> bool:
    """Ask the demo server itself (no oauthd in between) whether a session is still open."""
    headers = {"Accept": MCP_ACCEPT, "Mcp-Session-Id": session}
    async with http.post(upstream, json=rpc("ping"), headers=headers) as response:
        await response.read()
        assert response.status in (200, 404), response.status
        return response.status == 200


# -- everyone at once ---------------------------------------------------------------------------


async def all_at_once(calls: Sequence[Callable[[], Awaitable[Answer]]]) -> list[Answer]:
    """Run the calls together: each waits at a barrier, released when all are scheduled."""
    gate = asyncio.Event()
    ready = 0

    async def run(call: Callable[[], Awaitable[Answer]]) -> Answer:
        nonlocal ready
        ready += 1
        if ready == len(calls):
            gate.set()
        await gate.wait()
        return await call()

    return await asyncio.gather(*(run(call) for call in calls))


async def warm(http: aiohttp.ClientSession, bases: Iterable[str], per_base: int) -> None:
    """Open `per_base` keep-alive connections to each base, so that a race is not decided
    by who connects first."""

    async def hit(base: str) -> None:
        async with http.get(f"{base}/healthz") as response:
            await response.read()

    await asyncio.gather(*(hit(base) for base in bases for _ in range(per_base)))


async def counted(
    http: aiohttp.ClientSession, instances: Iterable[OauthdProcess], counter: str, **labels: str
) -> float:
    """A Prometheus counter (`oauthd_tokens_issued`, ...) summed over the instances' /metrics:
    what the cluster as a whole did, whichever instance did it."""
    total = 0.0
    for instance in instances:
        async with http.get(f"{instance.url}/metrics", timeout=CALL_TIMEOUT) as response:
            assert response.status == 200, response.status
            text = await response.text()
        for family in text_string_to_metric_families(text):
            total += sum(
                sample.value
                for sample in family.samples
                if sample.name == f"{counter}_total" and labels.items() <= sample.labels.items()
            )
    return total


# -- the device's user, at a browser --------------------------------------------------------------


async def approve_device(issuer: str, user_code: str) -> str:
    """The person who approves the device at `issuer`'s pages; the text of the last page."""
    browser = Browser(issuer)
    try:
        return (await browser.approve_device(user_code, username=USER, password=PASSWORD)).text
    finally:
        await browser.close()
