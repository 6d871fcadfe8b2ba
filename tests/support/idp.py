"""A real OpenID Connect provider for tests: panva's `oidc-provider` (npm, tests/idp/provider.mjs)
run by Node on 127.0.0.1 over plain HTTP (`running_idp`), with one static client (PKCE S256
required, refresh tokens issued on every code exchange and rotated on every use), the
accounts of `DEFAULT_ACCOUNTS` (or the ones given) and automatic consent; `idp_login` and
`idp_cancel` play the browser at its login page. Without Node and npm the test is skipped
with the reason, or fails when `OAUTHD_REQUIRE_SERVICES=1`."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import aiohttp

from tests.support.daemon import stop_process
from tests.support.forms import Page, parse_page
from tests.support.ports import free_port, wait_listening
from tests.support.services import npm_packages

IDP_DIR = Path(__file__).resolve().parents[1] / "idp"
PROVIDER = IDP_DIR / "provider.mjs"
MIN_NODE_MAJOR = 18
MAX_BROWSER_STEPS = 20
REDIRECTS = frozenset({301, 302, 303, 307, 308})


class IdpLoginError(AssertionError):
    """The provider did not lead the browser back to the client (wrong password, an error
    page, a page the browser cannot handle)."""


@dataclass(frozen=True, slots=True)
class Account:
    username: str
    password: str
    sub: str
    email: str
    email_verified: bool
    name: str


DEFAULT_ACCOUNTS: tuple[Account, ...] = (
    Account("alice", "alice-password", "user-1001", "alice@example.test", True, "Alice Liddell"),
    Account("bob", "bob-password", "user-1002", "bob@example.test", True, "Bob Builder"),
    Account("mallory", "mallory-password", "user-1003", "mallory@example.test", False, "Mallory"),
)


@dataclass(frozen=True, slots=True)
class Idp:
    issuer: str
    port: int
    accounts: Mapping[str, Account]  # by username
    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]
    # The provider's output (its warnings and server errors), readable while it runs.
    log_path: Path = field(repr=False)

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def ensure_idp_installed() -> str:
    """Make tests/idp runnable (`npm install` when needed); return the `node` executable."""
    package = {"oidc-provider": IDP_DIR / "node_modules" / "oidc-provider"}
    return npm_packages(IDP_DIR, package, "the test OpenID provider", MIN_NODE_MAJOR)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc, signal.SIGTERM, 5)
    if proc.stdin is not None:
        proc.stdin.close()


@contextmanager
def running_idp(
    client_id: str,
    client_secret: str,
    redirect_uris: Sequence[str],
    *,
    accounts: Iterable[Account] = DEFAULT_ACCOUNTS,
    token_endpoint_auth_method: str = "client_secret_basic",
    client_metadata: Mapping[str, Any] | None = None,
    ttl: Mapping[str, int] | None = None,
) -> Iterator[Idp]:
    """Start the provider for the duration of the block and stop it (SIGTERM) afterwards.

    It listens on a free port (`wait_listening`). `client_metadata` adds or overrides the
    client's registered metadata (oidc-provider's names); `ttl` overrides lifetimes in
    seconds, e.g. {"AccessToken": 5}. The provider also stops when this process dies
    (it exits when its stdin closes).
    """
    node = ensure_idp_installed()
    account_list = tuple(accounts)
    client: dict[str, Any] = {
        "client_id": client_id,
        "client_secret": client_secret,
        "redirect_uris": list(redirect_uris),
        "token_endpoint_auth_method": token_endpoint_auth_method,
        **(client_metadata or {}),
    }
    config = {
        "client": client,
        "accounts": [dataclasses.asdict(a) for a in account_list],
        "ttl": dict(ttl or {}),
    }
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="oauthd-idp-") as tmp:
        log = Path(tmp) / "provider.log"
        with log.open("wb") as log_file:
            proc = subprocess.Popen(
                [node, str(PROVIDER), "--port", str(port), "--exit-with-stdin"],
                cwd=IDP_DIR,
                env={**os.environ, "IDP_CONFIG": json.dumps(config)},
                stdin=subprocess.PIPE,
                stdout=log_file,
                stderr=log_file,
            )
        try:
            wait_listening(proc, port, lambda: log.read_text(errors="replace")[-3000:])
            yield Idp(
                issuer=f"http://127.0.0.1:{port}",
                port=port,
                accounts=MappingProxyType({a.username: a for a in account_list}),
                client_id=client_id,
                client_secret=client_secret,
                redirect_uris=tuple(redirect_uris),
                log_path=log,
            )
        finally:
            _stop(proc)


# -- the browser -------------------------------------------------------------------------


def _summary(page: Page) -> str:
    alerts = [" ".join(t.split()) for t in page.alerts if t.strip()]
    return "; ".join(alerts) if alerts else page.text[:500]


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _check_cookies_kept(session: aiohttp.ClientSession, url: str) -> None:
    host = urlsplit(url).hostname or ""
    if not any(m["domain"] in {host, ""} for m in session.cookie_jar):
        raise IdpLoginError(
            f"the session's cookie jar dropped the provider's cookies for {host}: "
            "use aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)), "
            "aiohttp ignores cookies from IP addresses otherwise"
        )


async def _browse(
    session: aiohttp.ClientSession, authorize_url: str, credentials: Mapping[str, str] | None
) -> str:
    origin = _origin(authorize_url)
    method, url, data = "GET", authorize_url, None
    submitted = False
    timeout = aiohttp.ClientTimeout(total=10)
    for _ in range(MAX_BROWSER_STEPS):
        async with session.request(
            method, url, data=data, allow_redirects=False, timeout=timeout
        ) as response:
            status = response.status
            location = response.headers.get("Location")
            sets_cookies = "Set-Cookie" in response.headers
            html = await response.text(errors="replace")
        if sets_cookies:
            _check_cookies_kept(session, url)
        if status in REDIRECTS and location:
            target = urljoin(url, location)
            if _origin(target) != origin:
                return target  # back to the client: the browser would go there now
            if status not in (307, 308):
                method, data = "GET", None
            url = target
            continue
        page = parse_page(html)
        where = f"{method} {url} -> HTTP {status}"
        if not page.forms or status >= 500:
            raise IdpLoginError(f"{where}: {_summary(page) or 'no form on the page'}")
        if credentials is None:
            form = next((f for f in page.forms if f.action.endswith("/abort")), None)
            if form is None:
                raise IdpLoginError(f"{where}: no cancel form: {_summary(page)}")
            fields: dict[str, str] = dict(form.fields)
        else:
            form = next((f for f in page.forms if f.has_password), None)
            if form is None:
                raise IdpLoginError(f"{where}: no login form: {_summary(page)}")
            if submitted:
                raise IdpLoginError(f"login rejected ({where}): {_summary(page)}")
            fields = {**form.fields, **credentials}
            submitted = True
        action = urljoin(url, form.action or url)
        if _origin(action) != origin:
            raise IdpLoginError(f"{where}: a form posts to {action} (form_post is not supported)")
        if form.method == "post":
            method, url, data = "POST", action, fields
        else:
            method, url, data = "GET", f"{action.partition('?')[0]}?{urlencode(fields)}", None
    raise IdpLoginError(f"more than {MAX_BROWSER_STEPS} steps without leaving {authorize_url}")


async def idp_login(
    session: aiohttp.ClientSession, authorize_url: str, username: str, password: str
) -> str:
    """Play the browser from the provider's authorization URL: follow its redirects, fill
    in and post its login form, until it redirects away from the provider; return that URL
    (the client's redirect_uri with `code`, `state`, `iss`, or an `error`) without
    requesting it. The session's cookie jar must keep cookies for 127.0.0.1:
    `aiohttp.CookieJar(unsafe=True)`. Raises IdpLoginError when the login is rejected or
    the provider shows an error page instead of redirecting."""
    return await _browse(session, authorize_url, {"login": username, "password": password})


async def idp_cancel(session: aiohttp.ClientSession, authorize_url: str) -> str:
    """Like `idp_login`, but press Cancel on the login page: the returned URL carries
    `error=access_denied`."""
    return await _browse(session, authorize_url, None)
