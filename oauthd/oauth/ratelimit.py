"""Fixed-window counters for failed logins, registrations and device-code guesses.

In process memory on purpose: a restart forgetting them is harmless, and they must cost
nothing on the hot path."""

from __future__ import annotations

from dataclasses import dataclass

from oauthd.clock import Clock

MAX_KEYS = 100_000  # bound memory under a flood of distinct keys


@dataclass(slots=True)
class _Window:
    started: float
    count: int


class RateLimiter:
    """At most `limit` events per `window` seconds per key."""

    def __init__(self, clock: Clock, limit: int, window: float) -> None:
        self._clock = clock
        self.limit = limit
        self.window = window
        self._windows: dict[str, _Window] = {}

    def _current(self, key: str) -> _Window:
        now = self._clock.now()
        window = self._windows.get(key)
        if window is None or now - window.started >= self.window:
            if len(self._windows) >= MAX_KEYS:
                self._forget_old(now)
            window = self._windows[key] = _Window(now, 0)
        return window

    def _forget_old(self, now: float) -> None:
        stale = [k for k, w in self._windows.items() if now - w.started >= self.window]
        for key in stale or list(self._windows)[: MAX_KEYS // 2]:
            del self._windows[key]

    def blocked(self, key: str) -> bool:
        return self._current(key).count >= self.limit

    def hit(self, key: str) -> bool:
        """Count one event; True if it is over the limit."""
        window = self._current(key)
        window.count += 1
        return window.count > self.limit

    def retry_after(self, key: str) -> float:
        window = self._current(key)
        return max(0.0, window.started + self.window - self._clock.now())

    def reset(self, key: str) -> None:
        self._windows.pop(key, None)
