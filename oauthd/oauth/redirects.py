"""Redirect URI rules: what a client may register, and where /authorize may send the browser.

Registration (RFC 7591 s2; MCP AUTHZ "Communication Security"; RFC 8252 s7.1, s8.4):
- an absolute URI of at most 2000 ASCII characters, with no whitespace, control characters,
  backslashes, fragment or userinfo;
- `https` with a host (only a listed host when an allowlist is configured);
- `http` only for the loopback hosts 127.0.0.1, [::1] and localhost (any port);
- a private-use scheme (`cursor://...`) only when the operator lists it;
- `javascript:`, `data:`, `file:` and similar schemes never, whatever the operator lists.

Matching (MCP AUTHZ "Open Redirection"; RFC 8252 s7.3; OAuth 2.1 s2.3.1 "simple string
comparison"): the requested URI must equal one registered URI character for character (case
included), except that the port of an `http` loopback redirect may differ.

Hosts are compared as written: no IDNA, no percent-decoding, no numeric IPv4 forms, so two
spellings of one address never match, and a spelling that could hide another host is refused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_LENGTH = 2000
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "[::1]", "localhost"})
# Never a redirect, whatever an operator lists as "private-use": schemes that run code or read
# local data in the browser, and standard schemes that are not web pages.
NEVER_ALLOWED_SCHEMES = frozenset(
    {"javascript", "vbscript", "data", "blob", "file", "filesystem", "about", "view-source"}
    | {"ftp", "ws", "wss", "mailto"}
)
_DNS_HOST = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?")
_IPV6_HOST = re.compile(r"\[[0-9a-f:.]+\]")
_PORT = re.compile(r"[1-9][0-9]{0,4}")
_SHOWN_LENGTH = 80
_DESCRIPTION_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F)) - {'"', "\\"}


def _shown(text: str) -> str:
    """`text` quoted for an error_description: shortened, and only the characters RFC 6749
    s5.2 allows there (no '"' or '\\'), so a hostile URI cannot shape the message."""
    short = text if len(text) <= _SHOWN_LENGTH else text[:_SHOWN_LENGTH] + "..."
    return "'" + "".join(c if c in _DESCRIPTION_CHARS else "?" for c in short) + "'"


class _Rejected(ValueError):
    """A redirect URI that may not be used; `droppable` when only its private scheme is unlisted."""

    def __init__(self, reason: str, *, droppable: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.droppable = droppable


@dataclass(slots=True, frozen=True)
class _Redirect:
    """A redirect URI split into the parts matching compares; equal values mean "same URI"."""

    scheme: str  # lower-cased
    has_authority: bool
    host: str  # lower-cased, IPv6 in brackets, "" when absent
    port: str  # as written, "" when absent
    rest: str  # path and query exactly as written (case-sensitive, "?" kept)

    @property
    def is_loopback(self) -> bool:
        return self.scheme in ("http", "https") and self.host in LOOPBACK_HOSTS

    @property
    def port_may_vary(self) -> bool:
        """RFC 8252 s7.3, extended to `localhost` because Claude Code registers it."""
        return self.scheme == "http" and self.host in LOOPBACK_HOSTS


def _check_characters(uri: str) -> None:
    if len(uri) > MAX_LENGTH:
        raise _Rejected(f"the URI is longer than {MAX_LENGTH} characters")
    for position, char in enumerate(uri):
        if ord(char) <= 0x20 or ord(char) == 0x7F:
            raise _Rejected(f"the URI has whitespace or a control character at position {position}")
        if ord(char) > 0x7E:
            raise _Rejected(f"the URI has a non-ASCII character at position {position}")
        if char == "\\":
            # Browsers read "\" as "/" in http(s) URLs, urlsplit does not: the two disagree
            # on the host of "http://localhost\@evil.example/".
            raise _Rejected(f"the URI has a backslash at position {position}")


def _split_host_port(netloc: str) -> tuple[str, str | None]:
    """(host, port); port None when there is no ':' after the host."""
    if netloc.startswith("["):
        end = netloc.find("]") + 1
        host, tail = netloc[:end], netloc[end:]
        if tail and not tail.startswith(":"):
            raise _Rejected(f"the URI has text after the IPv6 host: {_shown(tail)}")
        return host.lower(), tail[1:] if tail else None
    host, colon, port = netloc.partition(":")
    return host.lower(), port if colon else None


def _check_host(host: str) -> None:
    if "%" in host:
        raise _Rejected(f"the host must not be percent-encoded: {_shown(host)}")
    if host and not (_DNS_HOST.fullmatch(host) or _IPV6_HOST.fullmatch(host)):
        raise _Rejected(f"the host is not a DNS name or IP address: {_shown(host)}")


def _check_port(port: str) -> None:
    if not _PORT.fullmatch(port) or int(port) > 65535:
        raise _Rejected(
            f"the port must be a number from 1 to 65535 without leading zeros: {_shown(port)}"
        )


def _parse_authority(netloc: str) -> tuple[str, str]:
    if "@" in netloc:
        raise _Rejected("the URI must not have userinfo (a 'user@' before the host)")
    host, port = _split_host_port(netloc)
    _check_host(host)
    if port is not None:
        _check_port(port)
    return host, port or ""


def _parse(uri: str) -> _Redirect:
    """Split a redirect URI for comparison; raise `_Rejected` naming the first flaw."""
    _check_characters(uri)
    try:
        scheme, netloc = urlsplit(uri)[:2]
    except ValueError as exc:
        raise _Rejected(f"the URI does not parse: {_shown(str(exc))}") from None
    if not scheme:
        raise _Rejected("the URI is not absolute (it has no scheme)")
    if scheme in NEVER_ALLOWED_SCHEMES:
        raise _Rejected(f"the scheme {_shown(scheme)} is never allowed for redirects")
    if "#" in uri:
        raise _Rejected("the URI must not have a fragment ('#')")
    after_scheme = uri[len(scheme) + 1 :]
    if not after_scheme.startswith("//"):
        return _Redirect(scheme, False, "", "", after_scheme)
    host, port = _parse_authority(netloc)
    return _Redirect(scheme, True, host, port, after_scheme[2 + len(netloc) :])


def _check_policy(
    redirect: _Redirect, private_schemes: frozenset[str], https_hosts: frozenset[str] | None
) -> None:
    scheme, host = redirect.scheme, redirect.host
    if scheme in ("http", "https") and not host:
        raise _Rejected(f"an {scheme} redirect URI needs a host")
    if scheme == "https" and https_hosts is not None and host not in https_hosts:
        raise _Rejected(f"the https host {_shown(host)} is not in the allowed list")
    if scheme == "http" and host not in LOOPBACK_HOSTS:
        raise _Rejected(
            f"http is only allowed for the loopback hosts 127.0.0.1, [::1] and localhost "
            f"(not {_shown(host)}); use https"
        )
    if scheme not in ("http", "https") and scheme not in private_schemes:
        raise _Rejected(f"the private-use scheme {_shown(scheme)} is not allowed", droppable=True)


def _check(
    uri: str, private_schemes: frozenset[str], https_hosts: frozenset[str] | None
) -> _Rejected | None:
    schemes = frozenset(scheme.lower() for scheme in private_schemes)
    hosts = None if https_hosts is None else frozenset(host.lower() for host in https_hosts)
    try:
        _check_policy(_parse(uri), schemes, hosts)
    except _Rejected as rejected:
        return rejected
    return None


def check_registered(
    uri: str,
    *,
    allowed_private_schemes: frozenset[str],
    allowed_https_hosts: frozenset[str] | None = None,
) -> str | None:
    """None if a client may register `uri`, else why not (an `invalid_redirect_uri` description).

    `allowed_https_hosts` of None means any https host.
    """
    rejected = _check(uri, allowed_private_schemes, allowed_https_hosts)
    return None if rejected is None else rejected.reason


@dataclass(slots=True, frozen=True)
class RegistrationRedirects:
    """The outcome of checking a registration's `redirect_uris`.

    `accepted` are the usable URIs in request order; `rejected` lists every other URI with its
    reason; `fatal` is the first rejection that fails the whole registration, if any.
    """

    accepted: tuple[str, ...]
    rejected: tuple[tuple[str, str], ...]
    fatal: tuple[str, str] | None

    @property
    def failure(self) -> str | None:
        """The `invalid_redirect_uri` description if the registration must fail, else None."""
        if self.fatal is not None:
            uri, reason = self.fatal
            return f"redirect URI {_shown(uri)} rejected: {reason}"
        if not self.accepted and not self.rejected:
            return "redirect_uris must list at least one URI"
        if not self.accepted:
            uri, reason = self.rejected[0]
            return f"no usable redirect URI; {_shown(uri)} rejected: {reason}"
        return None


def filter_registration(
    uris: Sequence[str],
    *,
    allowed_private_schemes: frozenset[str],
    allowed_https_hosts: frozenset[str] | None = None,
) -> RegistrationRedirects:
    """Check a registration's `redirect_uris` under the Cursor rule.

    Cursor registers `cursor://...`, an `https` callback and a loopback URI in one request.
    A URI whose only flaw is an unlisted private-use scheme is therefore dropped (and reported
    in `rejected`) while the others are kept. Any other bad URI (a non-loopback `http` host, a
    fragment, `javascript:`, an unlisted https host...) fails the whole registration, because
    silently registering fewer URIs than a client asked for hides real mistakes. An empty
    list, or one where every URI was dropped, fails too. Check `failure` before registering.
    """
    accepted: list[str] = []
    rejected: list[tuple[str, str]] = []
    fatal: tuple[str, str] | None = None
    for uri in uris:
        problem = _check(uri, allowed_private_schemes, allowed_https_hosts)
        if problem is None:
            accepted.append(uri)
            continue
        rejected.append((uri, problem.reason))
        if fatal is None and not problem.droppable:
            fatal = (uri, problem.reason)
    return RegistrationRedirects(tuple(accepted), tuple(rejected), fatal)


def _parse_or_none(uri: str) -> _Redirect | None:
    try:
        return _parse(uri)
    except _Rejected:
        return None


def _without_port(uri: str, redirect: _Redirect) -> str:
    """`uri` as written with its ":port" (if any) removed; only for a parsed loopback URI."""
    if not redirect.port:
        return uri
    authority = uri[: len(uri) - len(redirect.rest)]
    return authority[: -len(redirect.port) - 1] + redirect.rest


def _same_redirect(registered: str, requested: str, wanted: _Redirect) -> bool:
    if registered == requested:
        return True
    if not wanted.port_may_vary:
        return False
    candidate = _parse_or_none(registered)
    if candidate is None or not candidate.port_may_vary:
        return False
    return _without_port(registered, candidate) == _without_port(requested, wanted)


def redirect_matches(registered: Sequence[str], requested: str) -> bool:
    """True if `requested` is one of the `registered` redirect URIs (see the module docstring).

    A requested URI that is malformed (fragment, userinfo, bad port, unparseable...) never
    matches, nor does a registered one.
    """
    wanted = _parse_or_none(requested)
    if wanted is None:
        return False
    return any(
        _parse_or_none(uri) is not None and _same_redirect(uri, requested, wanted)
        for uri in registered
    )


def is_loopback_redirect(uri: str) -> bool:
    """True for an http(s) redirect to 127.0.0.1, [::1] or localhost: an app on the user's
    own computer, which the consent page should say (MCP AUTHZ "Localhost Redirect URI Risks").
    """
    redirect = _parse_or_none(uri)
    return redirect is not None and redirect.is_loopback


def redirect_host(uri: str) -> str:
    """What the consent page names as the destination: the host of an http(s) URI (lower-cased,
    no port), or scheme and authority of a private-use one (`cursor://anysphere.cursor-mcp`,
    `com.example.app:`). Raises ValueError for a malformed URI.
    """
    redirect = _parse(uri)
    if redirect.scheme in ("http", "https"):
        return redirect.host
    if not redirect.has_authority:
        return f"{redirect.scheme}:"
    port = f":{redirect.port}" if redirect.port else ""
    return f"{redirect.scheme}://{redirect.host}{port}"
