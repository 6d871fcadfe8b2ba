"""The counters of the memory and file backends: fixed windows in process memory.

In process on purpose for these two backends: one process serves them, a restart
forgetting a rate limit is harmless, and a counter never costs a journal write."""

from __future__ import annotations

from dataclasses import dataclass

from oauthd.clock import Clock
from oauthd.store.base import Count, Counters

MAX_KEYS = 100_000  # bound memory under a flood of distinct keys
NO_WINDOW = Count(0, 0.0)


@dataclass(slots=True)
class _Window:
    ends: float
    count: int


class MemoryCounters(Counters):
    """Every operation is one synchronous step, which is what makes `add` atomic here."""

    def __init__(self, clock: Clock, max_keys: int = MAX_KEYS) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._windows: dict[str, _Window] = {}

    def _open(self, key: str, now: float) -> _Window | None:
        window = self._windows.get(key)
        return window if window is not None and window.ends > now else None

    async def add(self, key: str, window: float) -> Count:
        now = self._clock.now()
        current = self._open(key, now)
        if current is None:
            if key not in self._windows and len(self._windows) >= self._max_keys:
                self._forget_old(now)
            current = self._windows[key] = _Window(now + window, 0)
        current.count += 1
        return Count(current.count, current.ends - now)

    async def take_back(self, key: str) -> None:
        current = self._open(key, self._clock.now())
        if current is not None and current.count > 0:
            current.count -= 1

    async def read(self, key: str) -> Count:
        now = self._clock.now()
        current = self._open(key, now)
        return NO_WINDOW if current is None else Count(current.count, current.ends - now)

    async def reset(self, key: str) -> None:
        self._windows.pop(key, None)

    def __len__(self) -> int:
        return len(self._windows)

    def _forget_old(self, now: float) -> None:
        """Drop the ended windows; if none has ended, the older half (by insertion)."""
        ended = [k for k, w in self._windows.items() if w.ends <= now]
        for key in ended or list(self._windows)[: self._max_keys // 2]:
            del self._windows[key]
