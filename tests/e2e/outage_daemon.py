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
    write_config,
    write_secret,
)
from tests.support.daemon import OauthdProcess
from tests.support.forms import Form, parse_forms
from tests.support.http_client import (
    OauthdClient,
    Pkce,
    basic_auth,
    client_auth,
    user_code_as_typed,
)
from tests.support.ports import free_port

START_WITHIN = 20.0
HANG_LIMIT = 10.0  # a request not answered by then is recorded as a hang (status 0)
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}  # what a browser asks for


def outage_daemon(
    directory: Path, storage: dict[str, TomlValue], upstream_url: str
) -> OauthdProcess:
    """`oauthd serve` on a shared backend (`storage`: the [storage] keys), with an
    introspection client (`introspection_secret`) and an admin socket."""
    write_secret(directory / "introspection.secret", crypto.new_secret() + "\n")
    write_secret(directory / "oauthd.key", secrets.token_hex(32) + "\n")
    port = free_port()
    sections: dict[str, dict[str, TomlValue]] = {
        "upstream": {"url": upstream_url},
        "storage": {"path": str(directory / "state"), **storage},
        # A refresh answered 503 may have rotated: its retry must not fail.
        "tokens": {"refresh_grace": "60s"},
        "oauth": {"registrations_per_minute": 100000},
        "introspection": {
            "client_id": INTROSPECTION_ID,
            "client_secret": f"file:{directory / 'introspection.secret'}",
        },
        "login": {"encryption_key": f"file:{directory / 'oauthd.key'}"},
        "admin": {"socket": str(directory / "admin.sock")},
    }
    users = [(USER, PASSWORD_HASH)]
    config = write_config(directory / "oauthd.toml", port, sections, users=users)
    return OauthdProcess(directory, config, port)


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
    "mcp": {200},
    "refresh": {200},
    "register": {201},
    "token with a wrong code": {400},
    "introspect": {200},
    "revoke": {200},
    "device_authorization": {200},
    "authorize (page)": {302},  # to the login page
    "device poll": {400},
    "readyz": {200},
}


@dataclass
class World:
    """What the clients hold before the outage."""

    app: dict[str, Any]
    mcp: dict[str, Any]  # tokens whose access token the load uses at /mcp
    rotating: dict[str, Any]  # tokens the load refreshes again and again
    kept: dict[str, Any]  # tokens nobody touches until the backend is back
    device: dict[str, Any]
    login_page: Answer  # a browser at the login form of a started authorization
    login_browser: Browser
    consent_page: Answer  # a signed-in browser at a consent form
    consent_browser: Browser
    device_page: Answer
    device_browser: Browser
    account_page: Answer  # a browser signed in at /account, with a revoke form
    account_browser: Browser


async def prepare(client: OauthdClient) -> World:
    app = await client.register_public(
        client_name="Outage test",
        grant_types=["authorization_code", "refresh_token", DEVICE_GRANT],
    )
    mcp = await client.tokens(app, REDIRECT)
    rotating = await client.tokens(app, REDIRECT, consent=False)
    kept = await client.tokens(app, REDIRECT, consent=False)
    device = await client.start_device(app)

    login_browser = client.browser()
    params = client.authorize_params(app["client_id"], REDIRECT, Pkce.new())
    login_page = await login_browser.authorize(params)
    assert login_page.status == 200 and "username" in login_page.form().fields

    other = await client.register_public(client_name="Outage consent")
    consent_browser = client.browser()
    page = await consent_browser.authorize(
        client.authorize_params(other["client_id"], REDIRECT, Pkce.new())
    )
    consent_page = await consent_browser.sign_in(page)
    assert consent_page.status == 200 and "decision" in dict(consent_page.form().buttons)

    device_browser = client.browser()
    device_page = await device_browser.go("GET", "/device")
    assert device_page.status == 200 and "user_code" in device_page.form().fields

    account_browser = client.browser()
    sign_in = await account_browser.go("GET", "/account")
    account_page = await account_browser.submit(sign_in, username=USER, password=PASSWORD)
    assert account_page.status == 200 and revoke_form(account_page), account_page.text
    return World(
        app,
        mcp,
        rotating,
        kept,
        device,
        login_page,
        login_browser,
        consent_page,
        consent_browser,
        device_page,
        device_browser,
        account_page,
        account_browser,
    )


def revoke_form(page: Answer) -> Form | None:
    return next((f for f in parse_forms(page.text) if f.action.endswith("/account/revoke")), None)


