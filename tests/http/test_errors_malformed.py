"""Malformed input on every endpoint is a 4xx answer, never a 5xx or a traceback: the
`client_id` URLs that once gave an unauthenticated 500 (issue #11), then a fuzz test."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.app import Running
from tests.support.http_client import Pkce

MALFORMED_CLIENT_IDS = [
    "https://a..b/c",
    "https://[::1/c",
    "https://[::1]x/c",
    "https://a b/c",
    "https://xn--/c",
    "https://-a.example/c",
    "https://" + "a" * 64 + ".example/c",
    "https://a.example:99999/c",
    "https://a.example:x/c",
    "https:///c",
    "https://%zz/c",
    "https://\u00e9.example/c",
]


@pytest.mark.parametrize("client_id", MALFORMED_CLIENT_IDS)
async def test_malformed_client_id_urls_are_invalid_client(oauthd: Running, client_id: str) -> None:
    client = oauthd.client
    params = client.authorize_params(client_id, "http://127.0.0.1:5000/callback", Pkce.new())
    page = await client.browser().authorize(params)
    assert page.status == 400, page.text
    assert page.is_page and "Location" not in page.headers and "Traceback" not in page.text
    forms: dict[str, dict[str, Any]] = {
        "/token": {"grant_type": "refresh_token", "refresh_token": "a.b"},
        "/revoke": {"token": "a.b"},
        "/device_authorization": {},
    }
    for path, form in forms.items():
        answer = await client.call("POST", path, data={**form, "client_id": client_id})
        assert answer.status == 401 or answer.status == 400, (path, answer.text)
        assert answer.json()["error"] == "invalid_client", (path, answer.text)


# -- fuzz: malformed input on every endpoint -----------------------------------------------

ENDPOINTS = [
    ("GET", "/authorize"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("GET", "/consent"),
    ("POST", "/consent"),
    ("GET", "/login/callback"),
    ("GET", "/device"),
    ("POST", "/device"),
    ("POST", "/register"),
    ("POST", "/token"),
    ("POST", "/revoke"),
    ("POST", "/introspect"),
    ("POST", "/device_authorization"),
    ("GET", "/account"),
    ("POST", "/account/login"),
    ("POST", "/account/revoke"),
    ("POST", "/account/logout"),
    ("GET", "/metrics"),
    ("GET", "/mcp"),
    ("POST", "/mcp"),
    ("GET", "/.well-known/oauth-authorization-server"),
    ("GET", "/.well-known/oauth-protected-resource/mcp"),
]
NAMES = [
    "client_id", "redirect_uri", "response_type", "code_challenge", "code_challenge_method",
    "state", "scope", "resource", "grant_type", "code", "code_verifier", "refresh_token",
    "token", "token_type_hint", "device_code", "user_code", "request", "decision", "csrf",
    "username", "password", "client_secret", "grant",
]  # fmt: skip
HOSTILE = [
    *MALFORMED_CLIENT_IDS,
    "a.b",
    ".",
    "https://",
    "http://127.0.0.1:0/",
    "authorization_code",
    "refresh_token",
    "urn:ietf:params:oauth:grant-type:device_code",
    "code",
    "S256",
    "\x00",
    "%",
    "x" * 3000,
]
VALUES = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40))
PARAMS = st.one_of(
    st.fixed_dictionaries({}, optional=dict.fromkeys(NAMES, VALUES)),  # the names we read
    st.dictionaries(st.one_of(st.sampled_from(NAMES), st.text(max_size=8)), VALUES, max_size=6),
)
BODIES = st.one_of(
    PARAMS.map(lambda form: ("form", form)),
    st.binary(max_size=200).map(lambda raw: ("raw", raw)),
    st.recursive(
        st.none() | st.booleans() | st.integers() | VALUES,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(VALUES, inner, max_size=3),
        max_leaves=8,
    ).map(lambda doc: ("json", doc)),
)
HEADERS = st.dictionaries(
    st.sampled_from(["Authorization", "Origin", "Referer", "Content-Type", "Cookie"]),
    st.one_of(
        st.sampled_from(["Basic ", "Bearer a.b", "Basic Og==", "null", "application/json"]),
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30),
    ),
    max_size=2,
)


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(endpoint=st.sampled_from(ENDPOINTS), query=PARAMS, body=BODIES, headers=HEADERS)
async def test_no_malformed_input_gets_a_5xx(
    oauthd: Running,
    endpoint: tuple[str, str],
    query: dict[str, str],
    body: tuple[str, Any],
    headers: dict[str, str],
) -> None:
    method, path = endpoint
    kwargs: dict[str, Any] = {"params": query, "headers": headers}
    if method == "POST":
        kind, content = body
        if kind == "form":
            kwargs["data"] = urlencode(content).encode()
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        elif kind == "raw":
            kwargs["data"] = content
        else:
            kwargs["json"] = content
    answer = await oauthd.client.call(method, path, **kwargs)
    assert answer.status < 500, (method, path, kwargs, answer.status, answer.text[:300])
    assert "Traceback" not in answer.text
