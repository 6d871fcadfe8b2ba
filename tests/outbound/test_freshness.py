"""How long a fetched document stays fresh: `expiry_from_headers` over cache headers."""

from __future__ import annotations

import email.utils

import pytest
from multidict import CIMultiDict

from oauthd.outbound.freshness import expiry_from_headers

NOW = 1_800_000_000.0


def _http_date(timestamp: float) -> str:
    return email.utils.formatdate(timestamp, usegmt=True)


@pytest.mark.parametrize(
    ("headers", "ttl"),
    [
        ([], 3600),
        ([("Cache-Control", "max-age=300")], 300),
        ([("Cache-Control", "public, max-age=600")], 600),
        ([("Cache-Control", 'max-age="120"')], 120),
        ([("Cache-Control", "max-age=5")], 60),
        ([("Cache-Control", "max-age=0")], 60),
        ([("Cache-Control", "max-age=999999999")], 86400),
        ([("Cache-Control", "max-age=soon")], 60),
        ([("Cache-Control", "no-store")], 0),
        ([("Cache-Control", "no-cache")], 0),
        ([("Cache-Control", "max-age=600, No-Cache")], 0),
        ([("Cache-Control", "max-age=600"), ("Cache-Control", "no-store")], 0),
        ([("Cache-Control", "max-age=300"), ("Age", "100")], 200),
        ([("Cache-Control", "max-age=300"), ("Expires", _http_date(NOW + 9000))], 300),
        ([("Expires", _http_date(NOW + 500))], 500),
        ([("Date", _http_date(600_000_000)), ("Expires", _http_date(600_000_120))], 120),
        ([("Expires", _http_date(NOW - 500))], 60),
        ([("Expires", "0")], 60),
    ],
)
def test_expiry_from_cache_headers(headers: list[tuple[str, str]], ttl: float) -> None:
    assert expiry_from_headers(CIMultiDict(headers), NOW) == NOW + ttl
