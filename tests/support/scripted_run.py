"""One scripted run through oauthd over real HTTP, shared by `test_metrics.py` and
`test_audit_log.py`: oauthd on a `TestServer` (file-backed state in the test's temp dir)
in front of a small aiohttp MCP upstream, and the steps below, each of which the metrics
count and the audit log records.

1. register a public client (DCR);
2. alice: a wrong password (one browser), then the right one (another), consent allow,
   code -> tokens A;
3. refresh A -> B; a proxied /mcp call with B's access token (200 from the upstream);
4. replay A's refresh token -> reuse detected (the grant ends); /mcp with A's access
   token -> 401;
5. alice again (consent remembered, no page) -> tokens C; the upstream is stopped and
   /mcp with C's access token -> 502 (connect error); C's refresh token revoked;
6. bob: signs in and denies;
7. alice again -> a code, exchanged, then replayed -> reuse detected (code);
8. a snapshot save.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oauthd.store import FileStore
from tests.support.app import Running
from tests.support.configs import OTHER_PASSWORD, OTHER_USER, make_config
from tests.support.http_client import Pkce, client_auth
from tests.support.ports import free_port
from tests.support.upstream import FakeUpstream, empty_result

REDIRECT = "http://127.0.0.1:43123/callback"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@dataclass
class ScriptedApp(Running):
    """oauthd in process in front of an upstream that answers every call (`stop_upstream`
    makes /mcp answer 502)."""

    upstream: FakeUpstream = field(default_factory=lambda: FakeUpstream(empty_result))
    upstream_stopped: bool = False

    async def stop_upstream(self) -> None:
        if not self.upstream_stopped:
            self.upstream_stopped = True
            await self.upstream.close()

    async def close(self) -> None:
        await super().close()
        await self.stop_upstream()


async def start(directory: Path, **sections: Any) -> ScriptedApp:
    """oauthd on 127.0.0.1 in front of its upstream; `sections` change config keys."""
    upstream = FakeUpstream(empty_result)
    await upstream.start()
    config = make_config(directory, free_port(), upstream_url=upstream.url, **sections)
    run = ScriptedApp(config, upstream=upstream)
    await run.start()
    return run


@dataclass
class Script:
    """What the run handed out and saw."""

    client_id: str = ""
    tokens: list[dict[str, Any]] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)


async def scripted_run(run: ScriptedApp) -> Script:
    script = Script()
    api = run.client
    public = await api.register_public(client_name="Scripted App")
    script.client_id = public["client_id"]

    wrong = api.browser()
    page = await wrong.authorize(api.authorize_params(public["client_id"], REDIRECT, Pkce.new()))
    assert (await wrong.sign_in(page, password="not the password")).status == 401
    a = await api.tokens(public, REDIRECT)
    refreshed = await api.refresh(public, a["refresh_token"])
    assert refreshed.status == 200, refreshed.text
    b = refreshed.json()
    script.statuses["mcp_ok"] = (await api.call_mcp(b["access_token"])).status
    replay = await api.refresh(public, a["refresh_token"])
    assert replay.status == 400 and "already used" in replay.text, replay.text
    script.statuses["mcp_revoked"] = (await api.call_mcp(a["access_token"])).status

    c = await api.tokens(public, REDIRECT, consent=False)  # the consent is remembered
    await run.stop_upstream()
    script.statuses["mcp_down"] = (await api.call_mcp(c["access_token"])).status
    revoke = {"token": c["refresh_token"], **client_auth(public)}
    script.statuses["revoke"] = (await api.call("POST", "/revoke", data=revoke)).status

    bob = api.browser()
    page = await bob.authorize(api.authorize_params(public["client_id"], REDIRECT, Pkce.new()))
    consent = await bob.sign_in(page, OTHER_USER, OTHER_PASSWORD)
    denied = await bob.decide(consent, "deny")
    assert denied.redirect_query()["error"] == "access_denied"

    code, pkce = await api.authorization_code(public, REDIRECT, consent=False)
    exchanged = await api.exchange(public, code, pkce, REDIRECT)
    assert exchanged.status == 200, exchanged.text
    d = exchanged.json()
    await api.call_mcp(d["access_token"])  # used: a second exchange is a replay, not a retry
    replayed = await api.exchange(public, code, pkce, REDIRECT)
    assert replayed.status == 400 and "already used" in replayed.text, replayed.text

    store = run.store
    assert isinstance(store, FileStore)
    assert await store.engine.save()
    script.tokens = [a, b, c, d]
    return script
