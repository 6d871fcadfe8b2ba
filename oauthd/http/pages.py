"""The HTML pages a person sees: login, consent, device code, result and error pages, and
the account page ("Connected apps").

Each `render_*` takes a frozen view model and returns a complete document. Every value
from a view model is escaped with `html.escape`; markup is only ever assembled from
`Html` fragments made here, so `layout` cannot be handed raw text. Pages use no script
and load only `/static/oauthd.css`; send them with `page_headers()` (or `PAGE_HEADERS`).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NewType

# What every page is sent with and links to, kept in `page_headers.py`; named here too.
from oauthd.http.page_headers import PAGE_HEADERS as PAGE_HEADERS
from oauthd.http.page_headers import STYLESHEET as STYLESHEET
from oauthd.http.page_headers import STYLESHEET_HASH as STYLESHEET_HASH
from oauthd.http.page_headers import STYLESHEET_HEADERS as STYLESHEET_HEADERS
from oauthd.http.page_headers import STYLESHEET_PATH as STYLESHEET_PATH
from oauthd.http.page_headers import STYLESHEET_URL
from oauthd.http.page_headers import csp_source as csp_source
from oauthd.http.page_headers import page_headers as page_headers

Html = NewType("Html", str)


@dataclass(slots=True, frozen=True)
class LoginView:
    action: str
    csrf: str
    hidden: Mapping[str, str]
    client_name: str | None
    username: str = ""
    error: str | None = None
    lead: str | None = None  # instead of the default line under the heading


@dataclass(slots=True, frozen=True)
class ConsentView:
    action: str
    csrf: str
    hidden: Mapping[str, str]
    client_name: str
    client_uri_host: str
    scopes: tuple[str, ...]  # what the user is asked to allow
    user: str
    loopback_warning: bool = False
    unverified: bool = False
    redirect_uri: str = ""  # shown in full under the host when given (checklist item 32)
    resource_name: str = ""  # the resource asked for ("": "your MCP server")
    # scope -> the words shown for it (`[oauth] scope_descriptions`; none: the scope)
    descriptions: Mapping[str, str] = field(default_factory=dict)
    allowed: tuple[str, ...] = ()  # a step-up: the scopes this app was allowed before


@dataclass(slots=True, frozen=True)
class DeviceCodeView:
    action: str
    csrf: str
    error: str | None = None
    user_code: str = ""


@dataclass(slots=True, frozen=True)
class DeviceApproveView:
    action: str
    csrf: str
    hidden: Mapping[str, str]
    client_name: str
    scopes: tuple[str, ...]
    user: str
    user_code: str
    unverified: bool = False  # the name comes from the app's own registration (as on consent)
    resource_name: str = ""
    descriptions: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class DeviceDoneView:
    approved: bool


@dataclass(slots=True, frozen=True)
class ErrorView:
    title: str
    message: str
    status: int
    hint: str = "Go back to the app you came from and start signing in again from there."


@dataclass(slots=True, frozen=True)
class SuccessView:
    title: str
    message: str


@dataclass(slots=True, frozen=True)
class AppRow:
    """One grant on the account page."""

    grant_id: str
    client_name: str
    scopes: tuple[str, ...]
    created_at: float
    last_used_at: float
    resource_name: str = ""  # what it may use (each grant is for one resource)


@dataclass(slots=True, frozen=True)
class AccountView:
    """The "Connected apps" page: the signed-in user's grants, each with a Revoke form."""

    user: str
    csrf: str
    apps: tuple[AppRow, ...]
    now: float
    notice: str | None = None


def esc(value: str) -> Html:
    return Html(html.escape(value, quote=True))


@dataclass(slots=True, frozen=True)
class Brand:
    """What the operator puts on every page: the service's name (`pages.service_name`),
    which heads the tab title and the footer, and the logo (`pages.logo`), shown above the
    card as an `<img>` (an SVG logo is never inline markup: no script can run from it)."""

    name: str = ""
    logo_url: str | None = None  # LOGO_PATH with the logo's digest as its version


NO_BRAND = Brand()
LOGO_PATH = "/logo"


