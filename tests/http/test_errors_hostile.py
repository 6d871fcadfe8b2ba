"""Hostile and broken requests at every endpoint: always a precise 4xx, never a 500, never
a traceback in the body, and pages always with their framing headers."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from oauthd.http.keys import AUTH
from tests.support.app import Running
from tests.support.browser import check_page_headers

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
BIG_FORM = b"a=" + b"x" * (65 * 1024)
NESTED_JSON = b"[" * 10_000 + b"]" * 10_000


def basic_raw(raw: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


REQUESTS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/authorize?client_id=%zz&redirect_uri=%", {}),
    ("GET", "/authorize?client_id=%00&redirect_uri=https://evil.example", {}),
    ("GET", "/authorize?client_id=" + "a" * 5000, {}),
    ("GET", "/authorize?client_id=a&client_id=b", {}),
    ("GET", "/authorize?redirect_uri=javascript:alert(1)&client_id=x", {}),
    ("GET", "/login?request=" + "r" * 4000, {}),
    ("GET", "/login?request=%ff%fe", {}),
    ("GET", "/consent?request=../../etc/passwd", {}),
    ("POST", "/login", {}),
    (
        "POST",
        "/login",
        {"data": b'{"request": "x"}', "headers": {"Content-Type": "application/json"}},
    ),
    ("POST", "/login", {"data": b"request=a&request=b", "headers": FORM}),
    ("POST", "/login", {"data": BIG_FORM, "headers": FORM}),
    ("POST", "/login", {"data": b"request=\xff", "headers": FORM}),
    ("POST", "/consent", {"data": b"request=x&decision=allow", "headers": FORM}),
    ("POST", "/consent", {"data": BIG_FORM, "headers": FORM}),
    ("POST", "/device", {"data": b"user_code=BCDFGHJK", "headers": FORM}),
    ("POST", "/device", {"data": b"\x00\x01\x02", "headers": FORM}),
    ("POST", "/register", {"data": NESTED_JSON, "headers": {"Content-Type": "application/json"}}),
    ("POST", "/register", {"data": b'{"redirect_uris": [' + b'"x",' * 3000 + b'"y"]}'}),
    ("POST", "/register", {"json": {"redirect_uris": [{"nested": "object"}]}}),
    ("POST", "/register", {"json": {"redirect_uris": ["https://a.example/cb"], "scope": 5}}),
    ("POST", "/register", {"json": {"redirect_uris": None}}),
    ("POST", "/register", {"json": {"redirect_uris": ["https://a.example/cb"], "grant_types": 1}}),
    (
        "POST",
        "/token",
        {"data": {"grant_type": "refresh_token"}, "headers": basic_raw(b"\xff:\xfe")},
    ),
    ("POST", "/token", {"data": {"grant_type": "refresh_token"}, "headers": basic_raw(b"nocolon")}),
    (
        "POST",
        "/token",
        {"data": {"grant_type": "authorization_code"}, "headers": {"Authorization": "Bearer x"}},
    ),
    ("POST", "/token", {"data": {"grant_type": "x" * 5000, "client_id": "c"}}),
    ("POST", "/token", {"data": {"grant_type": "refresh_token", "client_id": "c" * 3000}}),
    ("POST", "/revoke", {"data": b"token=a&token=b", "headers": FORM}),
    ("POST", "/revoke", {"json": {"token": "x"}}),
    ("POST", "/introspect", {"data": BIG_FORM, "headers": FORM}),
    ("POST", "/introspect", {"json": {"token": "x"}}),
    ("POST", "/device_authorization", {"data": {"client_id": "a" * 3000}}),
    ("POST", "/device_authorization", {"data": b"client_id=a&client_id=b", "headers": FORM}),
    ("POST", "/device_authorization", {"json": {"client_id": "x"}}),
]


@pytest.mark.parametrize(("method", "path", "kwargs"), REQUESTS)
async def test_hostile_request_gets_a_precise_4xx(
    oauthd: Running, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    answer = await oauthd.client.call(method, path, **kwargs)
    assert 400 <= answer.status < 500, (answer.status, answer.text[:300])
    assert "Traceback" not in answer.text and "server_error" not in answer.text
    if answer.is_page:
        check_page_headers(answer.headers)
    else:
        assert answer.json()["error"]
        assert answer.headers["Cache-Control"] == "no-store"


async def test_oversized_cookie_is_ignored(oauthd: Running) -> None:
    answer = await oauthd.client.call(
        "GET", "/device", headers={"Cookie": "oauthd_browser=" + "x" * 4000}
    )
    assert answer.status == 200
    assert answer.cookies_set()  # a fresh secret, not the oversized one


async def test_prefilled_user_code_is_escaped(oauthd: Running) -> None:
    answer = await oauthd.client.call("GET", "/device", params={"user_code": "<script>x"})
    assert answer.status == 200
    assert "<script>x" not in answer.text and "&lt;script&gt;x" in answer.text


async def test_unexpected_failure_is_a_bare_500(
    oauthd: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one 500: `server_error` naming the request id, nothing of the exception."""

    async def broken(*args: Any) -> None:
        raise RuntimeError("internal detail /etc/oauthd secret-ish")

    monkeypatch.setattr(oauthd.server.app[AUTH], "token", broken)
    answer = await oauthd.client.call(
        "POST", "/token", data={"grant_type": "x"}, headers={"X-Request-Id": "req-42"}
    )
    assert answer.status == 500
    body = answer.json()
    assert body["error"] == "server_error" and "req-42" in body["error_description"]
    assert "internal detail" not in answer.text and "Traceback" not in answer.text
    assert answer.headers["X-Request-Id"] == "req-42"
