"""oauthd over real HTTP for the tests: a config with a known user, the app on a
`TestServer` with a file-backed state dir, an API client, and a small browser that follows
/authorize -> /login -> /consent by parsing the forms with `html.parser`.

Used by `tests/http/conftest.py` and by `tests/test_restart_oauth.py` (against the real
daemon), so nothing here depends on the app object: only on a base URL.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urljoin, urlsplit

import aiohttp
import orjson
from aiohttp.test_utils import TestServer
from multidict import CIMultiDictProxy

from oauthd import crypto
from oauthd.clock import FakeClock
from oauthd.config import Config, IntrospectionConfig, Listen, LocalUser, default_config
from tests.support.forms import Form, parse_forms
from tests.support.ports import free_port

USER = "alice"
PASSWORD = "correct horse battery staple"
OTHER_USER = "bob"
OTHER_PASSWORD = "hunter2 but longer"
INTROSPECTION_ID = "resource-server"
REDIRECTS = (301, 302, 303, 307)
LOOPBACK_REDIRECT = "http://127.0.0.1/callback"  # registered; used with a random port


def fast_password_hash(password: str) -> str:
    """A hash `Users` accepts, at the lowest allowed cost (ln=10) so logins take ~1 ms."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**10, r=8, p=1, dklen=32)
    return f"scrypt$ln=10,r=8,p=1${_b64(salt)}${_b64(digest)}"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().rstrip("=")


PASSWORD_HASH = fast_password_hash(PASSWORD)
OTHER_PASSWORD_HASH = fast_password_hash(OTHER_PASSWORD)


def make_config(
    tmp: Path,
    port: int,
    *,
    issuer: str | None = None,
    **sections: Mapping[str, Any],
) -> Config:
    """Defaults, plus: issuer and listen on `port`, the file backend in `tmp/state`, an
    upstream nobody listens on, the users alice and bob, and an introspection client whose
    secret is in `tmp/introspection.secret`.
    `sections` change single keys: `oauth={"allowed_redirect_schemes": ("cursor",)}`."""
    base = default_config(tmp)
    secret_file = tmp / "introspection.secret"
    secret_file.write_text(crypto.new_secret() + "\n")
    config = dataclasses.replace(
        base,
        server=dataclasses.replace(
            base.server,
            listen=Listen("127.0.0.1", port),
            issuer=issuer or f"http://127.0.0.1:{port}",
        ),
        storage=dataclasses.replace(base.storage, backend="file", path=tmp / "state"),
        # Nothing listens there: /mcp answers 502 after its bearer check.
        upstream=dataclasses.replace(base.upstream, url=f"http://127.0.0.1:{free_port()}/mcp"),
        login=dataclasses.replace(
            base.login,
            users=(
                LocalUser(USER, PASSWORD_HASH),
                LocalUser(OTHER_USER, OTHER_PASSWORD_HASH),
            ),
        ),
        introspection=IntrospectionConfig(INTROSPECTION_ID, f"file:{secret_file}"),
    )
    changed = {
        name: dataclasses.replace(getattr(config, name), **keys) for name, keys in sections.items()
    }
    return dataclasses.replace(config, **changed)


def introspection_secret(config: Config) -> str:
    return Path(config.introspection.client_secret.removeprefix("file:")).read_text().strip()


@dataclass(frozen=True, slots=True)
class Pkce:
    verifier: str
    challenge: str

    @classmethod
    def new(cls) -> Pkce:
        verifier = base64.urlsafe_b64encode(os.urandom(40)).rstrip(b"=").decode()
        return cls(verifier, crypto.pkce_challenge(verifier))


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


async def read_answer(response: aiohttp.ClientResponse) -> Answer:
    body = await response.read()
    return Answer(response.method, str(response.url), response.status, response.headers, body)


# -- the browser -----------------------------------------------------------------------------


class Browser:
    """A person's browser: one cookie jar, redirects on oauthd's own origin followed (the
    first redirect that leaves it, to a client's redirect URI, is returned), and every
    HTML page checked for the framing headers."""

    def __init__(self, base: str) -> None:
        self.base = base
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
        return await self.go("POST", urljoin(page.url, form.action), data=data)

    # -- the flows ---------------------------------------------------------------------------

    async def authorize(self, params: Mapping[str, str]) -> Answer:
        """GET /authorize and follow: the login page, an error page or an error redirect."""
        return await self.go("GET", "/authorize", params=params)

    async def sign_in(self, page: Answer, username: str = USER, password: str = PASSWORD) -> Answer:
        assert "username" in page.form().fields, page.text
        return await self.submit(page, username=username, password=password)

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


# -- the API client --------------------------------------------------------------------------


