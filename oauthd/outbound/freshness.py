"""How long a fetched document stays fresh, from its response's cache headers (RFC 9111
s4.2, as a private cache), within bounds."""

from __future__ import annotations

import email.utils
from datetime import UTC

from multidict import MultiMapping

MIN_TTL = 60.0
MAX_TTL = 24 * 3600.0
DEFAULT_TTL = 3600.0


def expiry_from_headers(
    headers: MultiMapping[str],
    fetched_at: float,
    *,
    min_ttl: float = MIN_TTL,
    max_ttl: float = MAX_TTL,
    default_ttl: float = DEFAULT_TTL,
) -> float:
    """When a response fetched at `fetched_at` stops being fresh (RFC 9111 s4.2, private
    cache). `no-store`/`no-cache` give `fetched_at` (not cached); otherwise `max-age` (less
    `Age`) or else `Expires` (against `Date`), clamped to [min_ttl, max_ttl]; neither gives
    `default_ttl`. An unparsable value counts as already stale, so it gets `min_ttl`."""
    directives = _cache_directives(headers)
    if "no-store" in directives or "no-cache" in directives:
        return fetched_at
    lifetime = _lifetime(headers, directives, fetched_at)
    if lifetime is None:
        lifetime = default_ttl
    return fetched_at + min(max(lifetime, min_ttl), max_ttl)


def _cache_directives(headers: MultiMapping[str]) -> dict[str, str]:
    directives: dict[str, str] = {}
    for value in headers.getall("Cache-Control", []):
        for item in value.split(","):
            name, _, argument = item.strip().partition("=")
            directives.setdefault(name.strip().lower(), argument.strip().strip('"'))
    return directives


def _lifetime(
    headers: MultiMapping[str], directives: dict[str, str], fetched_at: float
) -> float | None:
    if "max-age" in directives:
        age = _seconds(headers.get("Age", "0")) or 0
        return (_seconds(directives["max-age"]) or 0) - age
    if "Expires" in headers:
        expires = _http_date(headers["Expires"])
        date = _http_date(headers.get("Date", "")) or fetched_at
        return 0 if expires is None else expires - date
    return None


def _seconds(value: str) -> int | None:
    return int(value) if value.isdigit() else None


def _http_date(value: str) -> float | None:
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
