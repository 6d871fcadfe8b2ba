"""/token over HTTP: the answer's shape, refresh rotation with its grace window, code and
refresh replay, cross-client use, and malformed or oversized requests."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.app import Running, Start
from tests.support.http_client import OauthdClient, basic_auth, client_auth

REDIRECT = "http://127.0.0.1:43123/callback"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@pytest.fixture
async def app(client: OauthdClient) -> dict[str, Any]:
    return await client.register_public(client_name="App")


async def active(oauthd: Running, token: str) -> bool:
    body = await oauthd.client.introspect(token, oauthd.introspection_secret)
    return bool(body["active"])


def error_of(answer: Any) -> tuple[int, str]:
    assert answer.headers["Cache-Control"] == "no-store"
    assert "Traceback" not in answer.text
    return answer.status, answer.json()["error"]


async def test_code_exchange_answer(oauthd: Running, app: dict[str, Any]) -> None:
    code, pkce = await oauthd.client.authorization_code(app, REDIRECT)
    answer = await oauthd.client.token(
        grant_type="authorization_code",
        code=code,
        code_verifier=pkce.verifier,
        redirect_uri=REDIRECT,
        client_id=app["client_id"],
        resource=oauthd.client.resource,
    )
    assert answer.status == 200
    assert answer.content_type == "application/json"
    assert answer.headers["Cache-Control"] == "no-store"
    body = answer.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == int(oauthd.config.tokens.access_ttl)
    assert body["scope"] == "mcp"
    assert body["access_token"] and body["refresh_token"]
    assert body["access_token"] != body["refresh_token"]
    info = await oauthd.client.introspect(body["access_token"], oauthd.introspection_secret)
    assert info["active"] is True
    assert info["aud"] == oauthd.client.resource
    assert info["client_id"] == app["client_id"]
    assert info["sub"] == "alice"


async def test_code_exchange_without_resource_gets_our_resource(
    oauthd: Running, app: dict[str, Any]
) -> None:
    code, pkce = await oauthd.client.authorization_code(app, REDIRECT)
    answer = await oauthd.client.token(
        grant_type="authorization_code",
        code=code,
        code_verifier=pkce.verifier,
        redirect_uri=REDIRECT,
        client_id=app["client_id"],
    )
    assert answer.status == 200, answer.text
    access = answer.json()["access_token"]
    info = await oauthd.client.introspect(access, oauthd.introspection_secret)
    assert info["aud"] == oauthd.client.resource


async def test_refresh_rotates(oauthd: Running, app: dict[str, Any]) -> None:
    first = await oauthd.client.tokens(app)
    answer = await oauthd.client.refresh(app, first["refresh_token"])
    assert answer.status == 200
    assert answer.headers["Cache-Control"] == "no-store"
    second = answer.json()
    assert second["expires_in"] > 0 and second["token_type"] == "Bearer"
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["scope"] == "mcp"
    assert not await active(oauthd, first["access_token"])
    assert await active(oauthd, second["access_token"])


async def test_code_replay_is_refused_and_revokes_what_it_issued(
    oauthd: Running, app: dict[str, Any]
) -> None:
    code, pkce = await oauthd.client.authorization_code(app, REDIRECT)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": pkce.verifier,
        "redirect_uri": REDIRECT,
        "client_id": app["client_id"],
    }
    first = await oauthd.client.token(**form)
    assert first.status == 200
    tokens = first.json()
    assert await active(oauthd, tokens["access_token"])
    assert (await oauthd.client.call_mcp(tokens["access_token"])).status != 401  # used
    assert error_of(await oauthd.client.token(**form)) == (400, "invalid_grant")
    assert not await active(oauthd, tokens["access_token"])
    assert error_of(await oauthd.client.refresh(app, tokens["refresh_token"])) == (
        400,
        "invalid_grant",
    )


async def test_concurrent_exchanges_of_one_code_leave_one_grant_with_one_live_pair(
    oauthd: Running, app: dict[str, Any]
) -> None:
    """Exchanges of one code racing each other (a client retrying while its first attempt
    is still in flight): each later one is a retry of an unused grant, so every answer is
    200, one grant exists, and only the last pair issued is live."""
    for attempt in range(5):
        code, pkce = await oauthd.client.authorization_code(app, REDIRECT, consent=attempt == 0)
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": pkce.verifier,
            "redirect_uri": REDIRECT,
            "client_id": app["client_id"],
        }
        answers = await asyncio.gather(oauthd.client.token(**form), oauthd.client.token(**form))
        assert [a.status for a in answers] == [200, 200], [a.text for a in answers]
        pairs = [a.json() for a in answers]
        assert len({p["access_token"].split(".")[0] for p in pairs}) == 1  # one grant
        live = [p for p in pairs if await active(oauthd, p["refresh_token"])]
        assert len(live) == 1
        assert [await active(oauthd, p["access_token"]) for p in pairs].count(True) == 1


async def test_code_of_another_client_is_refused(oauthd: Running, app: dict[str, Any]) -> None:
    thief = await oauthd.client.register_public(client_name="Thief")
    code, pkce = await oauthd.client.authorization_code(app, REDIRECT)
    answer = await oauthd.client.token(
        grant_type="authorization_code",
        code=code,
        code_verifier=pkce.verifier,
        redirect_uri=REDIRECT,
        client_id=thief["client_id"],
    )
    assert error_of(answer) == (400, "invalid_grant")


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"resource": "https://other.example/mcp"}, (400, "invalid_target")),
        ({"redirect_uri": "http://127.0.0.1:43123/other"}, (400, "invalid_grant")),
        ({"code_verifier": "x" * 43}, (400, "invalid_grant")),
        ({"code_verifier": None}, (400, "invalid_request")),
        ({"code": "no.such"}, (400, "invalid_grant")),
        ({"code": "garbage"}, (400, "invalid_grant")),
        ({"code": None}, (400, "invalid_request")),
        ({"grant_type": "password"}, (400, "unsupported_grant_type")),
        ({"grant_type": None}, (400, "invalid_request")),
        ({"client_id": "unknown"}, (401, "invalid_client")),
        ({"client_id": None}, (401, "invalid_client")),
        ({"client_secret": "public clients have none"}, (401, "invalid_client")),
    ],
)
async def test_bad_code_exchanges(
    oauthd: Running,
    app: dict[str, Any],
    changes: dict[str, str | None],
    expected: tuple[int, str],
) -> None:
    code, pkce = await oauthd.client.authorization_code(app, REDIRECT)
    form: dict[str, str | None] = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": pkce.verifier,
        "redirect_uri": REDIRECT,
        "client_id": app["client_id"],
        **changes,
    }
    answer = await oauthd.client.token(**{k: v for k, v in form.items() if v is not None})
    assert error_of(answer) == expected
    assert "WWW-Authenticate" not in answer.headers


async def test_expired_code(oauthd: Running, app: dict[str, Any]) -> None:
    code, pkce = await oauthd.client.authorization_code(app, REDIRECT)
    oauthd.clock.advance(oauthd.config.tokens.code_ttl + 1)
    answer = await oauthd.client.token(
        grant_type="authorization_code",
        code=code,
        code_verifier=pkce.verifier,
        client_id=app["client_id"],
    )
    assert error_of(answer) == (400, "invalid_grant")


# -- refresh replay ------------------------------------------------------------------------


async def test_refresh_replay_inside_the_grace_window_gets_a_fresh_pair(
    oauthd: Running, app: dict[str, Any]
) -> None:
    r0 = (await oauthd.client.tokens(app))["refresh_token"]
    lost = (await oauthd.client.refresh(app, r0)).json()  # the answer the client never saw
    oauthd.clock.advance(oauthd.config.tokens.refresh_grace / 2)
    retry = await oauthd.client.refresh(app, r0)
    assert retry.status == 200, retry.text
    fresh = retry.json()
    assert fresh["refresh_token"] not in (r0, lost["refresh_token"])
    # The fresh pair is the live branch; the unused successor is void.
    assert await active(oauthd, fresh["access_token"])
    assert not await active(oauthd, lost["access_token"])
    newest = await oauthd.client.refresh(app, fresh["refresh_token"])
    assert newest.status == 200, newest.text
    assert error_of(await oauthd.client.refresh(app, lost["refresh_token"])) == (
        400,
        "invalid_grant",
    )


async def test_refresh_retried_after_the_grace_window_while_the_successor_is_unused(
    oauthd: Running, app: dict[str, Any]
) -> None:
    """#11: a refresh answered 503 whose change landed, retried once the backend is back
    (after the grace window): a fresh pair, and the session lives."""
    r0 = (await oauthd.client.tokens(app))["refresh_token"]
    successor = (await oauthd.client.refresh(app, r0)).json()
    oauthd.clock.advance(oauthd.config.tokens.refresh_grace + 1)
    retry = await oauthd.client.refresh(app, r0)
    assert retry.status == 200, retry.text
    assert await active(oauthd, retry.json()["access_token"])
    assert not await active(oauthd, successor["access_token"])
    assert error_of(await oauthd.client.refresh(app, successor["refresh_token"])) == (
        400,
        "invalid_grant",
    )
    assert not await active(oauthd, retry.json()["access_token"])  # the voided one: reuse


async def test_refresh_replay_after_the_successor_was_used_revokes_the_family(
    oauthd: Running, app: dict[str, Any]
) -> None:
    r0 = (await oauthd.client.tokens(app))["refresh_token"]
    r1 = (await oauthd.client.refresh(app, r0)).json()["refresh_token"]
    latest = (await oauthd.client.refresh(app, r1)).json()  # the successor pair was used
    assert error_of(await oauthd.client.refresh(app, r0)) == (400, "invalid_grant")
    assert not await active(oauthd, latest["access_token"])
    assert error_of(await oauthd.client.refresh(app, latest["refresh_token"])) == (
        400,
        "invalid_grant",
    )


async def test_grace_window_ends_once_the_successor_access_token_was_used(
    oauthd: Running, app: dict[str, Any]
) -> None:
    r0 = (await oauthd.client.tokens(app))["refresh_token"]
    successor = (await oauthd.client.refresh(app, r0)).json()
    used = await oauthd.client.call_mcp(successor["access_token"])
    assert used.status == 502  # past the bearer check; the upstream is down
    assert error_of(await oauthd.client.refresh(app, r0)) == (400, "invalid_grant")
    assert not await active(oauthd, successor["access_token"])
    unknown = await oauthd.client.call_mcp(successor["access_token"])
    assert unknown.status == 401


async def test_refresh_token_of_another_client_is_refused(
    oauthd: Running, app: dict[str, Any]
) -> None:
    thief = await oauthd.client.register_public(client_name="Thief")
    tokens = await oauthd.client.tokens(app)
    assert error_of(await oauthd.client.refresh(thief, tokens["refresh_token"])) == (
        400,
        "invalid_grant",
    )
    assert (await oauthd.client.refresh(app, tokens["refresh_token"])).status == 200


async def test_refresh_with_another_resource_is_invalid_target(
    oauthd: Running, app: dict[str, Any]
) -> None:
    tokens = await oauthd.client.tokens(app)
    answer = await oauthd.client.token(
        grant_type="refresh_token",
        refresh_token=tokens["refresh_token"],
        resource="https://other.example/mcp",
        **client_auth(app),
    )
    assert error_of(answer) == (400, "invalid_target")


async def test_refresh_cannot_widen_scope(oauthd: Running, app: dict[str, Any]) -> None:
    tokens = await oauthd.client.tokens(app)
    answer = await oauthd.client.token(
        grant_type="refresh_token",
        refresh_token=tokens["refresh_token"],
        scope="mcp admin",
        **client_auth(app),
    )
    assert error_of(answer) == (400, "invalid_scope")


# -- client authentication -------------------------------------------------------------------


async def test_unknown_client_with_basic_gets_a_challenge(oauthd: Running) -> None:
    answer = await oauthd.client.token(
        headers=basic_auth("unknown", "secret"), grant_type="refresh_token", refresh_token="a.b"
    )
    assert error_of(answer) == (401, "invalid_client")
    assert answer.headers["WWW-Authenticate"].startswith("Basic")


async def test_wrong_secret_with_basic_gets_a_challenge(oauthd: Running) -> None:
    app = await oauthd.client.register(redirect_uris=["https://app.example/cb"])
    answer = await oauthd.client.token(
        headers=basic_auth(app["client_id"], "wrong"),
        grant_type="refresh_token",
        refresh_token="a.b",
    )
    assert error_of(answer) == (401, "invalid_client")
    assert answer.headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize("header", ["Basic !!!", "Basic bm9jb2xvbg==", "Basic", "basic  "])
async def test_malformed_basic_credentials_get_a_challenge(oauthd: Running, header: str) -> None:
    answer = await oauthd.client.token(
        headers={"Authorization": header}, grant_type="refresh_token", refresh_token="a.b"
    )
    assert error_of(answer) == (401, "invalid_client")
    assert answer.headers["WWW-Authenticate"].startswith("Basic")


async def test_basic_and_form_client_ids_must_agree(oauthd: Running) -> None:
    web = await oauthd.client.register(redirect_uris=["https://app.example/cb"])
    answer = await oauthd.client.token(
        headers=basic_auth(web["client_id"], web["client_secret"]),
        client_id="someone-else",
        grant_type="refresh_token",
        refresh_token="a.b",
    )
    assert error_of(answer) == (401, "invalid_client")


async def test_form_with_charset_is_accepted(oauthd: Running, app: dict[str, Any]) -> None:
    code, pkce = await oauthd.client.authorization_code(app, REDIRECT)
    body = (
        f"grant_type=authorization_code&code={code}&code_verifier={pkce.verifier}"
        f"&client_id={app['client_id']}&redirect_uri={REDIRECT}"
    )
    answer = await oauthd.client.call(
        "POST",
        "/token",
        data=body.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"},
    )
    assert answer.status == 200, answer.text
    oauthd.client.remember(answer.json()["access_token"])


async def test_unknown_client_without_basic_gets_no_challenge(oauthd: Running) -> None:
    answer = await oauthd.client.token(
        client_id="unknown", grant_type="refresh_token", refresh_token="a.b"
    )
    assert error_of(answer) == (401, "invalid_client")
    assert "WWW-Authenticate" not in answer.headers


async def test_client_without_the_grant_type(oauthd: Running) -> None:
    app = await oauthd.client.register_public(grant_types=["authorization_code"])
    answer = await oauthd.client.token(
        grant_type=DEVICE_GRANT, device_code="a.b", client_id=app["client_id"]
    )
    assert error_of(answer) == (400, "unauthorized_client")


# -- malformed and oversized bodies ----------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"grant_type": "refresh_token"}', "application/json"),
        (b"grant_type=refresh_token", "text/plain"),
        (b"grant_type=refresh_token", "application/octet-stream"),
        (b"grant_type=refresh_token", "multipart/form-data; boundary=x"),
        (b"grant_type=refresh_token&grant_type=authorization_code", None),
        (b"client_id=a&client_id=b&grant_type=refresh_token", None),
        (b"grant_type=\xff\xfe", None),
        (b"grant_type", None),
        (b"", None),
    ],
)
async def test_malformed_token_requests_are_invalid_request(
    oauthd: Running, body: bytes, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type or "application/x-www-form-urlencoded"}
    answer = await oauthd.client.call("POST", "/token", data=body, headers=headers)
    assert error_of(answer) == (400, "invalid_request")


async def test_oversized_token_request_is_413(oauthd: Running) -> None:
    body = b"grant_type=refresh_token&refresh_token=" + b"a" * (65 * 1024)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    answer = await oauthd.client.call("POST", "/token", data=body, headers=headers)
    assert error_of(answer) == (413, "invalid_request")


async def test_oversized_chunked_token_request_is_413(oauthd: Running) -> None:
    async def chunks():
        yield b"grant_type=refresh_token&refresh_token="
        for _ in range(80):
            yield b"a" * 1024

    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    answer = await oauthd.client.call("POST", "/token", data=chunks(), headers=headers)
    assert error_of(answer) == (413, "invalid_request")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_other_methods_are_405(oauthd: Running, method: str) -> None:
    answer = await oauthd.client.call(method, "/token")
    assert answer.status == 405


async def test_failed_client_authentication_is_limited_per_address(start_oauthd: Start) -> None:
    """`oauth.client_auth_failures_per_minute`, counted over /token, /revoke and
    /introspect together; then a JSON 429 with Retry-After, even for the right secret."""
    oauthd = await start_oauthd(oauth={"client_auth_failures_per_minute": 3})
    app = await oauthd.client.register(redirect_uris=["https://app.example/cb"])
    wrong = basic_auth(app["client_id"], "wrong")
    for path in ("/token", "/revoke", "/introspect"):
        form = {"grant_type": "refresh_token", "refresh_token": "a.b", "token": "a.b"}
        answer = await oauthd.client.call("POST", path, data=form, headers=wrong)
        assert error_of(answer) == (401, "invalid_client"), path
    right = basic_auth(app["client_id"], app["client_secret"])
    blocked = await oauthd.client.token(
        headers=right, grant_type="refresh_token", refresh_token="a"
    )
    assert error_of(blocked) == (429, "too_many_requests")
    assert blocked.headers["Retry-After"] == "60"
    oauthd.clock.advance(60)
    answer = await oauthd.client.token(headers=right, grant_type="refresh_token", refresh_token="a")
    assert error_of(answer) == (400, "invalid_grant")


async def test_several_resources_over_http(start_oauthd: Start) -> None:
    """A refresh naming another configured resource, a device authorization naming an
    unknown one or a scope of another: precise errors (never a 500)."""
    oauthd = await start_oauthd(
        resources=[("/mcp", "Notes", ("mcp",)), ("/files/mcp", "Files", ("files:read",))],
        oauth={"scopes": ("mcp", "files:read")},
    )
    client = oauthd.client
    app = await client.register_public(client_name="App")
    tokens = await client.tokens(app)  # for /mcp
    files = f"{oauthd.config.server.issuer}/files/mcp"
    answer = await client.token(
        grant_type="refresh_token",
        refresh_token=tokens["refresh_token"],
        resource=files,
        **client_auth(app),
    )
    assert error_of(answer) == (400, "invalid_target")
    device = await client.register(
        client_name="TV", grant_types=[DEVICE_GRANT], token_endpoint_auth_method="none"
    )
    for form, error in (
        ({"resource": files + "/x"}, "invalid_target"),
        ({"resource": files, "scope": "mcp"}, "invalid_scope"),
    ):
        answer = await client.call(
            "POST", "/device_authorization", data={"client_id": device["client_id"], **form}
        )
        assert error_of(answer) == (400, error)
