"""External services in tests: skip visibly when one is absent, fail when CI requires it."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


def services_required() -> bool:
    """OAUTHD_REQUIRE_SERVICES=1 (CI): an absent external service fails the test."""
    return os.environ.get("OAUTHD_REQUIRE_SERVICES") == "1"


def service_missing(reason: str, *, required: bool | None = None) -> None:
    """Skip (visibly) because an external server is absent; fail if services are required."""
    if services_required() if required is None else required:
        pytest.fail(f"{reason} (OAUTHD_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def node_major(node: str | os.PathLike[str]) -> int | None:
    """The major version of the Node.js at `node` (None if it does not run)."""
    try:
        out = subprocess.run(
            [str(node), "--version"], capture_output=True, text=True, timeout=20, check=True
        ).stdout
        return int(out.strip().lstrip("v").split(".")[0])
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class StateRef:
    """Where one test's state lives: a private dir, and a unique name for shared servers
    (a key prefix, a schema). Reopening uses the same ref."""

    path: Path
    namespace: str
