"""The official MCP TypeScript SDK client (`@modelcontextprotocol/sdk`, pinned in
package.json) logs in through a live oauthd and keeps working across a mid-session refresh.

`ts_client.mjs` does the client side (DCR, code + PKCE through oauthd's real login and
consent forms, initialize, tools, a refresh forced by a stale access token, a replay of the
superseded refresh token) and prints one JSON line; the assertions are here."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.live_stack import HERE, ensure_node_packages, running_stack
from tests.support.configs import INTEROP_PASSWORD as PASSWORD
from tests.support.configs import INTEROP_USER as USER
from tests.support.daemon import OauthdProcess
from tests.support.upstream import DemoUpstream

SCRIPT = HERE / "ts_client.mjs"
RUN_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def node() -> Path:
    return ensure_node_packages()


@pytest.fixture(scope="module")
def ts_stack(
    node: Path, tmp_path_factory: pytest.TempPathFactory, demo_upstream: DemoUpstream
) -> Iterator[OauthdProcess]:
    with running_stack(tmp_path_factory.mktemp("ts-sdk"), demo_upstream.url) as oauthd:
        yield oauthd


def run_client(node: Path, oauthd: OauthdProcess, auth_method: str) -> dict[str, Any]:
    argv = [str(node), str(SCRIPT), "--url", oauthd.mcp_url]
    argv += ["--username", USER, "--password", PASSWORD, "--auth-method", auth_method]
    proc = subprocess.run(
        argv, cwd=HERE, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    where = (
        f"exit {proc.returncode}\nstdout:\n{proc.stdout[-6000:]}\nstderr:\n{proc.stderr[-3000:]}"
    )
    if not lines:
        pytest.fail(f"ts_client.mjs printed no JSON ({where})\noauthd:\n{oauthd.log()[-6000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    if proc.returncode != 0 or not result.get("ok"):
        pytest.fail(f"ts_client.mjs failed ({where})\noauthd:\n{oauthd.log()[-6000:]}")
    return result


@pytest.mark.parametrize("auth_method", ["none", "client_secret_basic", "client_secret_post"])
def test_typescript_sdk_login_tools_and_mid_session_refresh(
    node: Path, ts_stack: OauthdProcess, auth_method: str
) -> None:
    r = run_client(node, ts_stack, auth_method)
    issuer = ts_stack.issuer

    # DCR once, as the client asked: public (`none`) or confidential (with a secret).
    assert r["registrations"] == [201]
    assert r["registered_auth_method"] == auth_method
    assert r["has_client_secret"] is (auth_method != "none")

    # One login through the real pages; the redirect carries state and RFC 9207 iss.
    [login] = r["authorizations"]
    assert login["steps"] == [
        "GET /authorize -> 302",
        "GET /login -> 200",
        "POST /login -> 303",
        "GET /consent -> 200",
        "POST /consent -> 303",
    ]
    assert login["error"] is None and login["state_ok"] is True
    assert login["iss"] == issuer
    assert login["resource"] == f"{issuer}/mcp"
    assert login["code_challenge_method"] == "S256"
    assert r["invalidated"] == []  # the SDK never dropped its credentials

    # The MCP session through /mcp: tools, a streamed tool with progress, identity headers.
    assert r["server"]["name"] == "oauthd-demo"
    assert {"add", "countdown", "echo", "whoami"} <= set(r["tools"])
    assert r["add"] == "5" and r["add_structured"] == {"result": 5}
    assert r["countdown"] == "done"
    assert r["progress"] == [[1, 3], [2, 3], [3, 3]]
    me = {
        "user": USER,
        "client_id": r["client_id"],
        "scopes": "mcp",
        "principal": "user",
        "authorization_received": False,  # oauthd never forwards the client's token
    }
    assert r["whoami_before"] == me

    # Mid-session refresh: stale token -> 401 -> refresh grant -> same request again, on
    # the same Mcp-Session-Id, with the new token; no second login.
    refresh = r["refresh"]
    assert refresh["saved"] == 1 and refresh["access_changed"] and refresh["refresh_rotated"]
    assert refresh["stale_token_used"]
    session = r["session_before"]
    assert session and r["session_after"] == session
    calls = [(q["path"], q["status"], q["bearer"], q.get("session")) for q in refresh["requests"]]
    assert calls[0] == ("/mcp", 401, "stale", session)
    assert ("/token", 200, None, None) in calls
    mcp_after = [c for c in calls[calls.index(("/token", 200, None, None)) :] if c[0] == "/mcp"]
    assert mcp_after == [("/mcp", 200, "current", session)] * 2
    assert [q["grant_type"] for q in refresh["requests"] if q["path"] == "/token"] == [
        "refresh_token"
    ]
    assert r["after_refresh"] == "42"
    assert r["whoami_after"] == me
    assert r["token_grants"] == [["authorization_code", 200], ["refresh_token", 200]]
    assert all(t["expires_in"] > 0 and t["has_refresh"] for t in r["tokens_saved"])

    # The superseded refresh token, replayed after its successor was used: 400
    # invalid_grant, and the whole grant is revoked (RFC 9700 s4.14.2).
    assert r["replay"] == {"status": 400, "error": "invalid_grant"}
    assert r["after_replay_status"] == 401
    assert 'error="invalid_token"' in r["after_replay_www_authenticate"]
