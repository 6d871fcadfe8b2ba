"""Redirect URI registration and matching: the real clients' URIs and an attacker's variants."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oauthd.oauth.redirects import (
    check_registered,
    filter_registration,
    is_loopback_redirect,
    redirect_host,
    redirect_matches,
)

CURSOR_SCHEME = frozenset({"cursor"})

# What the clients of checklist section 2 register.
CLAUDE_CODE_DCR = ("http://localhost:54321/callback",)
CLAUDE_CODE_CIMD = ("http://localhost/callback", "http://127.0.0.1/callback")
CLAUDE_AI = ("https://claude.ai/api/mcp/auth_callback",)
INSPECTOR = ("http://localhost:6274/oauth/callback", "http://localhost:6274/oauth/callback/debug")
PYTHON_SDK = ("http://127.0.0.1:40123/callback",)
VSCODE = (
    "https://insiders.vscode.dev/redirect",
    "https://vscode.dev/redirect",
    "http://127.0.0.1/",
    "http://127.0.0.1:33418/",
)
CURSOR = (
    "cursor://anysphere.cursor-mcp/oauth/callback",
    "https://www.cursor.com/agents/mcp/oauth/callback",
    "http://localhost:8787/callback",
)
REAL_CLIENT_URIS = (
    *CLAUDE_CODE_DCR,
    *CLAUDE_CODE_CIMD,
    *CLAUDE_AI,
    *INSPECTOR,
    *PYTHON_SDK,
    *VSCODE,
    *CURSOR,
)


# ---- check_registered -------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        *REAL_CLIENT_URIS,
        "HTTP://LOCALHOST:1234/cb",
        "http://[::1]:80/",
        "http://[::1]/cb",
        "http://127.0.0.1:65535/cb",
        "http://localhost",
        "https://app.example:8443/cb?tenant=1",
        "https://192.0.2.10/cb",
        "CURSOR://anysphere.cursor-mcp/oauth/callback",
    ],
)
def test_registrable(uri: str) -> None:
    assert check_registered(uri, allowed_private_schemes=CURSOR_SCHEME) is None


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("", "absolute"),
        ("/callback", "absolute"),
        ("callback", "absolute"),
        ("//app.example/cb", "absolute"),
        ("http://evil.example/cb", "loopback"),
        ("http://127.0.0.2/cb", "loopback"),
        ("http://0.0.0.0:8080/cb", "loopback"),
        ("http://localhost.evil.com/cb", "loopback"),
        ("http://127.0.0.1.nip.io/", "loopback"),
        ("http://2130706433/", "loopback"),
        ("http://127.1/", "loopback"),
        ("http://[0:0:0:0:0:0:0:1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://127.0.0.1@evil.com/", "userinfo"),
        ("https://user:pw@app.example/cb", "userinfo"),
        ("https://app.example:443@evil.example/", "userinfo"),
        ("http://localhost\\@evil.com/", "backslash"),
        ("https://app.example\\.evil.com/cb", "backslash"),
        ("https://app.example/cb#frag", "fragment"),
        ("https://app.example/cb#", "fragment"),
        ("http://localhost/cb#x", "fragment"),
        ("javascript:alert(1)", "never allowed"),
        ("JavaScript://app.example/%0Aalert(1)", "never allowed"),
        ("data:text/html,hello", "never allowed"),
        ("file:///etc/passwd", "never allowed"),
        ("ws://localhost/cb", "never allowed"),
        ("https://app.example/" + "a" * 2000, "longer than 2000"),
        ("https://app.example/c b", "whitespace"),
        (" https://app.example/cb", "whitespace"),
        ("https://app.example/cb\n", "whitespace"),
        ("https://app.example/\tcb", "whitespace"),
        ("https://app.example/\x00", "control"),
        ("https://app.example/\x7f", "control"),
        ("https://\u0430pp.example/cb", "non-ASCII"),
        ("https://app.example/caf\u00e9", "non-ASCII"),
        ("http://%6c%6fcalhost/cb", "percent-encoded"),
        ("https://app%2eexample/cb", "percent-encoded"),
        ("http://[::1%25eth0]/", "percent-encoded"),
        ("https://app.example./cb", "not a DNS name"),
        ("https://app_example!/cb", "not a DNS name"),
        ("http://localhost:99999/cb", "port"),
        ("http://localhost:65536/cb", "port"),
        ("http://127.0.0.1:0/", "port"),
        ("http://localhost:/cb", "port"),
        ("http://localhost:08080/cb", "port"),
        ("http://localhost:+80/cb", "port"),
        ("http://localhost:80:81/cb", "port"),
        ("http://[::1]:x/", "port"),
        ("http://[::1/", "does not parse"),
        ("http://[::1]x/", "after the IPv6 host"),
        ("https:///cb", "needs a host"),
        ("https:/cb", "needs a host"),
        ("http:cb", "needs a host"),
        ("localhost:8080/cb", "private-use scheme 'localhost'"),
        ("com.example.app:/oauth2redirect", "private-use scheme 'com.example.app'"),
    ],
)
def test_not_registrable(uri: str, reason: str) -> None:
    problem = check_registered(uri, allowed_private_schemes=CURSOR_SCHEME)
    assert problem is not None and reason in problem


@pytest.mark.parametrize(
    ("uri", "schemes", "hosts", "allowed"),
    [
        (CURSOR[0], frozenset(), None, False),
        (CURSOR[0], frozenset({"CURSOR"}), None, True),
        ("com.example.app:/oauth2redirect", frozenset({"com.example.app"}), None, True),
        ("javascript:alert(1)", frozenset({"javascript"}), None, False),
        ("data:text/html,x", frozenset({"data"}), None, False),
        (CLAUDE_AI[0], frozenset(), frozenset({"claude.ai"}), True),
        ("HTTPS://CLAUDE.AI/api/mcp/auth_callback", frozenset(), frozenset({"Claude.ai"}), True),
        ("https://evil.example/cb", frozenset(), frozenset({"claude.ai"}), False),
        ("https://claude.ai.evil.example/cb", frozenset(), frozenset({"claude.ai"}), False),
        ("http://localhost:8787/callback", frozenset(), frozenset({"claude.ai"}), True),
    ],
)
def test_operator_allowlists(
    uri: str, schemes: frozenset[str], hosts: frozenset[str] | None, allowed: bool
) -> None:
    problem = check_registered(uri, allowed_private_schemes=schemes, allowed_https_hosts=hosts)
    assert (problem is None) is allowed, problem


# ---- filter_registration (the Cursor rule) ----------------------------------------------


@pytest.mark.parametrize(
    "uris", [CLAUDE_CODE_DCR, CLAUDE_CODE_CIMD, CLAUDE_AI, INSPECTOR, PYTHON_SDK, VSCODE, CURSOR]
)
def test_real_client_registrations_are_kept_whole(uris: tuple[str, ...]) -> None:
    result = filter_registration(uris, allowed_private_schemes=CURSOR_SCHEME)
    assert result.failure is None
    assert result.accepted == uris and result.rejected == ()


def test_cursor_with_unlisted_scheme_keeps_the_good_uris() -> None:
    result = filter_registration(CURSOR, allowed_private_schemes=frozenset())
    assert result.failure is None and result.fatal is None
    assert result.accepted == CURSOR[1:]
    assert [uri for uri, _ in result.rejected] == [CURSOR[0]]
    assert "'cursor'" in result.rejected[0][1]


@pytest.mark.parametrize(
    ("uris", "first_bad"),
    [
        ((*VSCODE, "http://evil.example/cb"), "http://evil.example/cb"),
        ((CURSOR[0], "https://app.example/cb#x", "http://evil/cb"), "https://app.example/cb#x"),
        (("javascript:alert(1)",), "javascript:alert(1)"),
        ((CLAUDE_AI[0], "http://127.0.0.1@evil.com/"), "http://127.0.0.1@evil.com/"),
        (("https://app.example/cb", "/relative"), "/relative"),
    ],
)
def test_any_other_bad_uri_fails_the_registration(uris: tuple[str, ...], first_bad: str) -> None:
    result = filter_registration(uris, allowed_private_schemes=frozenset())
    assert result.fatal is not None and result.fatal[0] == first_bad
    assert result.failure is not None and f"'{first_bad}' rejected" in result.failure


def test_unlisted_https_host_fails_the_registration() -> None:
    result = filter_registration(
        CURSOR, allowed_private_schemes=CURSOR_SCHEME, allowed_https_hosts=frozenset({"claude.ai"})
    )
    assert result.failure is not None and "www.cursor.com" in result.failure


@pytest.mark.parametrize(
    ("uris", "message"),
    [
        ((), "at least one"),
        ((CURSOR[0],), "no usable redirect URI"),
        ((CURSOR[0], "com.example.app:/cb"), "no usable redirect URI"),
    ],
)
def test_nothing_left_fails_the_registration(uris: tuple[str, ...], message: str) -> None:
    result = filter_registration(uris, allowed_private_schemes=frozenset())
    assert result.accepted == () and result.fatal is None
    assert result.failure is not None and message in result.failure


# ---- redirect_matches -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("registered", "requested"),
    [
        (CLAUDE_CODE_DCR, "http://localhost:54321/callback"),
        (CLAUDE_CODE_DCR, "http://localhost:60000/callback"),
        (CLAUDE_CODE_CIMD, "http://localhost:54321/callback"),
        (CLAUDE_CODE_CIMD, "http://127.0.0.1:54321/callback"),
        (VSCODE, "http://127.0.0.1:53123/"),
        (VSCODE, "http://127.0.0.1:33418/"),
        (VSCODE, "http://127.0.0.1/"),
        (VSCODE, "https://vscode.dev/redirect"),
        (VSCODE, "https://insiders.vscode.dev/redirect"),
        (CURSOR, "cursor://anysphere.cursor-mcp/oauth/callback"),
        (CURSOR, "https://www.cursor.com/agents/mcp/oauth/callback"),
        (CURSOR, "http://localhost:9999/callback"),
        (INSPECTOR, "http://localhost:6274/oauth/callback"),
        (INSPECTOR, "http://localhost:6274/oauth/callback/debug"),
        (PYTHON_SDK, "http://127.0.0.1:40123/callback"),
        (CLAUDE_AI, "https://claude.ai/api/mcp/auth_callback"),
        (("http://[::1]/cb",), "http://[::1]:80/cb"),
        (("http://[::1]:5/cb",), "http://[::1]/cb"),
        (("http://localhost:1/cb?x=1",), "http://localhost:2/cb?x=1"),
        (("https://app.example/cb?tenant=1",), "https://app.example/cb?tenant=1"),
        (("http://[::1/", "https://app.example/cb"), "https://app.example/cb"),
    ],
)
def test_matches(registered: tuple[str, ...], requested: str) -> None:
    assert redirect_matches(registered, requested)


@pytest.mark.parametrize(
    ("registered", "requested"),
    [
        # simple string comparison (OAuth 2.1 s2.3.1): case counts, in scheme and host too
        (CLAUDE_AI, "HTTPS://CLAUDE.AI/api/mcp/auth_callback"),
        (CLAUDE_AI, "https://CLAUDE.ai/api/mcp/auth_callback"),
        (("https://client.example/cb",), "https://CLIENT.example/cb"),
        (("http://localhost/cb",), "HTTP://LOCALHOST:1234/cb"),
        (("http://LocalHost:1/cb",), "http://localhost:2/cb"),
        (("http://localhost:1/cb",), "http://LOCALHOST:2/cb"),
        # other host
        (CLAUDE_AI, "https://evil.example/api/mcp/auth_callback"),
        (CLAUDE_AI, "https://claude.ai.evil.example/api/mcp/auth_callback"),
        (CLAUDE_AI, "https://evil.claude.ai/api/mcp/auth_callback"),
        # other path, prefix matching, trailing slash, path case, encodings
        (CLAUDE_AI, "https://claude.ai/api/mcp/auth_callback2"),
        (CLAUDE_AI, "https://claude.ai/api/mcp/auth_callback/"),
        (CLAUDE_AI, "https://claude.ai/API/mcp/auth_callback"),
        (CLAUDE_AI, "https://claude.ai/api/mcp/"),
        (("https://app.example/cb",), "https://app.example/cb/evil"),
        (("https://app.example/cb",), "https://app.example/cbevil"),
        (("https://app.example/cb",), "https://app.example/c"),
        (("https://app.example/cb",), "https://app.example/cb/../evil"),
        (("https://app.example/cb",), "https://app.example/%63b"),
        (("https://app.example/cb",), "https://app.example/cb;x"),
        (("https://app.example/cb/",), "https://app.example/cb"),
        (("https://app.example",), "https://app.example/"),
        # added or changed query
        (CLAUDE_AI, "https://claude.ai/api/mcp/auth_callback?next=https://evil.example"),
        (CLAUDE_AI, "https://claude.ai/api/mcp/auth_callback?"),
        (("https://app.example/cb?tenant=1",), "https://app.example/cb?tenant=2"),
        (("https://app.example/cb?tenant=1",), "https://app.example/cb"),
        # fragment, userinfo
        (CLAUDE_AI, "https://claude.ai/api/mcp/auth_callback#x"),
        (CLAUDE_AI, "https://claude.ai/api/mcp/auth_callback#"),
        (CLAUDE_AI, "https://claude.ai@evil.example/api/mcp/auth_callback"),
        (CLAUDE_AI, "https://evil@claude.ai/api/mcp/auth_callback"),
        # scheme, port
        (CLAUDE_AI, "http://claude.ai/api/mcp/auth_callback"),
        (CLAUDE_AI, "https://claude.ai:443/api/mcp/auth_callback"),
        (CLAUDE_AI, "https://claude.ai:8443/api/mcp/auth_callback"),
        (("https://app.example:8443/cb",), "https://app.example:9443/cb"),
        (("https://localhost:8443/cb",), "https://localhost:9443/cb"),
        (CLAUDE_CODE_DCR, "https://localhost:54321/callback"),
        # loopback: the port varies, nothing else does
        (CLAUDE_CODE_DCR, "http://127.0.0.1:54321/callback"),
        (("http://127.0.0.1/",), "http://localhost:53123/"),
        (("http://[::1]/cb",), "http://127.0.0.1/cb"),
        (("http://[::1]/cb",), "http://localhost/cb"),
        (CLAUDE_CODE_DCR, "http://localhost:54321/callback/evil"),
        (CLAUDE_CODE_DCR, "http://localhost:54321/callback?x=1"),
        (CLAUDE_CODE_DCR, "http://localhost:54321/Callback"),
        (CLAUDE_CODE_DCR, "http://localhost:54321/callback#x"),
        (CLAUDE_CODE_DCR, "http://user@localhost:54321/callback"),
        (CLAUDE_CODE_DCR, "http://localhost.evil.com:54321/callback"),
        (CLAUDE_CODE_DCR, "http://localhost\\@evil.com:54321/callback"),
        (CLAUDE_CODE_DCR, "http://%6cocalhost:54321/callback"),
        (CLAUDE_CODE_DCR, "http://localhost:54321/callback "),
        (CLAUDE_CODE_DCR, "http://localhost:54321/callback\n"),
        (("http://127.0.0.1/",), "http://127.0.0.1@evil.com/"),
        (("http://127.0.0.1/",), "http://127.0.0.1.nip.io:53123/"),
        (("http://127.0.0.1/",), "http://127.0.0.2:53123/"),
        (("http://127.0.0.1/",), "http://127.0.0.1:0/"),
        (("http://127.0.0.1/",), "http://127.0.0.1:99999/"),
        (("http://127.0.0.1/",), "http://127.0.0.1:53123"),
        (("http://127.0.0.1",), "http://127.0.0.1:53123/"),
        (("http://[::1]/",), "http://[::1/"),
        # private-use schemes are exact, no port wildcard
        (CURSOR, "cursor://anysphere.cursor-mcp/oauth/callback/evil"),
        (CURSOR, "cursor://evil.example/oauth/callback"),
        (CURSOR, "cursor://anysphere.cursor-mcp:1234/oauth/callback"),
        (CURSOR, "cursor:anysphere.cursor-mcp/oauth/callback"),
        # nothing registered, malformed registrations never match
        ((), "https://app.example/cb"),
        (("https://app.example/cb#x",), "https://app.example/cb#x"),
        (("javascript:alert(1)",), "javascript:alert(1)"),
        (("",), ""),
    ],
)
def test_does_not_match(registered: tuple[str, ...], requested: str) -> None:
    assert not redirect_matches(registered, requested)


@pytest.mark.parametrize("uri", REAL_CLIENT_URIS)
def test_every_real_uri_matches_itself(uri: str) -> None:
    assert redirect_matches(REAL_CLIENT_URIS, uri)


@given(st.text(min_size=1))
def test_a_registered_uri_is_no_prefix(suffix: str) -> None:
    assert not redirect_matches(("https://app.example/cb",), "https://app.example/cb" + suffix)
    assert not redirect_matches(("http://localhost/cb",), "http://localhost:8080/cb" + suffix)


@given(st.integers(min_value=1, max_value=65535))
def test_any_loopback_port_matches(port: int) -> None:
    assert redirect_matches(("http://127.0.0.1/",), f"http://127.0.0.1:{port}/")
    assert not redirect_matches(("http://127.0.0.1/",), f"http://localhost:{port}/")


# ---- consent page helpers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "loopback"),
    [
        ("http://127.0.0.1/", True),
        ("http://[::1]:8080/cb", True),
        ("http://localhost:6274/oauth/callback", True),
        ("HTTP://LOCALHOST/cb", True),
        ("https://localhost/cb", True),
        ("https://claude.ai/api/mcp/auth_callback", False),
        ("http://127.0.0.1@evil.com/", False),
        ("http://127.0.0.1.nip.io/", False),
        ("http://localhost.evil.com/", False),
        ("http://127.0.0.2/", False),
        ("http://0.0.0.0/", False),
        ("cursor://anysphere.cursor-mcp/oauth/callback", False),
        ("cursor://localhost/cb", False),
        ("not a uri", False),
    ],
)
def test_is_loopback_redirect(uri: str, loopback: bool) -> None:
    assert is_loopback_redirect(uri) is loopback


@pytest.mark.parametrize(
    ("uri", "host"),
    [
        ("https://claude.ai/api/mcp/auth_callback", "claude.ai"),
        ("HTTPS://Claude.AI:443/x", "claude.ai"),
        ("http://[::1]:8080/cb", "[::1]"),
        ("http://localhost:6274/oauth/callback", "localhost"),
        ("cursor://anysphere.cursor-mcp/oauth/callback", "cursor://anysphere.cursor-mcp"),
        ("myapp://Host:99/cb", "myapp://host:99"),
        ("com.example.app:/oauth2redirect", "com.example.app:"),
    ],
)
def test_redirect_host(uri: str, host: str) -> None:
    assert redirect_host(uri) == host


@pytest.mark.parametrize(
    "uri", ["https://evil@claude.ai/", "http://127.0.0.1@evil.com/", "https://a/cb#x", "/cb"]
)
def test_redirect_host_refuses_malformed_uris(uri: str) -> None:
    with pytest.raises(ValueError):
        redirect_host(uri)


ERROR_DESCRIPTION_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F)) - {'"', "\\"}


@given(st.text(max_size=3000))
def test_reasons_are_valid_error_descriptions(uri: str) -> None:
    """RFC 6749 s5.2 characters only, and short, whatever a hostile client sends."""
    result = filter_registration((uri,), allowed_private_schemes=CURSOR_SCHEME)
    for text in (result.failure or "", check_registered(uri, allowed_private_schemes=frozenset())):
        assert text is None or (set(text) <= ERROR_DESCRIPTION_CHARS and len(text) < 400)


@pytest.mark.parametrize(
    "uri", ['http://evil.example/"' + "x" * 3000, 'http://[::1"]/', 'http://[v1.x"]/']
)
def test_failure_quotes_a_hostile_uri_safely(uri: str) -> None:
    result = filter_registration((uri,), allowed_private_schemes=frozenset())
    assert result.failure is not None and set(result.failure) <= ERROR_DESCRIPTION_CHARS
    assert len(result.failure) < 300
