"""Waiting for something that happens in the background."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def eventually(check: Callable[[], bool], within: float = 2.0) -> None:
    """Wait until `check()` holds; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {check}")
        await asyncio.sleep(0.001)
