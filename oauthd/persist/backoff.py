"""Pacing for a disk that keeps failing: growing delays between attempts, and at most one
log line per interval about the same trouble (with how many were held back)."""

from __future__ import annotations

import time
from collections.abc import Callable

FIRST_DELAY = 0.5
MAX_DELAY = 30.0
LOG_INTERVAL = 30.0


class Backoff:
    """0.5 s, 1 s, 2 s, ... up to `maximum`, until `reset` (after a success)."""

    def __init__(self, first: float = FIRST_DELAY, maximum: float = MAX_DELAY) -> None:
        self._first = first
        self._maximum = maximum
        self._next = first

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._maximum, delay * 2)
        return delay

    def reset(self) -> None:
        self._next = self._first


class Throttle:
    """`due()` is True at most once per `interval`; the calls refused meanwhile are counted
    and handed over (`take_suppressed`) with the next line that is written."""

    def __init__(
        self, interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval = interval
        self._clock = clock
        self._next = float("-inf")
        self._suppressed = 0

    def due(self) -> bool:
        now = self._clock()
        if now < self._next:
            self._suppressed += 1
            return False
        self._next = now + self._interval
        return True

    def take_suppressed(self) -> int:
        count, self._suppressed = self._suppressed, 0
        return count

    def reset(self) -> None:
        """The trouble is over: the next occurrence is logged at once."""
        self._next = float("-inf")
        self._suppressed = 0
