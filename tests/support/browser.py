"""The tests' browser: a person's cookie jar in front of oauthd's pages, every HTML page
checked for its framing headers, forms read with `tests.support.forms`. `Browser` takes
single steps (go, submit, sign in, decide); `Person` walks a whole authorization URL
(sign in if asked, allow) the way the SDK interop tests need it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urljoin, urlsplit

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from tests.support.configs import INTEROP_PASSWORD, INTEROP_USER, PASSWORD, USER
from tests.support.forms import Form, parse_forms

REDIRECTS = (301, 302, 303, 307, 308)


# -- pages -----------------------------------------------------------------------------------


def check_page_headers(headers: Mapping[str, str]) -> None:
    """What every HTML page must send: no framing, no caching, no sniffing."""
    csp = headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in csp, csp
    assert headers.get("X-Frame-Options") == "DENY"
    assert headers.get("X-Content-Type-Options") == "nosniff"
    assert headers.get("Cache-Control") == "no-store"


@dataclass
class Answer:
    """One HTTP answer, read completely."""

    method: str
    url: str
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip()

    @property
    def is_page(self) -> bool:
        return self.content_type == "text/html"

    def json(self) -> Any:
        assert self.content_type == "application/json", (self.status, self.content_type, self.text)
        return orjson.loads(self.body)

    @property
    def location(self) -> str | None:
        return self.headers.get("Location")

    def redirect_query(self) -> dict[str, str]:
        """The Location's query parameters; each must appear once."""
        assert self.location is not None, (self.status, self.text[:300])
        pairs = parse_qsl(urlsplit(self.location).query, keep_blank_values=True)
        names = [name for name, _ in pairs]
        assert len(names) == len(set(names)), f"repeated parameter in {self.location}"
        return dict(pairs)

    def form(self, index: int = 0) -> Form:
        forms = parse_forms(self.text)
        assert len(forms) > index, f"no form {index} on {self.url} ({self.status}): {self.text}"
        return forms[index]

    def cookies_set(self) -> list[str]:
        return self.headers.getall("Set-Cookie", [])

    def challenge(self) -> dict[str, str]:
        """The `WWW-Authenticate: Bearer` parameters."""
        header = self.headers.get("WWW-Authenticate", "")
        scheme, _, rest = header.partition(" ")
        assert scheme == "Bearer", header
        params: dict[str, str] = {}
        for part in rest.split('", '):
            name, _, value = part.partition("=")
            params[name.strip()] = value.strip().strip('"')
        return params

    def assert_jsonrpc_error(self, status: int) -> dict[str, Any]:
        """A JSON-RPC error answer from the proxy (id null): its `error` member."""
        assert self.status == status, (self.status, self.text)
        body = self.json()
        assert body["jsonrpc"] == "2.0" and body["id"] is None, body
        assert isinstance(body["error"]["code"], int) and body["error"]["message"], body
        error: dict[str, Any] = body["error"]
        return error


async def read_answer(response: aiohttp.ClientResponse) -> Answer:
    body = await response.read()
    return Answer(response.method, str(response.url), response.status, response.headers, body)


# -- the browser -----------------------------------------------------------------------------


