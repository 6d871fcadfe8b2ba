"""Converters: (TOML value, where it sits) -> Python value, or raise `at.error(...)`."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from urllib.parse import urlsplit

from oauthd.config.schema import At, Converter, show
from oauthd.passwords import parse_password_hash

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: object) -> float:
    """Seconds in a duration such as "500ms", "30s", "10m", "2h", "30d"; must be > 0.

    Raises ValueError for anything else, including a non-string such as a bare 10.
    """
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f'expected a duration like "1s", got {show(text)}')
    seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
    if seconds <= 0:
        raise ValueError(f"must be greater than zero, got {show(text)}")
    return seconds


def string(value: object, at: At) -> str:
    if not isinstance(value, str):
        raise at.error(f"expected a string, got {show(value)}")
    return value


def duration(value: object, at: At) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise at.error(str(exc)) from None


def duration_or_off(value: object, at: At) -> float:
    """A duration, or "0s" for none (a window that can be turned off)."""
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is not None and float(match[1]) == 0:
        return 0.0
    return duration(value, at)


def choice(allowed: tuple[str, ...], later: tuple[str, ...] = ()) -> Converter:
    def convert(value: object, at: At) -> str:
        text = string(value, at)
        if text in later:
            supported = ", ".join(allowed)
            raise at.error(
                f"{show(text)} is not available in this version (supported: {supported})"
            )
        if text not in allowed:
            raise at.error(f"expected one of {', '.join(map(show, allowed))}, got {show(text)}")
        return text

    return convert


def path(value: object, at: At) -> Path:
    return at.base_dir / string(value, at)  # an absolute path replaces base_dir


def http_url(value: object, at: At) -> str:
    text = string(value, at)
    if not _is_http_url(text):
        raise at.error(f"expected an absolute http(s) URL, got {show(text)}")
    return text


def _is_http_url(text: str) -> bool:
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  # raises ValueError on a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def optional_url(value: object, at: At) -> str:
    text = string(value, at)
    return http_url(text, at).rstrip("/") if text else ""


def issuer(value: object, at: At) -> str:
    text = http_url(value, at)
    if "?" in text or "#" in text:
        raise at.error(f"must not have a query or fragment, got {show(text)}")
    parts = urlsplit(text)
    if parts.username is not None:
        raise at.error("must not contain a user name or password")  # not echoed: a secret
    if parts.path.strip("/"):
        raise at.error(
            f"must be an origin without a path (oauthd serves /authorize, /mcp, ... at its "
            f"root), got {show(text)}"
        )
    if parts.scheme != "https" and not _is_loopback(parts.hostname or ""):
        raise at.error(
            f"https is required unless the host is localhost or a loopback address, "
            f"got {show(text)}"
        )
    return text.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def username(value: object, at: At) -> str:
    text = string(value, at)
    if not text:
        raise at.error("must not be empty")
    if text.startswith("client:"):  # oauth/client_credentials.py: a client acting for itself
        raise at.error('must not start with "client:" (the names of clients acting for themselves)')
    return text


def password_hash(value: object, at: At) -> str:
    text = string(value, at)
    try:
        parse_password_hash(text)
    except ValueError as exc:
        raise at.error(str(exc)) from None
    return text


def boolean(value: object, at: At) -> bool:
    if not isinstance(value, bool):
        raise at.error(f"expected true or false, got {show(value)}")
    return value


def positive_int(value: object, at: At) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise at.error(f"expected a whole number of at least 1, got {show(value)}")
    return value


def count(value: object, at: At) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise at.error(f"expected a whole number of at least 0, got {show(value)}")
    return value


def words(value: object, at: At) -> tuple[str, ...]:
    """An array of distinct non-empty strings without spaces (scopes, schemes)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise at.error(f"expected an array of strings, got {show(value)}")
    for i, word in enumerate(value):
        if not word or any(c.isspace() for c in word):
            raise at.item(i).error(f"must be non-empty without spaces, got {show(word)}")
    return tuple(dict.fromkeys(value))


def scope_implications(value: object, at: At) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """A table scope -> the scopes it implies: `{ "files:write" = ["files:read"] }`."""
    if not isinstance(value, dict):
        raise at.error(
            f'expected a table like {{ "files:write" = ["files:read"] }}, got {show(value)}'
        )
    implications = []
    for scope, implied in value.items():
        if not scope or any(c.isspace() for c in scope):
            raise at.error(f"a scope must be non-empty without spaces, got {show(scope)}")
        implications.append((scope, words(implied, at.key(scope))))
    return tuple(implications)


def scope_descriptions(value: object, at: At) -> tuple[tuple[str, str], ...]:
    """A table scope -> words: `{ "files:write" = "Change your files" }`."""
    if not isinstance(value, dict):
        raise at.error(
            f'expected a table like {{ "files:write" = "Change your files" }}, got {show(value)}'
        )
    return tuple((scope, string(text, at.key(scope))) for scope, text in value.items())


def header_name(value: object, at: At) -> str:
    text = string(value, at)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", text) or text.lower() in (
        "authorization",
        "host",
        "cookie",
        "connection",
        "content-length",
        "transfer-encoding",
    ):
        raise at.error(f"expected an HTTP header name oauthd may set, got {show(text)}")
    return text


def origins(value: object, at: At) -> tuple[str, ...]:
    """Browser origins ("https://app.example", "http://localhost:6274") allowed at /mcp."""
    given = words(value, at)
    for i, origin in enumerate(given):
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise at.item(i).error(
                f'expected an origin like "https://app.example", got {show(origin)}'
            )
    return tuple(o.lower() for o in given)


def networks(value: object, at: At) -> tuple[str, ...]:
    """Addresses or networks ("127.0.0.1", "10.0.0.0/8", "::1"), normalised to CIDR."""
    given = words(value, at)
    out = []
    for i, word in enumerate(given):
        try:
            out.append(str(ipaddress.ip_network(word, strict=False)))
        except ValueError:
            raise at.item(i).error(f"expected an IP address or network, got {show(word)}") from None
    return tuple(out)


def redis_url(value: object, at: At) -> str:
    text = string(value, at)
    scheme = text.partition("://")[0]
    if scheme not in ("redis", "rediss", "unix") or not text.partition("://")[2]:
        # not echoed: the URL may hold a password
        raise at.error("expected a redis://, rediss:// or unix:// URL")
    return text
