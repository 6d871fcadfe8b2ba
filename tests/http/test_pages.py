"""The HTML pages: structure parsed with `html.parser`, escaping, headers, the stylesheet.

Every page is also written to `tests/artifacts/pages/` (with the stylesheet beside it) so a
person can open them in a browser."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from oauthd.http import pages
from oauthd.http.pages import (
    AccountView,
    AppRow,
    ConsentView,
    DeviceApproveView,
    DeviceCodeView,
    DeviceDoneView,
    ErrorView,
    LoginView,
    SuccessView,
)

ARTIFACTS = Path(__file__).parents[1] / "artifacts" / "pages"
CSS_FILE = Path(pages.__file__).parent / "static" / "oauthd.css"
HOSTILE = "<script>alert(1)</script>"
QUOTES = "a\"b'c&d<e>"


@dataclass
class Form:
    attrs: dict[str, str]
    inputs: list[dict[str, str]] = field(default_factory=list)
    buttons: list[tuple[dict[str, str], str]] = field(default_factory=list)

    def input(self, name: str) -> dict[str, str]:
        (found,) = [i for i in self.inputs if i.get("name") == name]
        return found

    def hidden(self) -> dict[str, str]:
        return {i["name"]: i["value"] for i in self.inputs if i.get("type") == "hidden"}


class Page(HTMLParser):
    """The parts of a rendered page that tests look at."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.forms: list[Form] = []
        self.text: dict[str, str] = {}  # tag name -> all text inside such tags
        self._open: list[str] = []
        self._button: tuple[dict[str, str], list[str]] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        if tag == "form":
            self.forms.append(Form(a))
        elif tag == "input" and self.forms:
            self.forms[-1].inputs.append(a)
        elif tag == "button":
            self._button = (a, [])
        if tag not in ("input", "meta", "link", "path", "rect"):
            self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "button" and self._button:
            self.forms[-1].buttons.append((self._button[0], "".join(self._button[1])))
            self._button = None
        if self._open and self._open[-1] == tag:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for tag in set(self._open):
            self.text[tag] = self.text.get(tag, "") + data
        if self._button:
            self._button[1].append(data)

    def find(self, tag: str, **want: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in want.items())]

    def decisions(self) -> dict[str, str]:
        (form,) = self.forms
        return {a["value"]: label for a, label in form.buttons if a.get("name") == "decision"}


def login(**kw: Any) -> LoginView:
    base: dict[str, Any] = {"action": "/login", "csrf": "csrf-1", "hidden": {"pending": "p-1"}}
    return LoginView(**{**base, "client_name": "Claude Code", **kw})


def consent(**kw: Any) -> ConsentView:
    base: dict[str, Any] = {"action": "/consent", "csrf": "csrf-2", "hidden": {"pending": "p-2"}}
    base |= {"client_name": "Claude Code", "client_uri_host": "localhost", "user": "alice"}
    return ConsentView(**{**base, "scopes": ("mcp:read", "mcp:write"), **kw})


def device_approve(**kw: Any) -> DeviceApproveView:
    base: dict[str, Any] = {"action": "/device/approve", "csrf": "csrf-3", "hidden": {"c": "d"}}
    base |= {"client_name": "Zed", "scopes": ("mcp",), "user": "alice"}
    return DeviceApproveView(**{**base, "user_code": "WDJB-MJHT", **kw})