def _logo(brand: Brand) -> str:
    if brand.logo_url is None:
        return ""
    alt = esc(brand.name or "Logo")
    return f'<header class="brand"><img src="{esc(brand.logo_url)}" alt="{alt}"></header>\n'


def layout(title: str, body: Html, brand: Brand = NO_BRAND) -> str:
    """The page around `body`, with the operator's `brand`."""
    service = brand.name
    site = esc(service or "oauthd")
    footer = f"{esc(service)} · oauthd" if service else "oauthd"
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<meta name="robots" content="noindex, nofollow">
<title>{esc(title)} · {site}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{STYLESHEET_URL}">
</head>
<body>
{_logo(brand)}<main class="card">
{body}
</main>
<footer>{footer}</footer>
</body>
</html>
"""


_ICONS = {
    "ok": '<path d="M5 12.5l4.5 4.5L19 7.5"/>',
    "error": '<path d="M12 7v6"/><path d="M12 16.5v.5"/>',
    "lock": '<rect x="5" y="11" width="14" height="9" rx="2"/><path d="M8 11V8a4 4 0 0 1 8 0v3"/>',
    "device": '<rect x="4" y="5" width="16" height="11" rx="2"/><path d="M9 20h6M12 16v4"/>',
}


def _icon(kind: str) -> Html:
    badge = "badge-ok" if kind == "ok" else "badge-error" if kind == "error" else ""
    return Html(
        f'<div class="badge {badge}" aria-hidden="true"><svg viewBox="0 0 24 24" fill="none" '
        f'stroke="currentColor" stroke-width="2.2" stroke-linecap="round" '
        f'stroke-linejoin="round">{_ICONS[kind]}</svg></div>'
    )


def _initial(name: str) -> Html:
    return Html(f'<div class="badge" aria-hidden="true">{esc(name.strip()[:1].upper())}</div>')


def _form(action: str, csrf: str, hidden: Mapping[str, str], inner: Html) -> Html:
    fields = [("csrf_token", csrf), *hidden.items()]
    inputs = "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in fields)
    return Html(f'<form method="post" action="{esc(action)}">\n{inputs}\n{inner}\n</form>')


def _decision(allow: str) -> Html:
    # Deny comes first so that it is the form's default button (Enter never means "allow").
    return Html(
        '<div class="actions">'
        '<button type="submit" name="decision" value="deny" class="secondary">Deny</button>'
        f'<button type="submit" name="decision" value="allow">{esc(allow)}</button></div>'
    )


def _alert(error: str | None) -> Html:
    if not error:
        return Html("")
    return Html(f'<div class="alert" role="alert" id="form-error"><p>{esc(error)}</p></div>')


def _notice(title: str, text: str) -> Html:
    return Html(f'<div class="notice"><p><strong>{esc(title)}</strong>{esc(text)}</p></div>')


def _unverified() -> Html:
    return _notice(
        "The app's details are not verified. ",
        "Its name was supplied by the app itself. Only continue if you trust it.",
    )


def _scope_item(scope: str, descriptions: Mapping[str, str]) -> str:
    words = descriptions.get(scope, scope)
    if words == scope:
        return f"<li>{esc(scope)}</li>"
    return f'<li>{esc(words)} <span class="muted">({esc(scope)})</span></li>'


def _scopes(
    scopes: tuple[str, ...],
    descriptions: Mapping[str, str] | None = None,
    allowed: tuple[str, ...] = (),
) -> Html:
    """The scopes asked, in words; on a step-up (`allowed`: what was allowed before) the
    page asks only for the added ones and names the others apart."""
    words = descriptions or {}
    items = "".join(_scope_item(s, words) for s in scopes) or "<li>basic access</li>"
    heading = "It asks for more: it will also be able to" if allowed else "It will be able to use"
    before = ""
    if allowed:
        named = ", ".join(words.get(s, s) for s in allowed)
        before = f'<p class="muted">Already allowed: {esc(named)}</p>'
    return Html(f'<h2>{esc(heading)}</h2><ul class="scopes">{items}</ul>{before}')


def _target(resource_name: str) -> str:
    return f"<strong>{esc(resource_name)}</strong>" if resource_name else "your MCP server"


def _field(label: str, attrs: Mapping[str, str], error: str | None) -> Html:
    if error:
        attrs = {**attrs, "aria-invalid": "true", "aria-describedby": "form-error"}
    rendered = "".join(f' {k}="{esc(v)}"' for k, v in attrs.items())
    return Html(f'<label for="{esc(attrs["id"])}">{esc(label)}</label><input{rendered} required>')


def render_login(view: LoginView, brand: Brand = NO_BRAND) -> str:
    if view.client_name:
        badge, lead = _initial(view.client_name), f"<strong>{esc(view.client_name)}</strong> wants"
        lead += " to access your MCP server. Sign in to continue."
    else:
        badge, lead = _icon("lock"), "Sign in to continue."
    if view.lead:
        lead = esc(view.lead)
    user = {"id": "username", "name": "username", "type": "text", "autocomplete": "username"}
    user |= {"autocapitalize": "none", "spellcheck": "false", "value": view.username}
    password = {"id": "password", "name": "password", "type": "password"}
    password["autocomplete"] = "current-password"
    fields = _field("Username", user, view.error) + _field("Password", password, view.error)
    button = '<button type="submit">Sign in</button>'
    body = (
        f'{badge}<h1>Sign in</h1><p class="lead">{lead}</p>'
        f"{_alert(view.error)}{_form(view.action, view.csrf, view.hidden, Html(fields + button))}"
    )
    return layout("Sign in", Html(body), brand)


def render_consent(view: ConsentView, brand: Brand = NO_BRAND) -> str:
    name, user = esc(view.client_name), esc(view.user)
    full = f'<p class="muted center">{esc(view.redirect_uri)}</p>' if view.redirect_uri else ""
    warnings = ""
    if view.loopback_warning:
        warnings += _notice(
            "This app runs on your own computer. ",
            "Only continue if you started it yourself just now.",
        )
    if view.unverified:
        warnings += _unverified()
    body = (
        f"{_initial(view.client_name)}"
        f"<h1>Allow <strong>{name}</strong> to access {_target(view.resource_name)} as {user}?"
        f'</h1><p class="lead">You will be sent back to <strong>{esc(view.client_uri_host)}'
        f"</strong></p>{full}{_scopes(view.scopes, view.descriptions, view.allowed)}{warnings}"
        f"{_form(view.action, view.csrf, view.hidden, _decision('Allow'))}"
    )
    return layout(f"Allow {view.client_name}?", Html(body), brand)


def render_device_code(view: DeviceCodeView, brand: Brand = NO_BRAND) -> str:
    attrs = {"id": "user_code", "name": "user_code", "type": "text", "inputmode": "text"}
    attrs |= {"class": "code-input", "placeholder": "XXXX-XXXX", "maxlength": "9"}
    attrs |= {"autocapitalize": "characters", "autocomplete": "off", "spellcheck": "false"}
    attrs["value"] = view.user_code
    inner = _field("Code", attrs, view.error) + '<button type="submit">Continue</button>'
    body = (
        f"{_icon('device')}<h1>Connect a device</h1>"
        '<p class="lead">Enter the code shown on your device or in your app.</p>'
        f"{_alert(view.error)}{_form(view.action, view.csrf, {}, Html(inner))}"
    )
    return layout("Connect a device", Html(body), brand)


def render_device_approve(view: DeviceApproveView, brand: Brand = NO_BRAND) -> str:
    code = f'<span class="code">{esc(view.user_code)}</span>'
    body = (
        f"{_initial(view.client_name)}<h1>Allow <strong>{esc(view.client_name)}</strong> "
        f"on your device (code {code})?</h1>"
        f'<p class="lead">Signed in as <strong>{esc(view.user)}</strong>'
        + (f" · for {_target(view.resource_name)}" if view.resource_name else "")
        + f"</p>{_scopes(view.scopes, view.descriptions)}"
        + _notice(
            "Check the code. ",
            "Only continue if this code is on a device you are using right now. "
            "Never enter a code that someone sent you.",
        )
        + (_unverified() if view.unverified else "")
        + _form(view.action, view.csrf, view.hidden, _decision("Allow"))
    )
    return layout(f"Allow {view.client_name}?", Html(body), brand)


def render_device_done(view: DeviceDoneView, brand: Brand = NO_BRAND) -> str:
    if view.approved:
        return _message(
            "Device connected", "You can close this window and use your device.", "ok", brand
        )
    return _message(
        "Access denied",
        "The device was not given access. You can close this window.",
        "error",
        brand,
    )


def render_error(view: ErrorView, brand: Brand = NO_BRAND) -> str:
    body = (
        f"{_icon('error')}<h1>{esc(view.title)}</h1>"
        f'<p class="center">{esc(view.message)}</p>'
        f'<p class="lead">{esc(view.hint)}</p>'
        f'<p class="muted center">Error {view.status}</p>'
    )
    return layout(view.title, Html(body), brand)


def render_success(view: SuccessView, brand: Brand = NO_BRAND) -> str:
    return _message(view.title, view.message, "ok", brand)


def _message(title: str, text: str, icon: str, brand: Brand = NO_BRAND) -> str:
    return layout(
        title, Html(f'{_icon(icon)}<h1>{esc(title)}</h1><p class="lead">{esc(text)}</p>'), brand
    )


def human_time(when: float, now: float) -> Html:
    """`<time>` with the UTC date as its machine value and tooltip, and as text how long
    ago it was (a week or more: the date). Pages run no script, so no local time zone."""
    moment = datetime.fromtimestamp(when, UTC)
    ago = max(0.0, now - when)
    if ago < 60:
        text = "just now"
    elif ago < 3600:
        text = _plural(int(ago // 60), "minute") + " ago"
    elif ago < 86400:
        text = _plural(int(ago // 3600), "hour") + " ago"
    elif ago < 7 * 86400:
        days = int(ago // 86400)
        text = "yesterday" if days == 1 else f"{days} days ago"
    else:
        text = f"{moment.day} {moment:%b %Y}"
    return Html(
        f'<time datetime="{moment:%Y-%m-%dT%H:%MZ}" title="{moment:%Y-%m-%d %H:%M} UTC">'
        f"{esc(text)}</time>"
    )


_BASIC_ACCESS = '<li class="chip">basic access</li>'


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def _app_row(app: AppRow, csrf: str, now: float) -> Html:
    scopes = "".join(f'<li class="chip">{esc(s)}</li>' for s in app.scopes)
    revoke = Html(
        f'<button type="submit" class="danger" aria-label="Revoke {esc(app.client_name)}">'
        "Revoke</button>"
    )
    resource = ""
    if app.resource_name:
        resource = f"Access to <strong>{esc(app.resource_name)}</strong><br>"

    return Html(
        f'<li class="app">{_initial(app.client_name)}<div class="app-body">'
        f"<h2>{esc(app.client_name)}</h2>"
        f'<ul class="chips" aria-label="Scopes">{scopes or _BASIC_ACCESS}</ul>'
        f'<p class="muted">{resource}Connected {human_time(app.created_at, now)}<br>'
        f"Last used {human_time(app.last_used_at, now)}</p></div>"
        f"{_form('/account/revoke', csrf, {'grant': app.grant_id}, revoke)}</li>"
    )


def render_account(view: AccountView, brand: Brand = NO_BRAND) -> str:
    if view.apps:
        rows = "".join(_app_row(app, view.csrf, view.now) for app in view.apps)
        listing = f'<ul class="apps">{rows}</ul>'
    else:
        listing = '<p class="empty">No apps are connected to your account.</p>'
    status = ""
    if view.notice:
        status = f'<div class="status" role="status"><p>{esc(view.notice)}</p></div>'
    sign_out = Html('<button type="submit" class="secondary">Sign out</button>')
    body = (
        f"{_icon('lock')}<h1>Connected apps</h1>"
        f'<p class="lead">Signed in as <strong>{esc(view.user)}</strong>. These apps can use '
        "your MCP servers; revoking one signs it out at once.</p>"
        f"{status}{listing}"
        f"{_form('/account/logout', view.csrf, {}, sign_out)}"
    )
    return layout("Connected apps", Html(body), brand)
