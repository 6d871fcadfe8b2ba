"""Fixed-window rate limits, counted in the store (`Store.counters`): in process on the
memory and file backends, shared by every instance on Redis and PostgreSQL.

Counters are touched only by what they limit: a sign-in attempt and a device code lookup
(counted before they are checked, taken back when right), a registration, a failed client
authentication (counted after it failed); never by a bearer check or a proxied request.

When the store cannot count (`Unavailable`), the limits are counted in this process until
it can again: they fail over, neither open (an outage of the shared backend would lift
every limit, and an attacker who can slow it down would choose that) nor closed (a 503 for
every sign-in while the rest of the service may still work, e.g. /account's sign-in, which
needs no record). Each instance then enforces the limit on its own: at most N times the
limit with N instances, until the backend answers again."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from oauthd.clock import Clock
from oauthd.config import Config
from oauthd.oauth.errors import OAuthError, page_error
from oauthd.store import Counters, MemoryCounters, Unavailable

log = logging.getLogger("oauthd.ratelimit")

T = TypeVar("T")

FALLBACK_LOG_EVERY = 60.0  # seconds between two "counting in process" warnings
RETRY_SHARED_AFTER = 1.0  # seconds of counting in process before the store is tried again
MAX_KNOWN_OVER = 10_000  # keys remembered as over their limit (see `Limiter.known_over`)


@dataclass(slots=True, frozen=True)
class Limit:
    """At most `limit` events per `window` seconds per key; `name` keeps limits apart."""

    name: str
    limit: int
    window: float


def retry_after(seconds: float) -> dict[str, str]:
    """The Retry-After header of a 429: whole seconds, at least 1."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def too_many(description: str, seconds: float, *, page: bool = False) -> OAuthError:
    """A 429 with Retry-After: an HTML page for a person, else JSON."""
    if page:
        error = page_error("too_many_requests", description, 429)
        error.headers.update(retry_after(seconds))
        return error
    return OAuthError("too_many_requests", description, 429, headers=retry_after(seconds))


class Limiter:
    def __init__(self, shared: Counters, clock: Clock) -> None:
        self._shared = shared
        self._clock = clock
        self._local = MemoryCounters(clock)
        self._warned_at = -math.inf
        self._shared_down_until = -math.inf  # time.monotonic(): the store failed, wait
        self._known_over: dict[tuple[str, str], float] = {}

    async def admit(self, limit: Limit, key: str) -> float | None:
        """Count one attempt before it is checked; the seconds to wait if it is over
        `limit` (refuse it unchecked), else None. Counting first is what bounds the
        attempts checked even when many arrive at once: each gets its own count. An
        attempt that turns out not to count (a right password) is `take_back`."""
        count = await self._counted(lambda c: c.add(f"{limit.name}:{key}", limit.window))
        return count.resets_in if count.value > limit.limit else None

    async def take_back(self, limit: Limit, key: str) -> None:
        await self._counted(lambda c: c.take_back(f"{limit.name}:{key}"))

    async def count(self, limit: Limit, key: str) -> float | None:
        """Count one failure found after the fact; the seconds to wait if `key` has now
        used up `limit` (this one included), else None; remembered for `known_over`."""
        count = await self._counted(lambda c: c.add(f"{limit.name}:{key}", limit.window))
        if count.value < limit.limit:
            return None
        self._remember_over(limit, key, count.resets_in)
        return count.resets_in

    async def forget(self, limit: Limit, key: str) -> None:
        await self._counted(lambda c: c.reset(f"{limit.name}:{key}"))

    def known_over(self, limit: Limit, key: str) -> float | None:
        """Without I/O: the seconds to wait if this process saw `key` use up `limit`.
        For checks on paths that must not touch the store when all is well (client
        authentication at /token): an instance learns of the limit at the first failure
        it counts after the others used it up, so with N instances at most N - 1 events
        more than the limit get through per window."""
        until = self._known_over.get((limit.name, key))
        if until is None:
            return None
        left = until - self._clock.now()
        if left <= 0:
            del self._known_over[(limit.name, key)]
            return None
        return left

    def _remember_over(self, limit: Limit, key: str, seconds: float) -> None:
        if len(self._known_over) >= MAX_KNOWN_OVER:
            now = self._clock.now()
            self._known_over = {k: t for k, t in self._known_over.items() if t > now}
            if len(self._known_over) >= MAX_KNOWN_OVER:
                self._known_over.clear()
        self._known_over[(limit.name, key)] = self._clock.now() + seconds

    async def _counted(self, operation: Callable[[Counters], Awaitable[T]]) -> T:
        if time.monotonic() < self._shared_down_until:
            return await operation(self._local)
        try:
            return await operation(self._shared)
        except Unavailable as exc:
            # for a moment, do not wait on the store again: one timeout per request would
            # double the time of every sign-in and registration during an outage
            self._shared_down_until = time.monotonic() + RETRY_SHARED_AFTER
            self._warn(exc)
            return await operation(self._local)

    def _warn(self, exc: Unavailable) -> None:
        now = self._clock.now()
        if now - self._warned_at < FALLBACK_LOG_EVERY:
            return
        self._warned_at = now
        log.warning(
            "rate limits counted in this process: the store cannot count",
            extra={"event": "ratelimit.fallback", "reason": exc.reason},
        )


MINUTE = 60.0
TOTAL = "all"  # the key of a limit over every client address together


@dataclass(slots=True, frozen=True)
class Limits:
    """Every limit of the protocol, from the config (README, "Abuse limits")."""

    sign_in_user: Limit  # failed sign-ins per user, from unknown browsers
    sign_in_address: Limit  # failed sign-ins per client address, from unknown browsers
    sign_in_known_browser: Limit  # failed sign-ins per known browser (its cookie)
    registration: Limit  # registrations per client address
    device_address: Limit  # wrong device user codes per client address
    device_total: Limit  # wrong device user codes, every address together
    client_auth: Limit  # failed client authentications per client address

    @classmethod
    def from_config(cls, config: Config) -> Limits:
        login, oauth = config.login, config.oauth
        window = login.failure_window
        return cls(
            sign_in_user=Limit("login-user", login.max_failures, window),
            sign_in_address=Limit("login-address", login.max_failures_per_address, window),
            sign_in_known_browser=Limit(
                "login-browser", login.max_failures_per_known_browser, window
            ),
            registration=Limit("register", oauth.registrations_per_minute, MINUTE),
            device_address=Limit("device-address", oauth.device_guesses_per_minute, MINUTE),
            device_total=Limit("device-total", oauth.device_guesses_per_minute_total, MINUTE),
            client_auth=Limit("client-auth", oauth.client_auth_failures_per_minute, MINUTE),
        )