NOT_VALID = ErrorView(
    "This sign-in link is not valid",
    "The link has expired or was already used.",
    400,
)
NOW = 1_760_000_000.0  # 2025-10-09 08:53 UTC
ACCOUNT = AccountView(
    "alice",
    "csrf-5",
    (
        AppRow(
            "g-1", "Claude Code", ("mcp:read", "mcp:write"), NOW - 40 * 86400, NOW - 300, "Files"
        ),
        AppRow("g-2", "A tool with a rather long name indeed", (), NOW - 3 * 86400, NOW - 86400),
    ),
    NOW,
)
STEP_UP_WORDS = {"files:read": "Read your files", "files:write": "Change your files"}
# name -> rendered page: every page a person can see, in the states that look different.
PAGES: dict[str, Callable[[], str]] = {
    "login": lambda: pages.render_login(login()),
    "login-error": lambda: pages.render_login(
        login(username="alice", error="Wrong username or password")
    ),
    "login-no-client": lambda: pages.render_login(login(client_name=None)),
    "consent-step-up": lambda: pages.render_consent(
        consent(
            scopes=("files:write",),
            allowed=("files:read",),
            resource_name="Files",
            descriptions=STEP_UP_WORDS,
        )
    ),
    "consent": lambda: pages.render_consent(
        consent(loopback_warning=True, redirect_uri="http://localhost:33418/callback")
    ),
    "consent-unverified": lambda: pages.render_consent(
        consent(
            client_name="Some Tool",
            client_uri_host="tool.example.com",
            scopes=(),
            unverified=True,
        )
    ),
    "device": lambda: pages.render_device_code(DeviceCodeView("/device", "csrf-4")),
    "device-error": lambda: pages.render_device_code(
        DeviceCodeView("/device", "csrf-4", "That code is not valid or has expired", "WDJB-MJHX")
    ),
    "device-approve": lambda: pages.render_device_approve(device_approve()),
    "device-done": lambda: pages.render_device_done(DeviceDoneView(approved=True)),
    "device-denied": lambda: pages.render_device_done(DeviceDoneView(approved=False)),
    "error": lambda: pages.render_error(NOT_VALID),
    "success": lambda: pages.render_success(
        pages.SuccessView("You are signed in", "You can close this window.")
    ),
    "account": lambda: pages.render_account(ACCOUNT),
    "account-revoked": lambda: pages.render_account(
        AccountView("alice", "csrf-5", ACCOUNT.apps[1:], NOW, "Access revoked.")
    ),
    "account-empty": lambda: pages.render_account(AccountView("alice", "csrf-5", (), NOW)),
    "account-login": lambda: pages.render_login(
        login(action="/account/login", client_name=None, hidden={}, lead="Sign in to see apps.")
    ),
    "hostile": lambda: pages.render_consent(
        consent(
            client_name=HOSTILE,
            client_uri_host=HOSTILE,
            user=QUOTES,
            scopes=(HOSTILE,),
            hidden={QUOTES: QUOTES},
            redirect_uri=f"http://x/{HOSTILE}",
        )
    ),
}


@pytest.fixture(scope="module", autouse=True)
def write_artifacts() -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "oauthd.css").write_bytes(pages.STYLESHEET)
    for name, render in PAGES.items():
        page = render().replace(pages.STYLESHEET_URL, "oauthd.css")
        (ARTIFACTS / f"{name}.html").write_text(page, encoding="utf-8")


@pytest.mark.parametrize("name", PAGES)
def test_every_page_has_the_layout(name: str) -> None:
    text = PAGES[name]()
    page = Page(text)
    assert text.startswith("<!doctype html>")
    assert page.find("html", lang="en")
    assert page.find("meta", name="viewport")
    assert page.find("meta", name="referrer", content="no-referrer")
    assert page.find("link", rel="stylesheet", href=f"/static/oauthd.css?v={pages.STYLESHEET_HASH}")
    assert page.text["footer"].strip() == "oauthd"
    assert page.text["title"].endswith("· oauthd")
    assert len(page.find("h1")) == 1 and len(page.find("main")) == 1
    # CSP allows no script and no inline style, so none may be emitted.
    assert "<script" not in text and not [a for _, a in page.tags if "style" in a]


@pytest.mark.parametrize("name", PAGES)
def test_every_form_posts_with_csrf_and_labelled_inputs(name: str) -> None:
    page = Page(PAGES[name]())
    for form in page.forms:
        assert form.attrs["method"] == "post"
        assert form.input("csrf_token")["type"] == "hidden"
        assert form.input("csrf_token")["value"].startswith("csrf-")
        assert form.buttons and all(a["type"] == "submit" for a, _ in form.buttons)
    visible = [i for f in page.forms for i in f.inputs if i["type"] != "hidden"]
    labelled = {a["for"] for a in page.find("label")}
    assert all(i["id"] in labelled for i in visible)
    ids = [a["id"] for _, a in page.tags if "id" in a]
    assert len(ids) == len(set(ids))