def start_load(
    load: Load, client: OauthdClient, daemon: OauthdProcess, world: World
) -> tuple[list[asyncio.Task[None]], dict[str, Any]]:
    """The workers: /mcp calls, refreshes, registrations and the other endpoints in turn,
    and /readyz, each in a loop with a short pause (a bounded load); and the token pair
    that the refreshes keep current."""
    app, access = world.app, world.mcp["access_token"]
    rotating = dict(world.rotating)

    async def refresh() -> None:
        answer = await load.timed("refresh", lambda: client.refresh(app, rotating["refresh_token"]))
        if answer is not None and answer.status == 200:
            rotating.update(answer.json())

    others: list[tuple[str, Callable[[], Awaitable[Answer]]]] = [
        (
            "token with a wrong code",
            lambda: client.token(
                grant_type="authorization_code",
                code="no.such-code",
                code_verifier="v" * 43,
                redirect_uri=REDIRECT,
                **client_auth(app),
            ),
        ),
        (
            "introspect",
            lambda: client.call(
                "POST",
                "/introspect",
                data={"token": access},
                headers=basic_auth(INTROSPECTION_ID, introspection_secret(daemon)),
            ),
        ),
        (
            "revoke",
            lambda: client.call("POST", "/revoke", data={"token": "no.such", **client_auth(app)}),
        ),
        (
            "device_authorization",
            lambda: client.call("POST", "/device_authorization", data=client_auth(app)),
        ),
        (
            "authorize (page)",
            lambda: client.call(
                "GET",
                "/authorize",
                params=client.authorize_params(app["client_id"], REDIRECT, Pkce.new()),
                headers=HTML,
            ),
        ),
        ("device poll", lambda: client.poll(app, world.device["device_code"])),
    ]
    turn = 0

    async def other() -> None:
        nonlocal turn
        what, request = others[turn % len(others)]
        turn += 1
        await load.timed(what, request)

    steps: list[tuple[Callable[[], Awaitable[object]], float]] = [
        *[(lambda: load.timed("mcp", lambda: client.call_mcp(access)), 0.01)] * 3,
        (refresh, 0.05),
        (
            lambda: load.timed(
                "register",
                lambda: client.call(
                    "POST",
                    "/register",
                    json={"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"},
                ),
            ),
            0.1,
        ),
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

    account_revoke = revoke_form(world.account_page)
    assert account_revoke is not None
    requests: list[tuple[str, Callable[[], Awaitable[Answer]]]] = [
        ("/mcp", lambda: client.call_mcp(world.mcp["access_token"])),
        (
            "/token authorization_code",
            lambda: client.token(
                grant_type="authorization_code",
                code="no.such-code",
                code_verifier="v" * 43,
                redirect_uri=REDIRECT,
                **client_auth(app),
            ),
        ),
        ("/token refresh_token", lambda: client.refresh(app, world.kept["refresh_token"])),
        ("/token device_code", lambda: client.poll(app, world.device["device_code"])),
        (
            "/register",
            lambda: client.call(
                "POST", "/register", json={"redirect_uris": [REDIRECT], "client_name": "x"}
            ),
        ),
        (
            "/revoke",
            lambda: client.call("POST", "/revoke", data={"token": "a.b", **client_auth(app)}),
        ),
        (
            "/introspect",
            lambda: client.call(
                "POST",
                "/introspect",
                data={"token": world.mcp["access_token"]},
                headers=basic_auth(INTROSPECTION_ID, introspection_secret(daemon)),
            ),
        ),
        (
            "/device_authorization",
            lambda: client.call("POST", "/device_authorization", data=client_auth(app)),
        ),
        (
            "GET /authorize",
            lambda: world.login_browser.request(
                "GET",
                "/authorize",
                params=client.authorize_params(app["client_id"], REDIRECT, Pkce.new()),
                headers=HTML,
            ),
        ),
        (
            "POST /login",
            lambda: form_post(
                world.login_browser, world.login_page, username=USER, password=PASSWORD
            ),
        ),
        (
            "POST /consent",
            lambda: form_post(world.consent_browser, world.consent_page, decision="allow"),
        ),
        (
            "POST /device",
            lambda: form_post(
                world.device_browser,
                world.device_page,
                user_code=user_code_as_typed(world.device["user_code"]),
            ),
        ),
        ("GET /account", lambda: world.account_browser.request("GET", "/account", headers=HTML)),
        (
            "POST /account/revoke",
            lambda: world.account_browser.request(
                "POST",
                urljoin(world.account_page.url, account_revoke.action),
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
