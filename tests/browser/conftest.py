"""The browser tests use the HTTP tests' harness (tests/http/http_harness.py): put it on the
path and have its asserts rewritten before the first import (this directory is collected
before tests/http). No tests/browser/__init__.py, for the reason in tests/http/conftest.py."""

from __future__ import annotations
