"""The browser tests use the HTTP tests' harness (tests/http/http_harness.py): put it on the
path and have its asserts rewritten before the first import (this directory is collected
before tests/http). No tests/browser/__init__.py, for the reason in tests/http/conftest.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "http"))
pytest.register_assert_rewrite("http_harness")