class Browser:
    """A person's browser: one cookie jar, redirects on oauthd's own origin followed (the
    first redirect that leaves it, to a client's redirect URI, is returned), and every
    HTML page checked for the framing headers."""

    def __init__(self, base: str, origin: str | None = None) -> None:
        """`origin`: what its form POSTs send as `Origin`, when the pages are reached at an
        address other than the issuer (an instance behind a balancer); `base` otherwise."""
        self.base = base
        self.origin = origin or base
        self.jar = aiohttp.CookieJar(unsafe=True)  # the host is an IP address
        self.session = aiohttp.ClientSession(cookie_jar=self.jar)
        self.history: list[Answer] = []

    async def close(self) -> None:
        await self.session.close()

    def url(self, path: str) -> str:
        return urljoin(self.base + "/", path)

    def cookie_values(self) -> list[str]:
        return [morsel.value for morsel in self.jar]

    async def request(self, method: str, path: str, **kwargs: Any) -> Answer:
        async with self.session.request(
            method, self.url(path), allow_redirects=False, **kwargs
        ) as response:
            answer = await read_answer(response)
        self.history.append(answer)
        if answer.is_page:
            check_page_headers(answer.headers)
        return answer

    def _ours(self, location: str) -> bool:
        relative = location.startswith("/") and not location.startswith("//")
        return relative or location.startswith(self.base + "/")

    async def go(self, method: str, path: str, **kwargs: Any) -> Answer:
        answer = await self.request(method, path, **kwargs)
        for _ in range(10):
            location = answer.location
            if answer.status not in REDIRECTS or not location or not self._ours(location):
                return answer
            answer = await self.request("GET", location)
        raise AssertionError("redirect loop")

    async def submit(
        self, page: Answer, *, button: tuple[str, str] | None = None, **fields: str
    ) -> Answer:
        """Submit the page's first form as a browser would, with `fields` typed in."""
        form = page.form()
        assert form.method == "post"
        data = {**form.fields, **fields}
        if button is not None:
            assert button in form.buttons, (button, form.buttons)
            data[button[0]] = button[1]
        # as a browser does on every form POST: Origin (and a Referer) of the page's site
        headers = {"Origin": self.origin, "Referer": page.url}
        return await self.go("POST", urljoin(page.url, form.action), data=data, headers=headers)

    # -- the flows ---------------------------------------------------------------------------

    async def authorize(self, params: Mapping[str, str]) -> Answer:
        """GET /authorize and follow: the login page, an error page or an error redirect."""
        return await self.go("GET", "/authorize", params=params)

    async def sign_in(self, page: Answer, username: str = USER, password: str = PASSWORD) -> Answer:
        """Type the password into the login page; a browser signed in already (an earlier
        sign-in's session) is past it: then `page` is the consent page, returned as is."""
        if self.signed_in(page):
            return page
        assert "username" in page.form().fields, page.text
        return await self.submit(page, username=username, password=password)

    def forget_sign_in(self) -> None:
        """Drop the sign-in session's cookie (as when it expired): the next authorization
        asks for the password again."""
        self.jar.clear(lambda morsel: morsel.key.endswith("oauthd_account"))

    @staticmethod
    def signed_in(page: Answer) -> bool:
        """True if `page` is the consent page an authorization reached without a password
        (this browser's sign-in session)."""
        return page.status == 200 and page.url.split("?")[0].endswith("/consent")

    async def decide(self, page: Answer, decision: str = "allow") -> Answer:
        return await self.submit(page, button=("decision", decision))

    async def code_flow(self, params: Mapping[str, str], *, consent: bool = True) -> Answer:
        """Authorize, sign in and (when asked) allow: the redirect back to the client."""
        page = await self.authorize(params)
        answer = await self.sign_in(page)
        if consent:
            assert answer.status == 200 and "decision" in dict(answer.form().buttons), answer.text
            answer = await self.decide(answer)
        assert answer.status == 303, (answer.status, answer.text[:500])
        return answer

    async def enter_user_code(self, user_code: str) -> Answer:
        page = await self.go("GET", "/device")
        assert page.status == 200, page.text
        return await self.submit(page, user_code=user_code)

    async def approve_device(
        self, user_code: str, typed: str = "", username: str = USER, password: str = PASSWORD
    ) -> Answer:
        """Type the code (as `typed`, else as shown), sign in and allow; the last page."""
        login = await self.enter_user_code(typed or user_code)
        assert login.status == 200 and login.form().has_password, login.text
        approval = await self.sign_in(login, username, password)
        assert user_code in approval.text, approval.text  # the approval page shows the code
        done = await self.decide(approval)
        assert done.status == 200 and "Device connected" in done.text, done.text
        return done


@dataclass
class Redirect:
    """Where oauthd finally sent the browser (the client's redirect URI), not requested."""

    location: str

    @property
    def params(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.location).query).items()}


class Person:
    """Someone who opens an authorization URL in a fresh browser (or, `same_browser`, in
    the one browser they keep: its sign-in cookie too; `close()` it), signs in when asked
    and clicks Allow. Counts the sign-ins and keeps the paths of the pages shown."""

    def __init__(
        self,
        issuer: str,
        username: str = INTEROP_USER,
        password: str = INTEROP_PASSWORD,
        *,
        origin: str | None = None,
        same_browser: bool = False,
    ) -> None:
        self.issuer = issuer
        self.origin = origin
        self.username = username
        self.password = password
        self.pages: list[str] = []
        self.logins = 0
        self.kept = Browser(issuer, origin) if same_browser else None

    async def close(self) -> None:
        if self.kept is not None:
            await self.kept.close()

    async def authorize(self, authorization_url: str) -> Redirect:
        """The redirect back to the client (fails on any other outcome)."""
        browser = self.kept or Browser(self.issuer, self.origin)
        seen = len(browser.history)
        try:
            page = await browser.go("GET", authorization_url)
            if page.status == 200 and page.form().has_password:
                self.logins += 1
                page = await browser.sign_in(page, self.username, self.password)
            if page.status == 200:
                page = await browser.decide(page, "allow")
        finally:
            if browser is not self.kept:
                await browser.close()
        self.pages += [urlsplit(a.url).path for a in browser.history[seen:] if a.status == 200]
        assert page.status in REDIRECTS and page.location, (page.status, page.text[:500])
        return Redirect(urljoin(page.url, page.location))
