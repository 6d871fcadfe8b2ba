"""/forward-auth with several resources and with policy: the path after /forward-auth
names the resource; rules are decided from `Mcp-Method`/`Mcp-Name` on 2026-07-28 and
only the resource's scopes for older clients."""

from __future__ import annotations

import base64

import pytest

from oauthd.http.keys import PROXY
from oauthd.proxy.answers import ProxyRefusal
from oauthd.proxy.forward_auth import ForwardAuth
from tests.support.configs import resource, rule
from tests.support.proxy_app import Oauthd, StartOauthd
from tests.support.upstream import FakeUpstream

FILES = "/files/mcp"
SCOPES = ("mcp", "files", "files:write")
RULES = (
    rule("no-delete", method="tools/call", name=("delete_*",), effect="deny", message="never"),
    rule("writes", method="tools/call", name=("write_*",), require_scopes=("files:write",)),
)


@pytest.fixture
async def two(start_oauthd: StartOauthd, upstream: FakeUpstream) -> Oauthd:
    return await start_oauthd(
        oauth={"scopes": SCOPES},
        resources=[
            resource("/mcp", upstream.url, scopes=SCOPES),
            resource(
                FILES,
                upstream.url,
                scopes=SCOPES,
                required_scopes=("files",),
                rules=RULES,
                user_header="X-Files-User",
            ),
        ],
    )


def asking(name: str | None, version: str = "2026-07-28", **extra: str) -> dict[str, str]:
    headers = {"MCP-Protocol-Version": version, "Mcp-Method": "tools/call", **extra}
    if name is not None:
        headers["Mcp-Name"] = name
    return headers


async def test_the_path_names_the_resource(two: Oauthd) -> None:
    files = await two.grant(scopes=("files",), resource=two.resource_uri(FILES))
    for tail in ("", "/", "/x"):
        path = f"/forward-auth/files/mcp{tail}"
        answer = await two.call("GET", path, headers=files.bearer())
        assert answer.status == 200, path
        assert answer.headers["X-Files-User"] == "alice"
    default = await two.call("GET", "/forward-auth", headers=files.bearer())
    assert default.status == 401  # the default resource is /mcp: not this token's
    assert (await two.call("GET", "/forward-auth/mcp", headers=files.bearer())).status == 401
    stray = await two.call("GET", "/forward-auth/elsewhere", headers=files.bearer())
    assert stray.status == 404


async def test_policy_from_the_mirrored_headers(two: Oauthd) -> None:
    files = await two.grant(scopes=("files",), resource=two.resource_uri(FILES))
    path = "/forward-auth/files/mcp"
    denied = await two.call("POST", path, headers=files.bearer(**asking("delete_all")))
    assert denied.status == 403 and denied.json()["error"] == {"code": -32003, "message": "never"}
    step_up = await two.call("POST", path, headers=files.bearer(**asking("write_x")))
    assert step_up.status == 403
    assert step_up.headers["WWW-Authenticate"].startswith(
        'Bearer error="insufficient_scope", scope="files files:write"'
    )
    encoded = "=?base64?" + base64.b64encode("delete_é".encode()).decode() + "?="
    assert (await two.call("POST", path, headers=files.bearer(**asking(encoded)))).status == 403
    assert (await two.call("POST", path, headers=files.bearer(**asking("read_x")))).status == 200
    missing = await two.call("POST", path, headers=files.bearer(**asking(None)))
    assert missing.status == 400 and missing.json()["error"]["code"] == -32020
    no_method = {"MCP-Protocol-Version": "2026-07-28"}  # a 2026-07-28 call names its method
    unnamed = await two.call("POST", path, headers=files.bearer(**no_method))
    assert unnamed.status == 400 and unnamed.json()["error"]["code"] == -32020
    stream = await two.call("GET", path, headers=files.bearer(**no_method))
    assert stream.status == 200  # a GET stream names no method


async def test_a_path_a_front_proxy_may_read_differently_names_no_resource(two: Oauthd) -> None:
    """`/forward-auth/mcp/../files/mcp` must not pick `/mcp` (its tokens) for a request
    that a front proxy, normalising, routed to `/files/mcp`; nor `//` or `%2F`."""
    grant = await two.grant()
    for path in ("/forward-auth/files//mcp", "/forward-auth/files%2Fmcp"):
        answer = await two.call("GET", path, headers=grant.bearer())
        assert answer.status == 404, (path, answer.status)
    # Dot segments (this test's client would normalise them away): asked directly.
    forward_auth = ForwardAuth(two.app[PROXY].mounts)
    for tail in ("mcp/../files/mcp", "mcp/./x", "files/mcp/.."):
        with pytest.raises(ProxyRefusal) as refused:
            forward_auth.mount_for(tail, f"/forward-auth/{tail}")
        assert refused.value.response.status == 404
    assert forward_auth.mount_for("files/mcp/x", "/forward-auth/files/mcp/x").uri.endswith(FILES)


async def test_older_clients_are_decided_on_scopes_only(two: Oauthd) -> None:
    files = await two.grant(scopes=("files",), resource=two.resource_uri(FILES))
    older = asking("delete_all", version="2025-11-25")
    answer = await two.call("POST", "/forward-auth/files/mcp", headers=files.bearer(**older))
    assert answer.status == 200