def test_login_form() -> None:
    page = Page(pages.render_login(login(username='al"ice')))
    (form,) = page.forms
    assert form.attrs["action"] == "/login"
    assert form.hidden() == {"csrf_token": "csrf-1", "pending": "p-1"}
    assert form.input("username")["autocomplete"] == "username"
    assert form.input("username")["value"] == 'al"ice'
    assert form.input("password")["type"] == "password"
    assert form.input("password")["autocomplete"] == "current-password"
    assert "value" not in form.input("password")
    assert [label for _, label in form.buttons] == ["Sign in"]
    assert "Claude Code" in page.text["p"]
    assert not page.find("div", role="alert")


def test_login_error_is_an_alert_bound_to_the_fields() -> None:
    page = Page(pages.render_login(login(error="Wrong username or password")))
    (alert,) = page.find("div", role="alert")
    assert "Wrong username or password" in page.text["div"]
    for name in ("username", "password"):
        assert page.forms[0].input(name)["aria-describedby"] == alert["id"]


def test_consent_asks_the_question_and_shows_where_it_returns() -> None:
    page = Page(pages.render_consent(consent(redirect_uri="http://localhost:5/cb")))
    assert page.text["h1"] == "Allow Claude Code to access your MCP server as alice?"
    assert "You will be sent back to localhost" in page.text["p"]
    assert "http://localhost:5/cb" in page.text["p"]
    assert page.text["li"] == "mcp:readmcp:write"
    assert page.decisions() == {"allow": "Allow", "deny": "Deny"}
    assert page.forms[0].hidden() == {"csrf_token": "csrf-2", "pending": "p-2"}
    assert not page.find("div", **{"class": "notice"})


def test_consent_names_the_resource_and_the_scopes_in_words() -> None:
    view = consent(
        scopes=("files:read", "mcp"), resource_name="Files <Drive>", descriptions=STEP_UP_WORDS
    )
    page = Page(pages.render_consent(view))
    assert page.text["h1"] == "Allow Claude Code to access Files <Drive> as alice?"
    assert page.text["h2"] == "It will be able to use"
    assert page.text["li"] == "Read your files (files:read)mcp"  # no words: the scope


def test_a_step_up_asks_only_for_the_added_scopes() -> None:
    page = Page(PAGES["consent-step-up"]())
    assert page.text["h2"] == "It asks for more: it will also be able to"
    assert page.text["li"] == "Change your files (files:write)"
    assert "Already allowed: Read your files" in page.text["p"]


def test_device_approval_names_the_resource() -> None:
    view = device_approve(resource_name="Files", descriptions=STEP_UP_WORDS, scopes=("files:read",))
    page = Page(pages.render_device_approve(view))
    assert "for Files" in page.text["p"] and page.text["li"] == "Read your files (files:read)"


def test_consent_without_scopes_asks_for_basic_access() -> None:
    assert Page(pages.render_consent(consent(scopes=()))).text["li"] == "basic access"


@pytest.mark.parametrize(
    ("flags", "phrases"),
    [
        ({"loopback_warning": True}, ["runs on your own computer"]),
        ({"unverified": True}, ["not verified"]),
        ({"loopback_warning": True, "unverified": True}, ["own computer", "not verified"]),
    ],
)
def test_consent_warnings(flags: dict[str, bool], phrases: list[str]) -> None:
    page = Page(pages.render_consent(consent(**flags)))
    assert len(page.find("div", **{"class": "notice"})) == len(phrases)
    assert all(p in page.text["div"] for p in phrases)


def test_device_code_input() -> None:
    page = Page(pages.render_device_code(DeviceCodeView("/device", "csrf-5", user_code="AB")))
    (form,) = page.forms
    assert form.attrs["action"] == "/device"
    assert form.hidden() == {"csrf_token": "csrf-5"}
    code = form.input("user_code")
    assert code["placeholder"] == "XXXX-XXXX" and code["maxlength"] == "9"
    assert code["autocapitalize"] == "characters" and code["inputmode"] == "text"
    assert code["value"] == "AB"
    assert [label for _, label in form.buttons] == ["Continue"]


