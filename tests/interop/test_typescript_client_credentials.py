"""Machine clients of the official MCP TypeScript SDK (`@modelcontextprotocol/sdk`, pinned
in package.json) against a live oauthd: `ClientCredentialsProvider` (client_secret_basic,
and client_secret_post chosen through its client information) and `PrivateKeyJwtProvider`
(the SDK signs ES256 and RS256 assertions) reach /mcp, list the tools and call one, for
clients made with the real `oauthd clients add` over the live daemon's admin socket.

`ts_client.mjs` (its machine mode) does the client side and prints one JSON line; the
assertions, and what `oauthd sessions list --json` says of the grant, are here."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tests.interop.live_stack import HERE, ensure_node_packages
from tests.support.daemon import OauthdProcess
from tests.support.jwts import CLIENT_ASSERTION_TYPE, Signer

SCRIPT = HERE / "ts_client.mjs"
RUN_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def node() -> Path:
    return ensure_node_packages()


async def add_client(oauthd: OauthdProcess, *args: str) -> dict[str, Any]:
    done = await oauthd.command(
        "clients", "add", "--name", "ts-robot", "--grant", "client_credentials", *args, "--json"
    )
    assert done.code == 0, done.err
    made: dict[str, Any] = json.loads(done.out)
    return made


async def run_client(node: Path, oauthd: OauthdProcess, *args: str) -> dict[str, Any]:
    argv = [str(SCRIPT), "--url", oauthd.mcp_url, "--issuer", oauthd.issuer, *args]
    proc = await asyncio.create_subprocess_exec(
        str(node),
        *argv,
        cwd=HERE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"ts_client.mjs ran over {RUN_TIMEOUT} s\noauthd:\n{oauthd.log()[-6000:]}")
    stdout, stderr = out.decode(), err.decode()
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    where = f"exit {proc.returncode}\nstdout:\n{stdout[-6000:]}\nstderr:\n{stderr[-3000:]}"
    if not lines:
        pytest.fail(f"ts_client.mjs printed no JSON ({where})\noauthd:\n{oauthd.log()[-6000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    if proc.returncode != 0 or not result.get("ok"):
        pytest.fail(f"ts_client.mjs failed ({where})\noauthd:\n{oauthd.log()[-6000:]}")
    return result


def assert_machine_session(r: dict[str, Any], client_id: str, client_auth: list[str]) -> None:
    """The tool results of one client credentials grant, no DCR, no refresh token."""
    assert r["client_id"] == client_id
    assert r["server"]["name"] == "oauthd-demo"
    assert {"add", "countdown", "echo", "whoami"} <= set(r["tools"])
    assert r["add"] == "5"
    assert r["whoami"] == {
        "user": f"client:{client_id}",
        "client_id": client_id,
        "scopes": "mcp",
        "principal": "service",  # the unsigned identity headers name the principal
        "authorization_received": False,
    }
    assert r["registrations"] == 0
    assert r["token_requests"] == [
        {"grant_type": "client_credentials", "client_auth": client_auth, "status": 200}
    ]
    assert r["token"] == {"token_type": "Bearer", "scope": "mcp", "has_refresh": False}
    # 401 first (no token yet), then every MCP request with the token succeeds
    assert r["mcp_statuses"][0] == ["POST", "initialize", 401]
    assert all(status < 300 for _, _, status in r["mcp_statuses"][1:])


async def assert_service_grant(oauthd: OauthdProcess, client_id: str) -> None:
    listed = await oauthd.command("sessions", "list", "--json")
    assert listed.code == 0, listed.err
    grants = [s for s in json.loads(listed.out) if s["client_id"] == client_id]
    assert [g["principal"] for g in grants] == ["service"]
    services = await oauthd.command("sessions", "list", "--principal", "service", "--json")
    assert [s["client_id"] for s in json.loads(services.out)] == [client_id]


@pytest.mark.parametrize(
    ("method", "client_auth"),
    [("client_secret_basic", ["basic"]), ("client_secret_post", ["post"])],
)
async def test_typescript_client_credentials_provider(
    node: Path, oauthd: OauthdProcess, method: str, client_auth: list[str]
) -> None:
    made = await add_client(oauthd, "--auth", method)
    r = await run_client(
        node,
        oauthd,
        # `--option=value`: a random client id or secret may start with "-", which
        # node's parseArgs takes for an option when it stands on its own
        f"--client-credentials={made['client_id']}",
        f"--client-secret={made['client_secret']}",
        "--secret-method",
        method,
    )
    assert_machine_session(r, made["client_id"], client_auth)
    await assert_service_grant(oauthd, made["client_id"])


@pytest.mark.parametrize("signer", [Signer.ec(), Signer.rsa()], ids=["ES256", "RS256"])
async def test_typescript_private_key_jwt_provider(
    node: Path, oauthd: OauthdProcess, tmp_path: Path, signer: Signer
) -> None:
    jwks = tmp_path / "client.jwks"
    jwks.write_text(signer.jwks_text())
    made = await add_client(oauthd, "--auth", "private_key_jwt", "--jwks-file", str(jwks))
    assert made["client_secret"] is None
    key = tmp_path / "client.pem"
    key.write_bytes(
        signer.key.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    r = await run_client(
        node,
        oauthd,
        f"--private-key-jwt={made['client_id']}",
        "--private-key-pem",
        str(key),
        "--alg",
        signer.alg,
    )
    assert_machine_session(r, made["client_id"], [CLIENT_ASSERTION_TYPE])
    await assert_service_grant(oauthd, made["client_id"])
