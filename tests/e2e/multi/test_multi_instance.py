"""Several oauthd instances on one shared backend behave as one daemon (issue #6, part 3).

Against Redis and PostgreSQL (each a fresh key prefix or schema), three `oauthd serve`
processes share one issuer, one encryption key and one demo upstream; a round-robin
balancer in this process listens on the issuer's port and sends each request to the next
instance. The tests prove:

- the official MCP Python SDK client logs in once and its consecutive requests, pages and
  token calls land on two (then three) different instances, with one Mcp-Session-Id
  working on every instance and a refresh in between;
- a token issued by one instance works on the others, and a revocation on one (`/revoke`,
  the admin socket through `oauthd sessions`, refresh-token reuse) is seen by every
  other on its next request, including the MCP session closed upstream by an instance
  that did not open it (the shared `login.encryption_key`);
- one code or one refresh token redeemed on all instances at once has exactly one winner
  (and what a replay does afterwards), with and without the refresh grace window;
- the device flow started on one instance, polled on the others and approved through the
  pages of yet another gives the tokens to exactly one poll;
- a sign-in at /account on one instance is good on every other, and a sign-out on any
  ends it on all.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
from collections.abc import Awaitable
from functools import partial
from typing import Any

import aiohttp
import anyio
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.multi.multi_clients import (
    DEVICE_GRANT,
    OAuth,
    all_at_once,
    approve_device,
    counted,
    mcp_post,
    mcp_status,
    open_mcp_session,
    rpc,
    upstream_has_session,
    warm,
)
from tests.e2e.multi.multi_stack import Cluster
from tests.support.browser import Answer, Browser
from tests.support.configs import INTEROP_PASSWORD
from tests.support.configs import INTEROP_USER as USER
from tests.support.daemon import OauthdProcess, oauthd_command
from tests.support.forms import parse_forms
from tests.support.sdk import sdk_client
from tests.support.upstream import DemoUpstream, text_of
from tests.support.wait import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")

PER_INSTANCE = 4  # concurrent redemptions sent to each instance


async def statuses(
    http: aiohttp.ClientSession, instances: list[OauthdProcess], access_token: str
) -> list[int]:
    return [await mcp_status(http, i.url, access_token) for i in instances]


def is_invalid_grant(answer: Answer) -> bool:
    return answer.status == 400 and answer.json()["error"] == "invalid_grant"


# -- the SDK client, switching instances --------------------------------------------------------


@pytest.mark.timeout(90)
@pytest.mark.parametrize("size", [2, 3])
async def test_sdk_client_switches_instances_between_calls(cluster: Cluster, size: int) -> None:
    pool = cluster.instances[:size]
    cluster.balance(pool)
    client = sdk_client(cluster.issuer, cluster.resource, "oauthd multi-instance (mcp python sdk)")
    with anyio.fail_after(60):
        async with (
            client.http() as http,
            streamable_http_client(cluster.resource, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            init = await session.initialize()
            assert init.server_info.name == "oauthd-demo"
            tools = await session.list_tools()
            assert {t.name for t in tools.tools} >= {"echo", "add", "whoami", "countdown"}
            assert text_of(await session.call_tool("add", {"a": 2, "b": 3})) == "5"
            me = await session.call_tool("whoami", {})
            assert me.structured_content is not None and me.structured_content["user"] == USER
            assert text_of(await session.call_tool("countdown", {"n": 2, "delay": 0.05})) == "done"

            first = client.storage.tokens
            assert first is not None and first.refresh_token
            client.force_refresh()
            assert text_of(await session.call_tool("add", {"a": 20, "b": 22})) == "42"
            refreshed = client.storage.tokens
            assert refreshed is not None and refreshed.access_token != first.access_token
            for n in range(2 * size):
                assert text_of(await session.call_tool("echo", {"text": f"call {n}"})) == (
                    f"call {n}"
                )

    served = cluster.balancer.served
    assert client.browser.logins == 1  # one login, whatever instance served each page
    token_calls = [s for s in served if s.path == "/token"]
    assert [s.status for s in token_calls] == [200, 200]  # the code, then the refresh
    pages = [s for s in served if s.path in ("/authorize", "/login", "/consent")]
    assert len({s.instance for s in pages}) > 1  # the login went across instances too

    posts = [s for s in served if s.method == "POST" and s.path == "/mcp"]
    assert posts[0].status == 401 and posts[0].session_id is None  # discovery starts here
    in_session = [s for s in posts if s.session_id is not None]
    assert len({s.session_id for s in in_session}) == 1  # one MCP session throughout
    assert {s.status for s in in_session} <= {200, 202}
    assert {s.instance for s in in_session} == {i.name for i in pool}  # it worked on each
    switches = sum(a.instance != b.instance for a, b in itertools.pairwise(in_session))
    assert switches >= len(in_session) // 2, [s.instance for s in in_session]
    after_refresh = [s for s in in_session if s.bearer == refreshed.access_token]
    assert {s.instance for s in after_refresh} == {i.name for i in pool}
    assert {s.instance for s in served} == {i.name for i in pool}
    deletes = [s for s in served if s.method == "DELETE" and s.path == "/mcp"]
    assert [s.status for s in deletes] == [200]  # closed on exit, on whichever instance


# -- one grant, every instance --------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_token_from_one_instance_works_on_all_and_revoke_on_one_ends_it_on_all(
    cluster: Cluster, demo_upstream: DemoUpstream
) -> None:
    a, b, c = cluster.instances[:3]
    async with aiohttp.ClientSession() as http:
        oauth = OAuth(cluster, http)
        await oauth.register(a.url)
        tokens = await oauth.tokens(a.url)
        access = tokens["access_token"]
        session = await open_mcp_session(http, b.url, access)  # bound to the grant on B
        for instance in (a, b, c):
            status, _, body = await mcp_post(
                http, instance.url, access, rpc("tools/list", id=2), session
            )
            assert status == 200 and '"echo"' in body, (instance.name, status, body)
        assert await upstream_has_session(http, demo_upstream.url, session)

        revoked = await oauth.revoke(c.url, tokens["refresh_token"])
        assert revoked.status == 200, revoked
        # Right away, strictly: the read caches are confirmed on Redis, and on PostgreSQL
        # the revoking instance waited REVOKE_GRACE for the others' (store/cache.py).
        assert await statuses(http, [a, b, c], access) == [401, 401, 401]
        refresh = await oauth.token(a.url, oauth.refresh_form(tokens["refresh_token"]))
        assert is_invalid_grant(refresh), refresh
        # C closed the session B opened: it could open the id B sealed (the shared key).
        await eventually(
            lambda: _closed(upstream_has_session(http, demo_upstream.url, session)), 10, 0.05
        )


async def _closed(open_: Awaitable[bool]) -> bool:
    return not await open_


@pytest.mark.timeout(60)
async def test_access_token_revoked_on_one_instance_is_refused_by_all(cluster: Cluster) -> None:
    a, b, c = cluster.instances[:3]
    async with aiohttp.ClientSession() as http:
        oauth = OAuth(cluster, http)
        await oauth.register(b.url)
        tokens = await oauth.tokens(b.url)
        assert await statuses(http, [a, b, c], tokens["access_token"]) == [200, 200, 200]
        assert (await oauth.revoke(a.url, tokens["access_token"])).status == 200
        # Strictly, as above: voiding the access token waits the grace too.
        assert await statuses(http, [a, b, c], tokens["access_token"]) == [401, 401, 401]
        # Only the access token was voided: the grant refreshes on C, used on B.
        fresh = await oauth.token(c.url, oauth.refresh_form(tokens["refresh_token"]))
        assert fresh.status == 200, fresh
        assert await mcp_status(http, b.url, fresh.json()["access_token"]) == 200


def oauthd_cli(*args: str) -> Any:
    """`oauthd ARGS --json` (the admin commands talk to one instance's admin socket). Ids go
    as `--id=ID`: a random id may begin with "-", which argparse takes for an option."""
    done = subprocess.run(
        [*oauthd_command(), *args, "--json"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


@pytest.mark.timeout(60)
async def test_admin_revocation_on_one_instance_is_seen_by_all(
    cluster: Cluster, demo_upstream: DemoUpstream
) -> None:
    a, b, c = cluster.instances[:3]
    async with aiohttp.ClientSession() as http:
        oauth = OAuth(cluster, http)
        await oauth.register(c.url)
        tokens = await oauth.tokens(a.url)
        access = tokens["access_token"]
        session = await open_mcp_session(http, a.url, access)
        grant_id = access.split(".")[0]

        # Listed by B's admin socket (the grant lives in the shared store) ...
        listed = await asyncio.to_thread(
            oauthd_cli, "sessions", "list", "--config", str(b.config), f"--client={oauth.client_id}"
        )
        assert [(s["id"], s["user"], s["mcp_sessions"]) for s in listed] == [(grant_id, USER, 1)]
        # ... revoked through C's ...
        ended = await asyncio.to_thread(
            oauthd_cli, "sessions", "revoke", "--config", str(c.config), f"--id={grant_id}"
        )
        assert [s["id"] for s in ended["revoked"]] == [grant_id]
        # ... and over on every instance at once.
        assert await statuses(http, [a, b, c], access) == [401, 401, 401]
        refresh = await oauth.token(b.url, oauth.refresh_form(tokens["refresh_token"]))
        assert is_invalid_grant(refresh), refresh
        await eventually(
            lambda: _closed(upstream_has_session(http, demo_upstream.url, session)), 10, 0.05
        )
        listed = await asyncio.to_thread(
            oauthd_cli, "sessions", "list", "--config", str(a.config), f"--client={oauth.client_id}"
        )
        assert listed == []


@pytest.mark.timeout(60)
async def test_refresh_token_reuse_on_one_instance_revokes_the_family_on_all(
    cluster: Cluster,
) -> None:
    a, b, c = cluster.instances[:3]
    async with aiohttp.ClientSession() as http:
        oauth = OAuth(cluster, http)
        await oauth.register(a.url)
        first = await oauth.tokens(a.url)
        second = await oauth.token(b.url, oauth.refresh_form(first["refresh_token"]))
        assert second.status == 200, second
        # Using the successor on C ends the grace window for the superseded refresh token.
        assert await mcp_status(http, c.url, second.json()["access_token"]) == 200
        assert await mcp_status(http, a.url, first["access_token"]) == 401  # rotated away

        replay = await oauth.token(a.url, oauth.refresh_form(first["refresh_token"]))
        assert is_invalid_grant(replay), replay
        assert await statuses(http, [a, b, c], second.json()["access_token"]) == [401, 401, 401]
        again = await oauth.token(c.url, oauth.refresh_form(second.json()["refresh_token"]))
        assert is_invalid_grant(again), again


# -- one code, one refresh token, every instance at once ----------------------------------------


async def race(
    http: aiohttp.ClientSession,
    oauth: OAuth,
    instances: list[OauthdProcess],
    form: dict[str, str],
) -> list[Answer]:
    """The same /token request, PER_INSTANCE times to each instance, all at once."""
    bases = [i.url for i in instances]
    await warm(http, bases, PER_INSTANCE)
    calls = [partial(oauth.token, base, form) for base in bases for _ in range(PER_INSTANCE)]
    answers = await all_at_once(calls)
    assert all(a.status == 200 or is_invalid_grant(a) for a in answers), answers
    return answers


def http_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=30)
    )


@pytest.mark.timeout(60)
async def test_one_code_redeemed_on_every_instance_at_once(cluster: Cluster) -> None:
    """Exactly one redemption claims the code and issues a grant (counted over all
    instances). The grant is written before the claim, so each other redemption (same
    client, same PKCE verifier) finds a claimed code whose grant was never used: a retry
    (#11 item 5), answered with a fresh pair of that grant that voids the previous one.
    Whatever the interleaving: every answer 200, one grant, no reuse counted, and exactly
    one pair live afterwards, on every instance."""
    instances = cluster.instances[:3]
    async with http_session() as http:
        oauth = OAuth(cluster, http)
        await oauth.register(instances[0].url)
        code = await oauth.code(instances[1].url)
        kind = "authorization_code"
        issued = partial(counted, http, instances, "oauthd_tokens_issued", grant_type=kind)
        replays = partial(counted, http, instances, "oauthd_reuse_detected", token_type=kind)
        issued_before, replays_before = await issued(), await replays()

        answers = await race(http, oauth, instances, oauth.code_form(code))
        assert [a.status for a in answers] == [200] * len(answers), answers
        pairs = [a.json() for a in answers]
        assert len({p["access_token"].split(".")[0] for p in pairs}) == 1  # one grant
        assert await issued() == issued_before + 1  # one claim: never a double redemption
        assert await replays() == replays_before
        accepted = [
            p
            for n, p in enumerate(pairs)
            if await mcp_status(http, instances[n % 3].url, p["access_token"]) == 200
        ]
        assert len(accepted) == 1, len(pairs)
        assert await statuses(http, instances, accepted[0]["access_token"]) == [200, 200, 200]
        # the grant was used now: one more exchange of the code is a replay and ends it
        replay = await oauth.token(instances[2].url, oauth.code_form(code))
        assert is_invalid_grant(replay), replay
        assert await statuses(http, instances, accepted[0]["access_token"]) == [401, 401, 401]


@pytest.mark.timeout(60)
async def test_a_code_redeemed_on_one_instance_and_replayed_on_another(cluster: Cluster) -> None:
    a, b, c = cluster.instances[:3]
    async with aiohttp.ClientSession() as http:
        oauth = OAuth(cluster, http)
        await oauth.register(a.url)
        code = await oauth.code(b.url)
        first = await oauth.token(a.url, oauth.code_form(code))
        assert first.status == 200, first
        assert await mcp_status(http, b.url, first.json()["access_token"]) == 200
        replay = await oauth.token(c.url, oauth.code_form(code))
        assert is_invalid_grant(replay), replay
        # A replayed code revokes what it issued, wherever that was.
        assert await statuses(http, [a, b, c], first.json()["access_token"]) == [401, 401, 401]
        refresh = await oauth.token(b.url, oauth.refresh_form(first.json()["refresh_token"]))
        assert is_invalid_grant(refresh), refresh


@pytest.mark.timeout(60)
async def test_one_refresh_token_on_every_instance_at_once_without_grace(
    cluster: Cluster, no_grace_pair: list[OauthdProcess]
) -> None:
    """refresh_grace = "0s": exactly one rotation wins (one counted, over the instances);
    every other use is reuse, which revokes the family, so the winner's pair dies with it,
    on every instance."""
    pair = no_grace_pair
    async with http_session() as http:
        oauth = OAuth(cluster, http)
        await oauth.register(pair[0].url)
        tokens = await oauth.tokens(pair[1].url)
        rotations = await counted(http, pair, "oauthd_tokens_refreshed")
        answers = await race(http, oauth, pair, oauth.refresh_form(tokens["refresh_token"]))
        winners = [a for a in answers if a.status == 200]
        assert len(winners) == 1, answers
        assert sum(map(is_invalid_grant, answers)) == len(answers) - 1
        assert await counted(http, pair, "oauthd_tokens_refreshed") == rotations + 1
        winner = winners[0].json()
        everyone = cluster.instances  # the default-grace ones too
        assert set(await statuses(http, everyone, winner["access_token"])) == {401}
        again = await oauth.token(pair[0].url, oauth.refresh_form(winner["refresh_token"]))
        assert is_invalid_grant(again), again


@pytest.mark.timeout(60)
async def test_one_refresh_token_on_every_instance_at_once_with_grace(cluster: Cluster) -> None:
    """The default grace window: a concurrent use of the just-rotated refresh token is a
    retry and gets a fresh pair that voids the previous one. Whatever the interleaving,
    exactly one pair is live afterwards: one access token accepted, one refresh token
    active (and it works), on every instance."""
    instances = cluster.instances[:3]
    async with http_session() as http:
        oauth = OAuth(cluster, http)
        await oauth.register(instances[0].url)
        tokens = await oauth.tokens(instances[2].url)
        answers = await race(http, oauth, instances, oauth.refresh_form(tokens["refresh_token"]))
        issued = [a.json() for a in answers if a.status == 200]
        assert issued, answers

        accepted = []
        for n, pair in enumerate(issued):
            status = await mcp_status(http, instances[n % 3].url, pair["access_token"])
            assert status in (200, 401)
            if status == 200:
                accepted.append(pair)
        assert len(accepted) == 1, [a.status for a in answers]
        live = [
            pair["refresh_token"]
            for n, pair in enumerate(issued)
            if (await oauth.introspect(instances[n % 3].url, pair["refresh_token"]))["active"]
        ]
        assert live == [accepted[0]["refresh_token"]]
        assert await statuses(http, instances, accepted[0]["access_token"]) == [200, 200, 200]
        following = await oauth.token(instances[1].url, oauth.refresh_form(live[0]))
        assert following.status == 200, following


# -- the device flow ----------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_device_flow_polled_and_approved_across_instances(cluster: Cluster) -> None:
    a, b, c = cluster.instances[:3]
    async with http_session() as http:
        oauth = OAuth(cluster, http)
        await oauth.register(c.url, "authorization_code", "refresh_token", DEVICE_GRANT)
        started = await oauth.post(a.url, "/device_authorization", {"client_id": oauth.client_id})
        assert started.status == 200, started
        user_code = started.json()["user_code"]
        assert started.json()["verification_uri"] == f"{cluster.issuer}/device"
        poll = {"grant_type": DEVICE_GRANT, "device_code": started.json()["device_code"]}
        poll["client_id"] = oauth.client_id

        # B's poll is remembered for C: polling again at once, anywhere, is too soon.
        early = [await oauth.token(base, poll) for base in (b.url, c.url, b.url, c.url)]
        assert [(x.status, x.json()["error"]) for x in early] == [
            (400, "authorization_pending"),
            *[(400, "slow_down")] * 3,
        ], early

        cluster.balance([a, b, c])  # the pages, each on the next instance
        done = await approve_device(cluster.issuer, user_code)
        assert len({s.instance for s in cluster.balancer.served}) == 3
        assert "Device connected" in done

        issued = await counted(http, [a, b, c], "oauthd_tokens_issued", grant_type=DEVICE_GRANT)
        answers = await race(http, oauth, [a, b, c], poll)
        winners = [x for x in answers if x.status == 200]
        assert len(winners) == 1, answers
        assert (
            await counted(http, [a, b, c], "oauthd_tokens_issued", grant_type=DEVICE_GRANT)
            == issued + 1
        )
        access = winners[0].json()["access_token"]
        assert await statuses(http, [a, b, c], access) == [200, 200, 200]
        info = await oauth.introspect(b.url, access)
        assert info["active"] and info["sub"] == USER and info["client_id"] == oauth.client_id
        late = await oauth.token(c.url, poll)
        assert is_invalid_grant(late), late


# -- the /account page's sessions ---------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_an_account_session_works_on_every_instance_and_sign_out_ends_it_on_all(
    cluster: Cluster,
) -> None:
    """The /account sign-in is a record in the shared backend: made on one instance, it is
    good on the others; signed out on another, every copy of the cookie is ended on all."""
    a, b, c = cluster.instances[:3]
    browser = Browser(a.url, origin=cluster.issuer)
    copy = Browser(b.url, origin=cluster.issuer)
    try:
        login = await browser.go("GET", "/account")
        page = await browser.submit(login, username=USER, password=INTEROP_PASSWORD)
        assert "Connected apps" in page.text, page.text
        copy.jar.update_cookies({m.key: m.value for m in browser.jar})
        for instance in (b, c):
            browser.base = instance.url
            page = await browser.go("GET", "/account")
            assert "Connected apps" in page.text and f"<strong>{USER}</strong>" in page.text
        (logout,) = [f for f in parse_forms(page.text) if f.action == "/account/logout"]
        headers = {"Origin": cluster.issuer}
        out = await browser.go("POST", "/account/logout", data=logout.fields, headers=headers)
        assert out.form().action == "/account/login"  # signed out on c
        for instance in (a, b, c):
            copy.base = instance.url
            assert (await copy.go("GET", "/account")).form().action == "/account/login"
    finally:
        await browser.close()
        await copy.close()