def test_device_approve() -> None:
    page = Page(pages.render_device_approve(device_approve()))
    assert page.text["h1"] == "Allow Zed on your device (code WDJB-MJHT)?"
    assert page.decisions() == {"allow": "Allow", "deny": "Deny"}
    assert page.forms[0].hidden() == {"csrf_token": "csrf-3", "c": "d"}
    assert "alice" in page.text["p"]


@pytest.mark.parametrize(("approved", "title"), [(True, "Device connected"), (False, "denied")])
def test_device_done(approved: bool, title: str) -> None:
    page = Page(pages.render_device_done(DeviceDoneView(approved)))
    assert title in page.text["h1"] and not page.forms


def test_error_and_success_pages() -> None:
    error = Page(pages.render_error(NOT_VALID))
    assert error.text["h1"] == "This sign-in link is not valid"
    assert "already used" in error.text["p"] and "start signing in again" in error.text["p"]
    assert "Error 400" in error.text["p"]
    success = Page(pages.render_success(SuccessView("Done", "Close this window.")))
    assert success.text["h1"] == "Done" and "Close this window." in success.text["p"]


def test_account_lists_each_app_with_a_revoke_form() -> None:
    page = Page(pages.render_account(ACCOUNT))
    revokes = [f for f in page.forms if f.attrs["action"] == "/account/revoke"]
    assert [f.hidden() for f in revokes] == [
        {"csrf_token": "csrf-5", "grant": "g-1"},
        {"csrf_token": "csrf-5", "grant": "g-2"},
    ]
    assert [label for f in revokes for _, label in f.buttons] == ["Revoke", "Revoke"]
    labels = [a["aria-label"] for a, _ in revokes[0].buttons + revokes[1].buttons]
    assert labels == ["Revoke Claude Code", "Revoke A tool with a rather long name indeed"]
    (logout,) = [f for f in page.forms if f.attrs["action"] == "/account/logout"]
    assert logout.hidden() == {"csrf_token": "csrf-5"}
    assert [label for _, label in logout.buttons] == ["Sign out"]
    assert "mcp:read" in page.text["li"] and "basic access" in page.text["li"]
    assert "Signed in as alice" in page.text["p"]
    assert "Access to Files" in page.text["p"]  # the first app's resource; none for the second
    assert page.text["p"].count("Access to") == 1
    assert page.find("time", datetime="2025-10-09T08:48Z")  # last used 5 minutes ago


def test_account_without_apps_and_with_a_notice() -> None:
    empty = Page(pages.render_account(AccountView("bob", "csrf-6", (), NOW)))
    assert "No apps are connected" in empty.text["p"] and not empty.find("div", role="status")
    revoked = Page(pages.render_account(AccountView("bob", "csrf-6", (), NOW, "Gone.")))
    assert revoked.find("div", role="status")


