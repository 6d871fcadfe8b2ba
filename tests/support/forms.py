"""The one HTML form reader of the tests: the forms of a page (action, method, the named
inputs with their values, the named buttons), its alert texts and its visible text."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

_BUTTON_INPUTS = frozenset({"submit", "button", "image", "reset"})


@dataclass(slots=True)
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    buttons: list[tuple[str, str]] = field(default_factory=list)  # (name, value), in order
    has_password: bool = False

    def choices(self, name: str) -> list[str]:
        """The values of the buttons named `name` (e.g. "decision": allow, deny)."""
        return [value for button, value in self.buttons if button == name]


@dataclass(slots=True)
class Page:
    forms: list[Form]
    alerts: list[str]  # text inside role="alert" or class="error" elements
    text: str  # all visible text, whitespace-joined


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self.alerts: list[str] = []
        self.text: list[str] = []
        self._form: Form | None = None
        self._alert_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._form = Form(a.get("action", ""), a.get("method", "get").lower())
            self.forms.append(self._form)
        elif self._form is not None and tag in ("input", "button"):
            self._control(self._form, tag, a)
        if self._alert_depth:
            self._alert_depth += 1
        elif a.get("role") == "alert" or "error" in a.get("class", "").split():
            self._alert_depth = 1
            self.alerts.append("")

    @staticmethod
    def _control(form: Form, tag: str, a: dict[str, str]) -> None:
        kind = a.get("type", "text" if tag == "input" else "submit").lower()
        form.has_password = form.has_password or kind == "password"
        name = a.get("name")
        if not name:
            return
        if tag == "button" or kind in _BUTTON_INPUTS:
            form.buttons.append((name, a.get("value", "")))
        else:
            form.fields[name] = a.get("value", "")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if self._alert_depth:
            self._alert_depth -= 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        if self._alert_depth:
            self._alert_depth -= 1

    def handle_data(self, data: str) -> None:
        if not data.strip():
            return
        self.text.append(data.strip())
        if self._alert_depth:
            self.alerts[-1] = f"{self.alerts[-1]} {data.strip()}".strip()


def parse_page(html: str) -> Page:
    parser = _Parser()
    parser.feed(html)
    parser.close()
    return Page(parser.forms, parser.alerts, " ".join(parser.text))


def parse_forms(html: str) -> list[Form]:
    return parse_page(html).forms
