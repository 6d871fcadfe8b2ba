"""The gate alone, without a server: origin check, CORS, preflight, bearer challenges."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from oauthd.audit import reasons
from oauthd.config import Config, default_config
from oauthd.model import Grant
from oauthd.proxy.answers import ProxyRefusal
from oauthd.proxy.gate import Gate
from tests.support.records import make_grant

ISSUER = "https://auth.example"
APP = "https://app.example"
METADATA = f'resource_metadata="{ISSUER}/.well-known/oauth-protected-resource/mcp"'
GOOD_TOKEN = "good-token"


def config(tmp_path: Path, required: tuple[str, ...] = ("mcp",)) -> Config:
    base = default_config(tmp_path)
    return dataclasses.replace(
        base,
        server=dataclasses.replace(base.server, issuer=ISSUER),
        upstream=dataclasses.replace(
            base.upstream, allowed_origins=(APP,), required_scopes=required
        ),
    )


class Bearers:
    """A bearer check that knows one token, whose grant has `scopes`."""

    def __init__(self, scopes: tuple[str, ...]) -> None:
        self.scopes = scopes
        self.seen: list[str] = []

    async def verify(self, token: str, resource: str) -> Grant | None:
        assert resource.endswith("/mcp")
        self.seen.append(token)
        return make_grant(user="alice", scopes=self.scopes) if token == GOOD_TOKEN else None

    async def why(self, token: str, resource: str) -> tuple[str, Grant | None]:
        return reasons.UNKNOWN_TOKEN, None


def make_gate(
    tmp_path: Path,
    bearers: Bearers | None = None,
    required: tuple[str, ...] = ("mcp",),
) -> Gate:
    cfg = config(tmp_path, required)
    bearers = bearers or Bearers(("mcp",))
    return Gate(cfg, cfg.resources[0], bearers.verify, bearers.why)


def request(method: str = "POST", **headers: str) -> web.Request:
    return make_mocked_request(method, "/mcp", headers=headers)


# -- origin ----------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", [None, ISSUER, ISSUER.upper(), APP, "HTTPS://APP.EXAMPLE"])
def test_no_origin_or_a_known_one_passes(tmp_path: Path, origin: str | None) -> None:
    headers = {} if origin is None else {"Origin": origin}
    make_gate(tmp_path).check_origin(request(**headers))


@pytest.mark.parametrize("origin", ["https://evil.example", "null", f"{ISSUER}:8443"])
def test_any_other_origin_is_a_jsonrpc_403(tmp_path: Path, origin: str) -> None:
    with pytest.raises(ProxyRefusal) as refused:
        make_gate(tmp_path).check_origin(request(Origin=origin))
    response = refused.value.response
    assert response.status == 403
    assert response.headers["Cache-Control"] == "no-store"
    assert response.body is not None
    body = orjson.loads(response.body)  # type: ignore[arg-type]
    assert body["error"] == {"code": -32000, "message": "Origin not allowed"}


# -- CORS ------------------------------------------------------------------------------------


def test_preflight_allows_the_mcp_headers_for_an_allowed_origin(tmp_path: Path) -> None:
    response = make_gate(tmp_path).preflight(request("OPTIONS", Origin=APP))
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == APP
    assert response.headers["Access-Control-Allow-Methods"] == "GET, POST, DELETE, OPTIONS"
    allowed = response.headers["Access-Control-Allow-Headers"]
    assert "Mcp-Session-Id" in allowed and "Authorization" in allowed
    assert response.headers["Access-Control-Max-Age"] == "86400"
    assert response.headers["Vary"] == "Origin"


def test_cors_exposes_the_headers_a_browser_client_reads(tmp_path: Path) -> None:
    response = web.StreamResponse()
    make_gate(tmp_path).add_cors(request(Origin=APP), response)
    assert response.headers["Access-Control-Allow-Origin"] == APP
    exposed = response.headers["Access-Control-Expose-Headers"]
    for name in ("WWW-Authenticate", "Mcp-Session-Id", "MCP-Protocol-Version", "Retry-After"):
        assert name in exposed


@pytest.mark.parametrize(
    ("upstream_vary", "vary"),
    [("Accept-Encoding", "Accept-Encoding, Origin"), ("origin", "origin"), ("", "Origin")],
)
def test_cors_keeps_the_upstreams_vary(tmp_path: Path, upstream_vary: str, vary: str) -> None:
    response = web.StreamResponse(headers={"Vary": upstream_vary} if upstream_vary else None)
    make_gate(tmp_path).add_cors(request(Origin=APP), response)
    assert response.headers["Vary"] == vary


@pytest.mark.parametrize("headers", [{}, {"Origin": "https://evil.example"}])
def test_no_cors_without_an_allowed_origin(tmp_path: Path, headers: dict[str, str]) -> None:
    response = web.StreamResponse()
    make_gate(tmp_path).add_cors(request(**headers), response)
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Vary" not in response.headers


# -- bearer ----------------------------------------------------------------------------------


async def test_a_good_token_with_the_scopes_is_its_grant(tmp_path: Path) -> None:
    bearers = Bearers(("mcp", "other"))
    found = await make_gate(tmp_path, bearers).authenticate(
        request(Authorization=f"Bearer  {GOOD_TOKEN} ")
    )
    assert found.user == "alice"
    assert bearers.seen == [GOOD_TOKEN]  # stripped


async def challenged(gate: Gate, **headers: str) -> tuple[int, str, dict[str, str]]:
    with pytest.raises(ProxyRefusal) as refused:
        await gate.authenticate(request(**headers))
    response = refused.value.response
    assert response.headers["Cache-Control"] == "no-store"
    assert response.body is not None
    return (
        response.status,
        response.headers["WWW-Authenticate"],
        orjson.loads(response.body),  # type: ignore[arg-type]
    )


async def test_no_token_is_a_bare_401_challenge(tmp_path: Path) -> None:
    status, challenge, body = await challenged(make_gate(tmp_path))
    assert status == 401
    assert challenge == f'Bearer {METADATA}, scope="mcp"'
    assert body["error"] == "unauthorized"


@pytest.mark.parametrize("header", ["Basic YWxpY2U6eA==", "Bearer", "Bearer   ", "token"])
async def test_another_scheme_is_invalid_request(tmp_path: Path, header: str) -> None:
    bearers = Bearers(("mcp",))
    status, challenge, body = await challenged(make_gate(tmp_path, bearers), Authorization=header)
    assert status == 401
    assert 'error="invalid_request"' in challenge
    assert body["error_description"] == "use the Authorization: Bearer scheme"
    assert bearers.seen == []  # never asked


async def test_an_unknown_token_is_invalid_token(tmp_path: Path) -> None:
    status, challenge, body = await challenged(make_gate(tmp_path), Authorization="Bearer x")
    assert status == 401
    assert challenge == (
        f'Bearer {METADATA}, error="invalid_token", '
        'error_description="the access token is invalid or has expired", scope="mcp"'
    )
    assert body["error"] == "invalid_token"


async def test_a_missing_scope_is_a_403_naming_it(tmp_path: Path) -> None:
    gate = make_gate(tmp_path, Bearers(("mcp",)), required=("mcp", "mcp:admin"))
    status, challenge, body = await challenged(gate, Authorization=f"Bearer {GOOD_TOKEN}")
    assert status == 403
    assert 'error="insufficient_scope"' in challenge and 'scope="mcp mcp:admin"' in challenge
    assert body["error_description"] == "the token lacks the scope mcp:admin"
