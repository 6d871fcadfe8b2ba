"""The daemon on a shared backend (redis, postgres) that goes away and comes back (a private
server, tests/e2e/outage_servers.py), under load: `oauthd serve` in a subprocess, a stub
MCP upstream in the test's own event loop, a bounded load of concurrent clients that
records every answer (what, when, how long, status). Only the usual answers and 503 with
Retry-After (never a 500, never a hang past the timeout), /readyz 503 while the backend
is down and 200 again soon after it returns, every endpoint that needs the store answers
503 during the outage, and the same tokens work afterwards (no login lost)."""

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
from oauthd.http import errors
from oauthd.store.base import PROBE_EVERY
from tests.e2e.outage_servers import RECOVER_WITHIN, TIMEOUT, Backend
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
from tests.support.upstream import FakeUpstream, empty_result
from tests.support.wait import eventually

HANG_LIMIT = 10.0  # a request not answered by then is recorded as a hang (status 0)
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}  # what a browser asks for
# Beyond the timeout, for a request through the daemon under load. Generous on purpose: a
# loaded 2-core CI machine stalls the daemon and the load's own client for a second or
# more now and then. What this catches, a request waiting on the dead backend instead of
# giving up at storage.timeout, runs to HANG_LIMIT (10 s) and past this limit (4 s).
DAEMON_MARGIN = 3.0
OUTAGE = 3.0  # seconds the backend stays down
AFTER_READY_FAILURES = 3  # 503s allowed for requests started after /readyz said 200 again


def outage_daemon(
    directory: Path, storage: dict[str, TomlValue], upstream_url: str
) -> OauthdProcess:
    """`oauthd serve` on a shared backend (`storage`: the [storage] keys), with an
    introspection client (its secret in `introspection.secret`) and an admin socket."""
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
    introspection_secret = (daemon.directory / "introspection.secret").read_text().strip()
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
            headers=basic_auth(INTROSPECTION_ID, introspection_secret),
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
    async def answers() -> bool:
        return (await client.call("GET", "/readyz")).status == status

    return await eventually(answers, within, 0.05)


