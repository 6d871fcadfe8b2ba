"""The operator's logo (`[pages] logo`, #11 item 10): served at /logo with its type by
content, caching headers and a policy under which an SVG runs nothing; shown as an <img>
on every page a person sees (sign-in, consent, device, account, errors, 404)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from oauthd.config.logo import Logo
from oauthd.http.browser import LOGO_CSP
from tests.support.app import Running, Start
from tests.support.configs import PASSWORD, USER
from tests.support.forms import parse_forms
from tests.support.http_client import Pkce

SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="80" height="20">'
    b'<script>alert("svg")</script><rect width="80" height="20" fill="#36c"/></svg>'
)
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 17
REDIRECT = "http://127.0.0.1:43123/callback"
LOGO_IMG = re.compile(r'<header class="brand"><img src="(/logo\?v=[0-9a-f]{16})" alt="([^"]*)">')


async def with_logo(start: Start, tmp_path: Path, data: bytes, kind: str, **pages: Any) -> Running:
    logo = Logo(tmp_path / "logo", kind, data)
    return await start(pages={"logo": logo, **pages})


async def test_the_logo_is_served_with_its_type_and_caching(
    start_oauthd: Start, tmp_path: Path
) -> None:
    oauthd = await with_logo(start_oauthd, tmp_path, PNG, "image/png")
    page = await oauthd.client.call("GET", "/device")
    (url, alt) = LOGO_IMG.findall(page.text)[0]
    assert alt == "Logo"
    answer = await oauthd.client.call("GET", url)
    assert answer.status == 200 and answer.body == PNG
    headers = answer.headers
    assert headers["Content-Type"] == "image/png"
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert headers["X-Content-Type-Options"] == "nosniff"
    etag = headers["ETag"]
    assert etag == f'"{url.rpartition("=")[2]}"'
    again = await oauthd.client.call("GET", url, headers={"If-None-Match": etag})
    assert again.status == 304 and again.body == b""


async def test_an_svg_logo_can_run_no_script(start_oauthd: Start, tmp_path: Path) -> None:
    oauthd = await with_logo(
        start_oauthd, tmp_path, SVG, "image/svg+xml", service_name="Acme <MCP>"
    )
    answer = await oauthd.client.call("GET", "/logo")
    assert answer.headers["Content-Type"] == "image/svg+xml"
    csp = answer.headers["Content-Security-Policy"]
    assert csp == LOGO_CSP and "sandbox" in csp and "script-src" not in csp
    assert "default-src 'none'" in csp
    page = await oauthd.client.call("GET", "/device")
    assert "alert(" not in page.text and "#36c" not in page.text  # an <img>, never inline
    assert LOGO_IMG.findall(page.text)[0][1] == "Acme &lt;MCP&gt;"


async def test_without_a_logo_there_is_no_img_and_no_route(oauthd: Running) -> None:
    page = await oauthd.client.call("GET", "/device")
    assert 'class="brand"' not in page.text
    missing = await oauthd.client.call("GET", "/logo")
    assert missing.status == 404


async def test_every_page_shows_the_logo(start_oauthd: Start, tmp_path: Path) -> None:
    oauthd = await with_logo(start_oauthd, tmp_path, SVG, "image/svg+xml")
    client = oauthd.client
    seen: dict[str, str] = {}

    def shown(name: str, html: str) -> None:
        found = LOGO_IMG.findall(html)
        assert len(found) == 1, f"{name}: {html[:500]}"
        seen[name] = found[0][0]

    app = await client.register_public(client_name="Notes App")
    browser = client.browser()
    params = client.authorize_params(app["client_id"], REDIRECT, Pkce.new())
    login = await browser.authorize(params)
    shown("login", login.text)
    consent = await browser.sign_in(login, USER, PASSWORD)
    shown("consent", consent.text)
    shown("device", (await browser.go("GET", "/device")).text)
    browser.forget_sign_in()  # to see /account's sign-in page
    account_login = await browser.go("GET", "/account")
    shown("account sign-in", account_login.text)
    account = await browser.submit(account_login, username=USER, password=PASSWORD)
    assert [f for f in parse_forms(account.text) if f.action == "/account/logout"]
    shown("account", account.text)
    shown("error", (await browser.go("GET", "/consent?request=nothing")).text)
    shown("404", (await browser.request("GET", "/no/such/page")).text)
    assert len(set(seen.values())) == 1  # one URL: cached once for all pages