class OauthdClient:
    """Calls oauthd at `base` as an MCP client would (no cookies), and keeps every secret it
    was handed in `seen` (for the no-secret-in-clear checks)."""

    def __init__(self, base: str, issuer: str) -> None:
        self.base = base
        self.issuer = issuer
        self.resource = f"{issuer}/mcp"
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        self.browsers: list[Browser] = []
        self.seen: set[str] = set()

    async def close(self) -> None:
        for browser in self.browsers:
            await browser.close()
        await self.session.close()

    def remember(self, *values: str | None) -> None:
        self.seen.update(v for v in values if v)

    def secrets(self) -> set[str]:
        """Every secret handed out so far, browser cookies included."""
        cookies = {v for b in self.browsers for v in b.cookie_values()}
        return self.seen | cookies

    def browser(self) -> Browser:
        browser = Browser(self.base)
        self.browsers.append(browser)
        return browser

    async def call(self, method: str, path: str, **kwargs: Any) -> Answer:
        async with self.session.request(
            method, urljoin(self.base + "/", path), allow_redirects=False, **kwargs
        ) as response:
            return await read_answer(response)

    # -- registration --------------------------------------------------------------------------

    async def register(self, **metadata: Any) -> dict[str, Any]:
        answer = await self.call("POST", "/register", json=metadata)
        assert answer.status == 201, answer.text
        body: dict[str, Any] = answer.json()
        self.remember(body.get("client_secret"))
        return body

    async def register_public(
        self, redirect_uris: Iterable[str] = (LOOPBACK_REDIRECT,), **metadata: Any
    ) -> dict[str, Any]:
        return await self.register(
            redirect_uris=list(redirect_uris),
            token_endpoint_auth_method="none",
            client_name=metadata.pop("client_name", "Test App"),
            **metadata,
        )

    # -- the code flow -------------------------------------------------------------------------

    def authorize_params(
        self, client_id: str, redirect_uri: str, pkce: Pkce, **extra: str | None
    ) -> dict[str, str]:
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "code_challenge": pkce.challenge,
            "code_challenge_method": "S256",
            "state": "state-" + crypto.new_key(),
            "resource": self.resource,
            "scope": "mcp",
        }
        params.update(extra)
        return {k: v for k, v in params.items() if v is not None}

    async def authorization_code(
        self,
        client: Mapping[str, Any],
        redirect_uri: str = "http://127.0.0.1:43123/callback",
        *,
        browser: Browser | None = None,
        consent: bool = True,
    ) -> tuple[str, Pkce]:
        """A fresh code for `client` (and its PKCE verifier), through the browser."""
        pkce = Pkce.new()
        params = self.authorize_params(client["client_id"], redirect_uri, pkce)
        answer = await (browser or self.browser()).code_flow(params, consent=consent)
        query = answer.redirect_query()
        assert answer.location is not None and answer.location.startswith(redirect_uri + "?")
        assert query["state"] == params["state"] and query["iss"] == self.issuer, query
        self.remember(query["code"])
        return query["code"], pkce

    async def token(self, headers: Mapping[str, str] | None = None, **form: str) -> Answer:
        answer = await self.call("POST", "/token", data=form, headers=headers)
        if answer.status == 200:
            body = answer.json()
            self.remember(body.get("access_token"), body.get("refresh_token"))
        return answer

    async def tokens(
        self,
        client: Mapping[str, Any],
        redirect_uri: str = "http://127.0.0.1:43123/callback",
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Code flow plus code exchange: the token response body."""
        code, pkce = await self.authorization_code(client, redirect_uri, **kwargs)
        answer = await self.token(
            grant_type="authorization_code",
            code=code,
            code_verifier=pkce.verifier,
            redirect_uri=redirect_uri,
            resource=self.resource,
            **client_auth(client),
        )
        assert answer.status == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    async def refresh(self, client: Mapping[str, Any], refresh_token: str) -> Answer:
        return await self.token(
            grant_type="refresh_token", refresh_token=refresh_token, **client_auth(client)
        )

    async def call_mcp(self, access_token: str) -> Answer:
        """A JSON-RPC ping at /mcp with `access_token` (the bearer check marks it used)."""
        return await self.call(
            "POST",
            "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers={
                "Authorization": f"Bearer {access_token}",
                "Accept": "application/json, text/event-stream",
            },
        )

    # -- revocation, introspection ---------------------------------------------------------------

    async def introspect(self, token: str, secret: str) -> dict[str, Any]:
        answer = await self.call(
            "POST",
            "/introspect",
            data={"token": token},
            headers=basic_auth(INTROSPECTION_ID, secret),
        )
        assert answer.status == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    # -- the device grant ------------------------------------------------------------------------

    async def start_device(self, client: Mapping[str, Any]) -> dict[str, Any]:
        answer = await self.call("POST", "/device_authorization", data=client_auth(client))
        assert answer.status == 200, answer.text
        body: dict[str, Any] = answer.json()
        self.remember(body["device_code"])
        return body

    async def poll(self, client: Mapping[str, Any], device_code: str) -> Answer:
        return await self.token(
            grant_type="urn:ietf:params:oauth:grant-type:device_code",
            device_code=device_code,
            **client_auth(client),
        )


def client_auth(client: Mapping[str, Any]) -> dict[str, str]:
    """Form fields that authenticate `client` (client_secret_post when it has a secret)."""
    fields = {"client_id": client["client_id"]}
    if client.get("client_secret"):
        fields["client_secret"] = client["client_secret"]
    return fields


def basic_auth(client_id: str, secret: str) -> dict[str, str]:
    """An HTTP Basic header as RFC 6749 s2.3.1 has it: both parts form-encoded first."""
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def user_code_as_typed(user_code: str) -> str:
    """How a person types XXXX-XXXX: lower case, no dash."""
    return user_code.replace("-", "").lower()


# -- a running app (tests/http) ----------------------------------------------------------


@dataclass
class Running:
    """One oauthd app serving on 127.0.0.1, and a client of it."""

    config: Config
    clock: FakeClock
    server: TestServer
    client: OauthdClient
    state_dir: Path

    @property
    def introspection_secret(self) -> str:
        return introspection_secret(self.config)

    async def stop(self) -> None:
        """Close the client, then the app (the store writes its final snapshot)."""
        await self.client.close()
        await self.server.close()


Start = Callable[..., Awaitable[Running]]
