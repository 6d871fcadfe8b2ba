"""The protocol package does no I/O of its own: importing all of it loads no HTTP library."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import importlib, pkgutil, sys
import oauthd.oauth
for module in pkgutil.iter_modules(oauthd.oauth.__path__):
    importlib.import_module(f"oauthd.oauth.{module.name}")
print(sorted({m.split(".")[0] for m in sys.modules} & {"aiohttp", "authlib"}))
"""


def test_oauth_package_imports_no_io_library() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
