"""The daemon side of tests/test_backend_outage.py: `oauthd serve` in a subprocess on a
private shared backend, a stub MCP upstream in the test's own event loop, a bounded load of
concurrent clients that records every answer (what, when, how long, status), and the
requests that must each answer 503 while the backend is down."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp

from oauthd import crypto
from tests.support.browser import Answer, Browser
from tests.support.configs import (
    INTROSPECTION_ID,
    PASSWORD,
    PASSWORD_HASH,
    USER,
    TomlValue,
    write_secret,
)
from tests.support.daemon import OauthdProcess, proxy_daemon
from tests.support.forms import Form, parse_forms
from tests.support.http_client import (
    OauthdClient,
    Pkce,
    basic_auth,
    client_auth,
    user_code_as_typed,
)

HANG_LIMIT = 10.0  # a request not answered by then is recorded as a hang (status 0)
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}  # what a browser asks for


def outage_daemon(
    directory: Path, storage: dict[str, TomlValue], upstream_url: str
) -> OauthdProcess:
    """`oauthd serve` on a shared backend (`storage`: the [storage] keys), with an
    introspection client (`introspection_secret`) and an admin socket."""
    write_secret(directory / "introspection.secret", crypto.new_secret() + "\n")
    write_secret(directory / "oauthd.key", secrets.token_hex(32) + "\n")
    return proxy_daemon(
        directory,
        upstream_url,
        users=[(USER, PASSWORD_HASH)],
        storage={"path": str(directory / "state"), **storage},
        # A refresh answered 503 may have rotated: its retry must not fail.
        tokens={"refresh_grace": "60s"},
        oauth={"registrations_per_minute": 100000},
        introspection={
            "client_id": INTROSPECTION_ID,
            "client_secret": f"file:{directory / 'introspection.secret'}",
        },
        login={"encryption_key": f"file:{directory / 'oauthd.key'}"},
        admin={"socket": str(directory / "admin.sock")},
    )


def introspection_secret(daemon: OauthdProcess) -> str:
    return (daemon.directory / "introspection.secret").read_text().strip()


@dataclass(frozen=True, slots=True)
class Call:
    """One request of the load: what it was, when it started (monotonic), how long it
    took, the status (0: no answer at all) and its Retry-After header."""

    what: str
    started: float
    took: float
    status: int
    retry_after: str | None
    note: str = ""


@dataclass
class Load:
    """Records every call; workers run until `stop` is set."""

    calls: list[Call] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def timed(self, what: str, request: Callable[[], Awaitable[Answer]]) -> Answer | None:
        started = time.monotonic()
        try:
            answer = await asyncio.wait_for(request(), HANG_LIMIT)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.calls.append(Call(what, started, time.monotonic() - started, 0, None, repr(exc)))
            return None
        note = "" if answer.status < 400 else answer.text[:200]
        self.calls.append(
            Call(
                what,
                started,
                time.monotonic() - started,
                answer.status,
                answer.headers.get("Retry-After"),
                note,
            )
        )
        return answer

    async def repeat(self, step: Callable[[], Awaitable[object]], pause: float) -> None:
        while not self.stop.is_set():
            await step()
            await asyncio.sleep(pause)


# -- the scenario: clients, their load, the endpoints during an outage ------------------------

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
REDIRECT = "http://127.0.0.1:43123/callback"

# The answers each call of the load gives while the backend is up (503 is always allowed
# during the outage, with Retry-After).
EXPECTED = {
    "/mcp": {200},
    "refresh": {200},
    "/register": {201},
    "/token authorization_code": {400},
    "/introspect": {200},
    "/revoke": {200},
    "/device_authorization": {200},
    "GET /authorize": {302},  # to the login page
    "/token device_code": {400},
    "readyz": {200},
}


@dataclass
class World:
    """What the clients hold before the outage. `pages`: a browser at each form the sweep
    posts ("login": a started authorization; "consent": signed in; "device"; "account":
    signed in, with a revoke form)."""

    app: dict[str, Any]
    mcp: dict[str, Any]  # tokens whose access token the load uses at /mcp
    rotating: dict[str, Any]  # tokens the load refreshes again and again
    kept: dict[str, Any]  # tokens nobody touches until the backend is back
    device: dict[str, Any]
    pages: dict[str, tuple[Browser, Answer]]


async def prepare(client: OauthdClient) -> World:
    app = await client.register_public(
        client_name="Outage test",
        grant_types=["authorization_code", "refresh_token", DEVICE_GRANT],
    )
    mcp = await client.tokens(app, REDIRECT)
    rotating = await client.tokens(app, REDIRECT, consent=False)
    kept = await client.tokens(app, REDIRECT, consent=False)
    device = await client.start_device(app)
    browsers = {name: client.browser() for name in ("login", "consent", "device", "account")}

    params = client.authorize_params(app["client_id"], REDIRECT, Pkce.new())
    login = await browsers["login"].authorize(params)
    assert login.status == 200 and "username" in login.form().fields

    other = await client.register_public(client_name="Outage consent")
    params = client.authorize_params(other["client_id"], REDIRECT, Pkce.new())
    consent = await browsers["consent"].sign_in(await browsers["consent"].authorize(params))
    assert consent.status == 200 and "decision" in dict(consent.form().buttons)

    device_page = await browsers["device"].go("GET", "/device")
    assert device_page.status == 200 and "user_code" in device_page.form().fields

    sign_in = await browsers["account"].go("GET", "/account")
    account = await browsers["account"].submit(sign_in, username=USER, password=PASSWORD)
    assert account.status == 200 and revoke_form(account), account.text
    answers = {"login": login, "consent": consent, "device": device_page, "account": account}
    pages = {name: (browsers[name], answers[name]) for name in browsers}
    return World(app, mcp, rotating, kept, device, pages)


def revoke_form(page: Answer) -> Form | None:
    return next((f for f in parse_forms(page.text) if f.action.endswith("/account/revoke")), None)


def api_calls(
    client: OauthdClient, daemon: OauthdProcess, world: World
) -> dict[str, Callable[[], Awaitable[Answer]]]:
    """The API requests that need the store, by name: the load makes them again and again,
    the sweep once each during the outage."""
    app, browser = world.app, client.browser()
    return {
        "/mcp": lambda: client.call_mcp(world.mcp["access_token"]),
        "/token authorization_code": lambda: client.token(
            grant_type="authorization_code",
            code="no.such-code",
            code_verifier="v" * 43,
            redirect_uri=REDIRECT,
            **client_auth(app),
        ),
        "/token device_code": lambda: client.poll(app, world.device["device_code"]),
        "/register": lambda: client.call(
            "POST",
            "/register",
            json={"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"},
        ),
        "/revoke": lambda: client.call(
            "POST", "/revoke", data={"token": "no.such", **client_auth(app)}
        ),
        "/introspect": lambda: client.call(
            "POST",
            "/introspect",
            data={"token": world.mcp["access_token"]},
            headers=basic_auth(INTROSPECTION_ID, introspection_secret(daemon)),
        ),
        "/device_authorization": lambda: client.call(
            "POST", "/device_authorization", data=client_auth(app)
        ),
        "GET /authorize": lambda: browser.request(  # a page (302 to the login page)
            "GET",
            "/authorize",
            params=client.authorize_params(app["client_id"], REDIRECT, Pkce.new()),
            headers=HTML,
        ),
    }


def start_load(
    load: Load, client: OauthdClient, daemon: OauthdProcess, world: World
) -> tuple[list[asyncio.Task[None]], dict[str, Any]]:
    """The workers: /mcp calls, refreshes, registrations and the other endpoints in turn,
    and /readyz, each in a loop with a short pause (a bounded load); and the token pair
    that the refreshes keep current."""
    app = world.app
    rotating = dict(world.rotating)
    calls = api_calls(client, daemon, world)

    async def refresh() -> None:
        answer = await load.timed("refresh", lambda: client.refresh(app, rotating["refresh_token"]))
        if answer is not None and answer.status == 200:
            rotating.update(answer.json())

    others = [(what, calls[what]) for what in calls if what not in ("/mcp", "/register")]
    turn = 0

    async def other() -> None:
        nonlocal turn
        what, request = others[turn % len(others)]
        turn += 1
        await load.timed(what, request)

    steps: list[tuple[Callable[[], Awaitable[object]], float]] = [
        *[(lambda: load.timed("/mcp", calls["/mcp"]), 0.01)] * 3,
        (refresh, 0.05),
        (lambda: load.timed("/register", calls["/register"]), 0.1),
        (other, 0.02),
        (lambda: load.timed("readyz", lambda: client.call("GET", "/readyz")), 0.1),
    ]
    workers = [asyncio.create_task(load.repeat(step, pause)) for step, pause in steps]
    return workers, rotating


async def wait_for_readyz(client: OauthdClient, status: int, within: float) -> float:
    started = time.monotonic()
    while (await client.call("GET", "/readyz")).status != status:
        assert time.monotonic() - started < within, f"/readyz did not turn {status}"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def outage_sweep(
    client: OauthdClient, daemon: OauthdProcess, world: World
) -> list[tuple[str, Answer, float]]:
    """Every endpoint that needs the store, once, while the backend is down."""
    app = world.app

    async def form_post(browser: Browser, page: Answer, **fields: str) -> Answer:
        form = page.form()
        url = urljoin(page.url, form.action)
        answer: Answer = await browser.request(
            "POST", url, data={**form.fields, **fields}, headers=HTML
        )
        return answer

    account = world.pages["account"]
    account_revoke = revoke_form(account[1])
    assert account_revoke is not None
    requests: list[tuple[str, Callable[[], Awaitable[Answer]]]] = [
        *api_calls(client, daemon, world).items(),
        ("/token refresh_token", lambda: client.refresh(app, world.kept["refresh_token"])),
        (
            "POST /login",
            lambda: form_post(*world.pages["login"], username=USER, password=PASSWORD),
        ),
        ("POST /consent", lambda: form_post(*world.pages["consent"], decision="allow")),
        (
            "POST /device",
            lambda: form_post(
                *world.pages["device"], user_code=user_code_as_typed(world.device["user_code"])
            ),
        ),
        ("GET /account", lambda: account[0].request("GET", "/account", headers=HTML)),
        (
            "POST /account/revoke",
            lambda: account[0].request(
                "POST",
                urljoin(account[1].url, account_revoke.action),
                data=account_revoke.fields,
                headers=HTML,
            ),
        ),
    ]

    async def timed(
        what: str, request: Callable[[], Awaitable[Answer]]
    ) -> tuple[str, Answer, float]:
        started = time.monotonic()
        answer = await asyncio.wait_for(request(), HANG_LIMIT)
        return what, answer, time.monotonic() - started

    return await asyncio.gather(*(timed(what, request) for what, request in requests))
