"""What every page is sent with: the security headers (a strict CSP whose `form-action`
admits where a form's POST may be redirected), and the one stylesheet, versioned by its
digest."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from importlib import resources
from urllib.parse import urlsplit

STYLESHEET_PATH = "/static/oauthd.css"
STYLESHEET: bytes = resources.files("oauthd.http").joinpath("static/oauthd.css").read_bytes()
STYLESHEET_HASH = hashlib.sha256(STYLESHEET).hexdigest()[:16]
STYLESHEET_URL = f"{STYLESHEET_PATH}?v={STYLESHEET_HASH}"
# The URL carries the hash, so a changed stylesheet is a new URL: cache it for a year.
STYLESHEET_HEADERS = {
    "Content-Type": "text/css; charset=utf-8",
    "Cache-Control": "public, max-age=31536000, immutable",
    "ETag": f'"{STYLESHEET_HASH}"',
    "X-Content-Type-Options": "nosniff",
}

_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action {}; "
    "frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": _CSP.format("'self'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_NEVER_TARGETS = frozenset({"javascript", "data", "blob", "filesystem", "file", "about"})
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
_HOST_PORT = re.compile(r"[a-z0-9.-]+(:[0-9]{1,5})?|\[[0-9a-f:.]+\](:[0-9]{1,5})?")


def csp_source(url: str) -> str:
    """The CSP source expression admitting `url`: its origin for http(s), else its scheme
    (`cursor:`). Raises ValueError for anything that is not a plain absolute URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if not _SCHEME.fullmatch(scheme):
        raise ValueError(f"not an absolute URL: {url!r}")
    if scheme in _NEVER_TARGETS:
        raise ValueError(f"not a redirect target: {url!r}")
    if scheme not in ("http", "https"):
        return f"{scheme}:"
    host = parts.netloc.rpartition("@")[2].lower()
    if not _HOST_PORT.fullmatch(host):
        raise ValueError(f"unusable host in URL: {url!r}")
    return f"{scheme}://{host}"


def page_headers(form_targets: Iterable[str] = ()) -> dict[str, str]:
    """`PAGE_HEADERS`, with `form-action` also admitting each URL a form on this page may be
    redirected to. Chrome and Safari check `form-action` against every redirect that follows
    a submission, so a login or consent page whose POST ends in a redirect to the client's
    `redirect_uri` (or to an upstream IdP) must name that target here, or the browser stops."""
    sources = dict.fromkeys(["'self'", *(csp_source(url) for url in form_targets)])
    return {**PAGE_HEADERS, "Content-Security-Policy": _CSP.format(" ".join(sources))}