@pytest.mark.parametrize(
    ("ago", "text"),
    [
        (0, "just now"),
        (59, "just now"),
        (60, "1 minute ago"),
        (59 * 60, "59 minutes ago"),
        (3600, "1 hour ago"),
        (5 * 3600, "5 hours ago"),
        (86400, "yesterday"),
        (6 * 86400, "6 days ago"),
        (7 * 86400, "2 Oct 2025"),
        (-30, "just now"),  # a clock step backwards is not "in the future"
    ],
)
def test_human_time(ago: float, text: str) -> None:
    rendered = pages.human_time(NOW - ago, NOW)
    assert rendered.endswith(f">{text}</time>")
    assert re.match(r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\dZ" title="[^"]+ UTC">', rendered)


def test_hostile_values_are_escaped_and_survive_round_trip() -> None:
    text = PAGES["hostile"]()
    assert "<script" not in text.lower()
    page = Page(text)
    assert not page.find("script")
    assert HOSTILE in page.text["h1"] and QUOTES in page.text["h1"]
    assert page.forms[0].hidden()[QUOTES] == QUOTES
    assert page.text["li"] == HOSTILE


def test_account_escapes_hostile_values() -> None:
    row = AppRow(QUOTES, HOSTILE, (HOSTILE,), NOW, NOW)
    text = pages.render_account(AccountView(QUOTES, QUOTES, (row,), NOW, HOSTILE))
    assert "<script" not in text.lower()
    page = Page(text)
    assert page.forms[0].hidden() == {"csrf_token": QUOTES, "grant": QUOTES}
    assert page.forms[0].buttons[0][0]["aria-label"] == f"Revoke {HOSTILE}"
    assert HOSTILE in page.text["h2"] and QUOTES in page.text["strong"]


def test_escaping_in_attributes_and_title() -> None:
    view = login(action='/x" onmouseover="evil', client_name=HOSTILE, error=HOSTILE)
    page = Page(pages.render_login(view))
    (form,) = page.forms
    assert form.attrs == {"method": "post", "action": '/x" onmouseover="evil'}
    title = Page(pages.render_error(ErrorView(HOSTILE, QUOTES, 400)))
    assert HOSTILE in title.text["title"] and not title.find("script")


def test_page_headers_constant() -> None:
    assert pages.PAGE_HEADERS == {
        "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
    assert pages.page_headers() == pages.PAGE_HEADERS


def test_page_headers_admit_the_redirect_target_in_form_action() -> None:
    targets = [
        "http://localhost:33418/callback?x=1",
        "https://Claude.AI/api/mcp/auth_callback",
        "http://[::1]:8080/cb",
        "cursor://anysphere.cursor-retrieval/oauth/callback",
        "http://localhost:33418/other",
    ]
    headers = pages.page_headers(targets)
    csp = headers["Content-Security-Policy"]
    assert (
        "form-action 'self' http://localhost:33418 https://claude.ai http://[::1]:8080 cursor:;"
        in csp
    )
    assert {k: v for k, v in headers.items() if k != "Content-Security-Policy"} == {
        k: v for k, v in pages.PAGE_HEADERS.items() if k != "Content-Security-Policy"
    }


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "data:text/html,x", "/relative", "http://a;b/", "http://a b/"]
)
def test_page_headers_refuse_what_is_not_a_redirect_target(url: str) -> None:
    with pytest.raises(ValueError):
        pages.page_headers([url])


def test_stylesheet_is_versioned_and_self_contained() -> None:
    css = CSS_FILE.read_bytes()
    assert css == pages.STYLESHEET
    assert hashlib.sha256(css).hexdigest()[:16] == pages.STYLESHEET_HASH
    assert f"/static/oauthd.css?v={pages.STYLESHEET_HASH}" == pages.STYLESHEET_URL
    text = css.decode().lower()
    assert "@import" not in text and "url(http" not in text and "//" not in text
    assert ":focus-visible" in text


def test_stylesheet_headers_make_a_valid_response() -> None:
    response = web.Response(body=pages.STYLESHEET, headers=pages.STYLESHEET_HEADERS)
    assert response.content_type == "text/css" and response.charset == "utf-8"
    assert "immutable" in response.headers["Cache-Control"]


def _colours(block: str) -> dict[str, str]:
    return dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-f]{6})", block))


def _luminance(colour: str) -> float:
    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(int(colour[i : i + 2], 16) / 255) for i in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast(a: str, b: str) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


# (foreground, background, WCAG minimum): text 4.5:1; focus ring and input border 3:1.
PAIRS = [
    ("text", "bg", 4.5),
    ("text", "card", 4.5),
    ("muted", "card", 4.5),
    ("muted", "bg", 4.5),
    ("on-primary", "primary", 4.5),
    ("on-primary", "primary-hover", 4.5),
    ("text", "secondary-hover", 4.5),
    ("chip-text", "chip", 4.5),
    ("warn-text", "warn-bg", 4.5),
    ("error-text", "error-bg", 4.5),
    ("error-text", "card", 4.5),
    ("ok-text", "ok-bg", 4.5),
    ("focus", "card", 3.0),
    ("focus", "bg", 3.0),
]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_colour_contrast(scheme: str) -> None:
    css = pages.STYLESHEET.decode()
    light, _, dark = css.partition("prefers-color-scheme: dark")
    colours = _colours(light) if scheme == "light" else {**_colours(light), **_colours(dark)}
    for fg, bg, minimum in PAIRS:
        ratio = _contrast(colours[fg], colours[bg])
        assert ratio >= minimum, f"{scheme}: --{fg} on --{bg} is {ratio:.2f}:1"
