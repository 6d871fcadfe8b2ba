"""The upgrade page and its answers (`oauthd.http.upgrade`), built like the other pages
(`oauthd.http.pages`: every value escaped, no script)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from oauthd.http.pages import (
    NO_BRAND,
    Brand,
    Html,
    _form,
    _initial,
    _message,
    _unverified,
    esc,
    layout,
)


@dataclass(slots=True, frozen=True)
class UpgradeView:
    action: str
    csrf: str
    hidden: Mapping[str, str]
    client_name: str
    resource_name: str
    user: str
    added: tuple[tuple[str, str], ...]  # (scope, its words: the scope itself if none)
    unverified: bool = False  # the name is the app's own claim, as on the consent page


def _added(added: tuple[tuple[str, str], ...]) -> Html:
    items = "".join(
        f"<li>{esc(words)}</li>" if words == scope else f"<li>{esc(words)} ({esc(scope)})</li>"
        for scope, words in added
    )
    return Html(f'<h2>It will also be able to</h2><ul class="scopes">{items}</ul>')


def _buttons() -> Html:
    # Cancel comes first so that it is the form's default button (Enter never approves).
    return Html(
        '<div class="actions">'
        '<button type="submit" name="decision" value="deny" class="secondary">Cancel</button>'
        '<button type="submit" name="decision" value="allow">Approve</button></div>'
    )


def render_upgrade(view: UpgradeView, brand: Brand = NO_BRAND) -> str:
    name, resource = esc(view.client_name), esc(view.resource_name)
    body = (
        f"{_initial(view.client_name)}"
        f"<h1>Give <strong>{name}</strong> more access to <strong>{resource}</strong>?</h1>"
        f'<p class="lead">Signed in as <strong>{esc(view.user)}</strong>. {name} already '
        f"has access to {resource} and asks for more; it keeps what it has either way.</p>"
        f"{_unverified() if view.unverified else ''}{_added(view.added)}"
        f"{_form(view.action, view.csrf, view.hidden, _buttons())}"
    )
    return layout(f"More access for {view.client_name}?", Html(body), brand)


def render_upgraded(client_name: str, resource_name: str, brand: Brand = NO_BRAND) -> str:
    return _message(
        "Access upgraded",
        f"{client_name} now has the added access to {resource_name}. Go back to the app "
        "and retry: it works with the sign-in the app already has.",
        "ok",
        brand,
    )


def render_nothing_to_add(client_name: str, resource_name: str, brand: Brand = NO_BRAND) -> str:
    return _message(
        "Nothing to approve",
        f"{client_name} already has this access to {resource_name}. Go back to the app and retry.",
        "ok",
        brand,
    )


def render_cancelled(client_name: str, brand: Brand = NO_BRAND) -> str:
    return _message(
        "Nothing changed",
        f"{client_name} keeps the access it had, and no more. You can close this window.",
        "error",
        brand,
    )
