"""Waiting for something that happens in the background."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], within: float = 2.0, every: float = 0.001
) -> float:
    """Wait until `check()` (awaited when it is a coroutine) holds, asking every `every`
    seconds; how long that took. Fails after `within` seconds."""
    started = time.monotonic()
    while not await _holds(check()):
        if time.monotonic() - started > within:
            raise AssertionError(f"not within {within}s: {check}")
        await asyncio.sleep(every)
    return time.monotonic() - started


async def _holds(answer: bool | Awaitable[bool]) -> bool:
    return await answer if inspect.isawaitable(answer) else answer
