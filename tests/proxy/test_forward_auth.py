"""/forward-auth: `/mcp`'s gate for other proxies, answered only to the allowed peers."""

from __future__ import annotations

from pathlib import Path

from oauthd.audit import reasons
from oauthd.http.keys import METRICS
from tests.support.configs import write_secret
from tests.support.proxy_app import Oauthd, StartOauthd
from tests.support.upstream import FakeUpstream


async def test_a_valid_token_gets_the_identity_headers(
    oauthd: Oauthd, upstream: FakeUpstream
) -> None:
    granted = await oauthd.grant()
    answer = await oauthd.call("GET", "/forward-auth", headers=granted.bearer())
    assert answer.status == 200
    assert answer.headers["X-Forwarded-User"] == "alice"
    assert answer.headers["X-Forwarded-Client-Id"] == granted.client_id
    assert answer.headers["X-Forwarded-Scopes"] == "mcp"
    assert "Authorization" not in answer.headers  # no upstream.authorization configured
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.body == b""
    assert upstream.requests == []  # the front proxy relays, not oauthd


async def test_refusals_are_the_challenges_of_mcp(oauthd: Oauthd) -> None:
    metadata = f"{oauthd.config.server.issuer}/.well-known/oauth-protected-resource/mcp"
    none = await oauthd.call("POST", "/forward-auth")
    assert none.status == 401
    assert none.headers["WWW-Authenticate"] == (
        f'Bearer resource_metadata="{metadata}", scope="mcp"'
    )
    bad = await oauthd.call("POST", "/forward-auth", headers={"Authorization": "Bearer x.y"})
    assert bad.status == 401 and 'error="invalid_token"' in bad.headers["WWW-Authenticate"]
    granted = await oauthd.grant()
    foreign = await oauthd.call(
        "POST", "/forward-auth", headers=granted.bearer(Origin="https://evil.example")
    )
    assert foreign.status == 403
    registry = oauthd.app[METRICS].registry
    for error, reason in (
        ("invalid_token", reasons.NO_TOKEN),
        ("invalid_token", reasons.UNKNOWN_TOKEN),
        ("forbidden", reasons.ORIGIN_NOT_ALLOWED),
    ):
        labels = {"endpoint": "/forward-auth", "error": error, "reason": reason}
        assert registry.get_sample_value("oauthd_refusals_total", labels) == 1, labels


async def test_the_original_method_and_path(oauthd: Oauthd) -> None:
    """nginx and Traefik name the method in a header; Envoy asks with it, at a path under
    its prefix. A preflight carries no token and passes."""
    for headers in ({"X-Forwarded-Method": "OPTIONS"}, {"X-Original-Method": "options"}):
        assert (await oauthd.call("GET", "/forward-auth", headers=headers)).status == 200
    assert (await oauthd.call("OPTIONS", "/forward-auth/mcp")).status == 200
    assert (await oauthd.call("POST", "/forward-auth/mcp")).status == 401
    granted = await oauthd.grant()
    envoy = await oauthd.call("DELETE", "/forward-auth/mcp", headers=granted.bearer())
    assert envoy.status == 200


async def test_a_scope_missing_is_403(start_oauthd: StartOauthd) -> None:
    oauthd = await start_oauthd(oauth={"scopes": ("mcp", "other")})
    granted = await oauthd.grant(scopes=("other",))
    answer = await oauthd.call("GET", "/forward-auth", headers=granted.bearer())
    assert answer.status == 403
    assert 'error="insufficient_scope"' in answer.headers["WWW-Authenticate"]


async def test_the_static_credential_goes_to_the_front_proxy(
    start_oauthd: StartOauthd, tmp_path: Path
) -> None:
    secret = tmp_path / "upstream.credential"
    write_secret(secret, "Bearer upstream-secret\n")
    oauthd = await start_oauthd(upstream={"authorization": f"file:{secret}"})
    granted = await oauthd.grant()
    answer = await oauthd.call("GET", "/forward-auth", headers=granted.bearer())
    assert answer.headers["Authorization"] == "Bearer upstream-secret"


async def test_only_allowed_peers_are_answered(start_oauthd: StartOauthd) -> None:
    oauthd = await start_oauthd(forward_auth={"allow": ("10.0.0.0/8",)})
    granted = await oauthd.grant()
    answer = await oauthd.call("GET", "/forward-auth/mcp", headers=granted.bearer())
    assert answer.status == 403
    assert answer.json()["error"] == "access_denied"
    assert "X-Forwarded-User" not in answer.headers