async def outage_sweep(
    client: OauthdClient, daemon: OauthdProcess, world: World
) -> list[tuple[str, Answer, float]]:
    """Every endpoint that needs the store, once, while the backend is down."""
    app, pages = world.app, world.pages
    account, account_page = pages["account"]
    account_revoke = revoke_form(account_page)
    assert account_revoke is not None
    user_code = user_code_as_typed(world.device["user_code"])
    requests: list[tuple[str, Callable[[], Awaitable[Answer]]]] = [
        *api_calls(client, daemon, world).items(),
        ("/token refresh_token", lambda: client.refresh(app, world.kept["refresh_token"])),
        ("POST /login", lambda: pages["login"][0].sign_in(pages["login"][1])),
        ("POST /consent", lambda: pages["consent"][0].decide(pages["consent"][1])),
        (
            "POST /device",
            lambda: pages["device"][0].submit(pages["device"][1], user_code=user_code),
        ),
        ("GET /account", lambda: account.request("GET", "/account", headers=HTML)),
        (
            "POST /account/revoke",
            lambda: account.request(
                "POST",
                urljoin(account_page.url, account_revoke.action),
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


# -- the test ------------------------------------------------------------------------------


def check_unavailable(what: str, answer: Answer, took: float) -> None:
    """503, Retry-After, fast; a page for a browser, a JSON-RPC error from /mcp, OAuth-style
    JSON for the rest."""
    assert answer.status == 503, (what, answer.status, answer.text[:300])
    assert int(answer.headers["Retry-After"]) >= 1, what
    assert took < TIMEOUT + DAEMON_MARGIN, f"{what} took {took:.2f} s"
    if what.startswith(("GET ", "POST ")):
        assert answer.is_page and "Temporarily unavailable" in answer.text, (what, answer.text)
    elif what == "/mcp":  # the proxy answers in JSON-RPC, like its other errors
        assert answer.json()["error"]["code"] == -32000, (what, answer.text)
    else:
        assert answer.json()["error"] == "temporarily_unavailable", (what, answer.text)


def retry_after_ok(value: str | None) -> bool:
    return value is not None and value.isdigit() and int(value) >= 1


async def test_the_daemon_under_load_rides_out_a_backend_crash(
    backend: Backend, tmp_path: Path
) -> None:
    upstream = FakeUpstream(empty_result)
    await upstream.start()
    daemon = outage_daemon(tmp_path, backend.storage(), upstream.url)
    client: OauthdClient | None = None
    workers: list[asyncio.Task[None]] = []
    load = Load()
    try:
        if backend.name == "postgres":  # migrated by the fixture: `oauthd migrate` is a no-op
            done = await daemon.command("migrate")
            assert done.code == 0 and "up to date" in done.out + done.err, done
        await daemon.start()
        client = OauthdClient(daemon.url, daemon.url)
        world = await prepare(client)
        registered_before = (await client.register_public(client_name="Before"))["client_id"]

        workers, rotating = start_load(load, client, daemon, world)
        await asyncio.sleep(1.5)

        down_at = time.monotonic()
        await backend.crash()
        readyz_down = await wait_for_readyz(client, 503, TIMEOUT + 3)
        down_seen_at = time.monotonic()
        sweep = await outage_sweep(client, daemon, world)
        # down for OUTAGE seconds, and long enough after /readyz turned 503 for the load's
        # /readyz calls (up to TIMEOUT each) to show that it stays 503
        back_at = max(down_at + OUTAGE, down_seen_at + TIMEOUT + 1.5)
        await asyncio.sleep(max(0.0, back_at - time.monotonic()))
        restarting_at = time.monotonic()
        await backend.restart()
        up_at = time.monotonic()
        readyz_up = await wait_for_readyz(client, 200, RECOVER_WITHIN)
        ready_at = time.monotonic()
        await asyncio.sleep(2.5)
        load.stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), HANG_LIMIT + 5)

        for what, answer, took in sweep:
            check_unavailable(what, answer, took)

        calls = load.calls
        unexpected = [
            c
            for c in calls
            if c.status not in EXPECTED[c.what]
            and not (c.status == 503 and retry_after_ok(c.retry_after))
        ]
        assert unexpected == [], unexpected[:10]
        slow = [c for c in calls if c.took > TIMEOUT + DAEMON_MARGIN]
        assert slow == [], slow[:10]
        failed = [c for c in calls if c.status == 503]
        before = [c for c in failed if c.started < down_at - 0.5]
        during = [c for c in failed if down_at - 0.5 <= c.started < ready_at]
        after = [c for c in failed if c.started >= ready_at]
        assert before == [], before[:5]
        assert len(after) <= AFTER_READY_FAILURES, after
        readyz = [c for c in calls if c.what == "readyz"]
        # 503 within a ping's timeout and the probe's interval after the crash, and from
        # then on until the restart
        detected = PROBE_EVERY + TIMEOUT + DAEMON_MARGIN
        assert readyz_down < detected, f"/readyz turned 503 after {readyz_down:.2f} s"
        surely_down = [
            c for c in readyz if down_seen_at <= c.started and c.started + c.took < restarting_at
        ]
        assert surely_down and all(c.status == 503 for c in surely_down), surely_down
        print(
            f"\n{backend.name}: {len(calls)} calls, {len(during)} answered 503 during the outage"
            f" ({OUTAGE:g} s + restart {up_at - restarting_at:.2f} s), {len(after)} after"
            f" /readyz was 200 again; slowest {max(c.took for c in calls):.2f} s;"
            f" /readyz 503 {readyz_down:.2f} s after the crash, 200 {readyz_up:.2f} s after"
            f" the server was back; sweep slowest {max(t for _, _, t in sweep):.2f} s"
        )

        # Nothing was lost: the same tokens work, clients and flows started before are there.
        assert (await client.call_mcp(world.mcp["access_token"])).status == 200
        assert (await client.call_mcp(world.kept["access_token"])).status == 200
        refreshed = await client.refresh(world.app, world.kept["refresh_token"])
        assert refreshed.status == 200, refreshed.text
        assert (await client.call_mcp(refreshed.json()["access_token"])).status == 200
        rotated = await client.refresh(world.app, rotating["refresh_token"])
        assert rotated.status == 200, rotated.text
        known = await client.call(  # a client registered before: on to its login page
            "GET",
            "/authorize",
            params=client.authorize_params(registered_before, REDIRECT, Pkce.new()),
        )
        assert known.status == 302 and "/login" in (known.location or ""), known.text
        browser, page = world.pages["login"]
        login = await browser.submit(page, username=USER, password=PASSWORD)
        assert login.status == 303 and "code" in login.redirect_query(), login.text[:300]

        log = daemon.log()
        assert "Traceback" not in log and '"http.error"' not in log, log[-3000:]
        # Hundreds of requests refused, a line every 5 s at most (errors.RefusalLog): one at
        # the first refusal, then at most one per 5 s of the outage, plus one for those
        # refused just after /readyz turned 200 again. The outage lasts longer than
        # OUTAGE when the machine is slow, so the bound follows its measured length; one
        # line per request would still be far above it.
        every = errors.RefusalLog().every  # the daemon's default
        most = int((ready_at - down_at) / every) + 2
        lines = log.count('"event":"http.unavailable"')
        assert 1 <= lines <= most, (lines, most, log[-3000:])
        assert await daemon.stop() == 0, daemon.log()[-3000:]
    finally:
        load.stop.set()
        for worker in workers:
            worker.cancel()
        if client is not None:
            await client.close()
        await daemon.stop()
        await upstream.close()
