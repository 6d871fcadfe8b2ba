"""External services in tests: skip visibly when one is absent, fail when CI requires it."""

from __future__ import annotations

import os

import pytest

REQUIRE_SERVICES = os.environ.get("OAUTHD_REQUIRE_SERVICES") == "1"


def service_missing(reason: str, *, required: bool | None = None) -> None:
    """Skip (visibly) because an external server is absent; fail if services are required."""
    if REQUIRE_SERVICES if required is None else required:
        pytest.fail(f"{reason} (OAUTHD_REQUIRE_SERVICES=1)")
    pytest.skip(reason)
