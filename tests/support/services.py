"""External services in tests: skip visibly when one is absent, fail when CI requires it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
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


def _installed(package: Path) -> str | None:
    try:
        return str(json.loads((package / "package.json").read_text()).get("version"))
    except (OSError, ValueError):
        return None


def _mismatches(directory: Path, packages: Mapping[str, Path]) -> list[str]:
    pins = json.loads((directory / "package.json").read_text())["dependencies"]
    return [
        f"{name} {_installed(path) or 'missing'} (pinned {pins[name]})"
        for name, path in packages.items()
        if _installed(path) != str(pins[name])
    ]


def npm_packages(
    directory: Path, packages: Mapping[str, Path], needed_by: str, min_node: int = 0
) -> str:
    """`npm install` in `directory` unless each of `packages` (name: its installed dir)
    has the version its package.json pins; the `node` on PATH. Skips (fails with
    OAUTHD_REQUIRE_SERVICES=1) without node and npm or with a node older than `min_node`;
    fails when the install does."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(n for n, p in (("node", node), ("npm", npm)) if p is None)
        service_missing(f"{needed_by} needs {missing} (Node.js)")
    assert node is not None and npm is not None
    if min_node and ((major := node_major(node)) is None or major < min_node):
        service_missing(f"{needed_by} needs Node.js >= {min_node}, {node} is {major}")
    if _mismatches(directory, packages):
        proc = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund"],
            cwd=directory,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
        still = _mismatches(directory, packages)
        if proc.returncode != 0 or still:
            pytest.fail(
                f"`npm install` in {directory} failed (exit {proc.returncode}; "
                f"{', '.join(still)}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
            )
    return node


@dataclass(frozen=True, slots=True)
class StateRef:
    """Where one test's state lives: a private dir, and a unique name for shared servers
    (a key prefix, a schema). Reopening uses the same ref."""

    path: Path
    namespace: str
