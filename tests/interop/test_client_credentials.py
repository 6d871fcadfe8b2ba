"""Machine clients against a live oauthd (SEP-1046, `io.modelcontextprotocol/oauth-client-
credentials`): clients made with the real `oauthd clients add` over the live daemon's
admin socket; the official Python SDK 2.3.0 providers (`ClientCredentialsOAuthProvider`
with client_secret_basic and client_secret_post, `PrivateKeyJWTOAuthProvider` with
SDK-signed RS256 and ES256 assertions and with a prepared one) reach /mcp and call a tool;
the refusals the RFCs ask for, at /token, over HTTP (a replayed jti also after a restart).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import httpx2
import pytest
from cryptography.hazmat.primitives import serialization
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.client.auth.extensions.client_credentials import (
    ClientCredentialsOAuthProvider,
    PrivateKeyJWTOAuthProvider,
    SignedJWTParameters,
    static_assertion_provider,
)
from mcp.client.streamable_http import streamable_http_client

from tests.support.daemon import OauthdProcess
from tests.support.jwts import CLIENT_ASSERTION_TYPE, Signer, assertion_claims
from tests.support.sdk import MemoryStorage
from tests.support.upstream import text_of


async def add_client(oauthd: OauthdProcess, *args: str) -> dict[str, Any]:
    done = await oauthd.command("clients", "add", "--name", "robot", *args, "--json")
    assert done.code == 0, done.err
    made: dict[str, Any] = json.loads(done.out)
    return made


async def jwt_client(oauthd: OauthdProcess, tmp_path: Path, signer: Signer) -> str:
    path = tmp_path / f"{signer.kid}.jwks"
    path.write_text(signer.jwks_text())
    made = await add_client(
        oauthd,
        "--grant",
        "client_credentials",
        "--auth",
        "private_key_jwt",
        "--jwks-file",
        str(path),
    )
    assert made["client_secret"] is None
    return str(made["client_id"])


def pem(signer: Signer) -> str:
    key = signer.key.private_key
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


async def call_tool(oauthd: OauthdProcess, provider: OAuthClientProvider) -> dict[str, Any]:
    with anyio.fail_after(30):
        async with (
            httpx2.AsyncClient(auth=provider, timeout=30) as http,
            streamable_http_client(oauthd.mcp_url, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            assert text_of(await session.call_tool("add", {"a": 2, "b": 3})) == "5"
            me = await session.call_tool("whoami", {})
            assert me.structured_content is not None
            return dict(me.structured_content)


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_sdk_client_credentials_with_a_secret(oauthd: OauthdProcess, method: str) -> None:
    made = await add_client(oauthd, "--grant", "client_credentials", "--auth", method)
    provider = ClientCredentialsOAuthProvider(
        oauthd.mcp_url,
        MemoryStorage(),
        made["client_id"],
        made["client_secret"],
        token_endpoint_auth_method=method,  # type: ignore[arg-type]
        issuer=oauthd.issuer,
    )
    me = await call_tool(oauthd, provider)
    assert me["user"] == f"client:{made['client_id']}" and me["client_id"] == made["client_id"]
    listed = await oauthd.command("sessions", "list", "--principal", "service", "--json")
    assert [s["principal"] for s in json.loads(listed.out)] == ["service"]


@pytest.mark.parametrize("signer", [Signer.rsa(), Signer.ec()], ids=["RS256", "ES256"])
async def test_sdk_private_key_jwt_signed_by_the_sdk(
    oauthd: OauthdProcess, tmp_path: Path, signer: Signer
) -> None:
    client_id = await jwt_client(oauthd, tmp_path, signer)
    params = SignedJWTParameters(
        issuer=client_id, subject=client_id, signing_key=pem(signer), signing_algorithm=signer.alg
    )
    provider = PrivateKeyJWTOAuthProvider(
        oauthd.mcp_url,
        MemoryStorage(),
        client_id,
        params.create_assertion_provider(),
        issuer=oauthd.issuer,
    )
    assert (await call_tool(oauthd, provider))["client_id"] == client_id


async def test_sdk_private_key_jwt_with_a_prepared_assertion(
    oauthd: OauthdProcess, tmp_path: Path
) -> None:
    signer = Signer.rsa()
    client_id = await jwt_client(oauthd, tmp_path, signer)
    prepared = signer.sign(assertion_claims(client_id, oauthd.issuer, time.time()))
    provider = PrivateKeyJWTOAuthProvider(
        oauthd.mcp_url,
        MemoryStorage(),
        client_id,
        static_assertion_provider(prepared),
        issuer=oauthd.issuer,
    )
    assert (await call_tool(oauthd, provider))["client_id"] == client_id


# -- refusals over HTTP ----------------------------------------------------------------------------


async def post_token(
    oauthd: OauthdProcess, form: dict[str, str], basic: tuple[str, str] | None = None
) -> tuple[int, dict[str, Any], str]:
    headers = {}
    if basic is not None:
        pair = f"{basic[0]}:{basic[1]}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{oauthd.url}/token", data=form, headers=headers) as response,
    ):
        return response.status, await response.json(), response.headers.get("WWW-Authenticate", "")


def assertion_form(token: str, **extra: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": token,
        **extra,
    }


async def test_refusals(oauthd: OauthdProcess, tmp_path: Path) -> None:
    grant = {"grant_type": "client_credentials"}
    made = await add_client(
        oauthd, "--grant", "client_credentials", "--auth", "client_secret_basic", "--scope", "mcp"
    )
    cid, secret = made["client_id"], made["client_secret"]
    status, body, challenge = await post_token(oauthd, grant, (cid, "wrong"))
    assert (status, body["error"]) == (401, "invalid_client") and challenge.startswith("Basic")
    status, body, _ = await post_token(oauthd, grant, ("nobody", "x"))
    assert (status, body["error"]) == (401, "invalid_client")
    status, body, _ = await post_token(oauthd, {**grant, "scope": "mcp other"}, (cid, secret))
    assert (status, body["error"]) == (400, "invalid_scope")

    signer = Signer.rsa()
    jid = await jwt_client(oauthd, tmp_path, signer)
    now = time.time()

    def sign(**changes: Any) -> str:
        return signer.sign(assertion_claims(jid, oauthd.issuer, now, **changes))

    forged = Signer.rsa()
    forged.kid = signer.kid
    bad = {
        "bad signature": forged.sign(assertion_claims(jid, oauthd.issuer, now)),
        "wrong aud": sign(aud="https://elsewhere.example"),
        "expired": sign(iat=int(now) - 400, exp=int(now) - 100),
        "too long-lived": sign(exp=int(now) + 3600),
        "iss is not the client": sign(iss="someone"),
        "sub is not the client": sign(sub="someone"),
    }
    for case, token in bad.items():
        status, body, challenge = await post_token(oauthd, assertion_form(token))
        assert (status, body["error"], challenge) == (401, "invalid_client", ""), case
    # a private_key_jwt client sending a secret
    status, body, _ = await post_token(oauthd, {**grant, "client_id": jid, "client_secret": "s"})
    assert (status, body["error"]) == (401, "invalid_client")
    # a public client asking for client_credentials
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{oauthd.url}/register",
            json={
                "client_name": "app",
                "redirect_uris": ["http://127.0.0.1/cb"],
                "token_endpoint_auth_method": "none",
            },
        ) as response,
    ):
        public = (await response.json())["client_id"]
    status, body, _ = await post_token(oauthd, {**grant, "client_id": public})
    assert (status, body["error"]) == (400, "unauthorized_client")

    refused = [e for e in oauthd.json_log() if e.get("event") == "token.client_assertion_refused"]
    assert {e["reason"] for e in refused} == {
        "bad_signature",
        "wrong_audience",
        "expired",
        "lifetime_too_long",
        "client_mismatch",
        "unknown_issuer",  # sub names the client when no client_id is sent: no such client
    }

    # a jti is single use, also after a restart
    once = sign(jti=uuid.uuid4().hex)
    assert (await post_token(oauthd, assertion_form(once)))[0] == 200
    assert (await post_token(oauthd, assertion_form(once)))[1]["error"] == "invalid_client"
    await oauthd.restart()
    status, body, _ = await post_token(oauthd, assertion_form(once))
    assert (status, body["error"]) == (401, "invalid_client")
    assert "used before" in body["error_description"]
