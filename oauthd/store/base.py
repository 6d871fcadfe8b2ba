"""The store contract: one small async interface that every backend implements.

Every backend runs the ONE contract suite in `tests/store/test_base_contract.py`; what it
checks is written here, where the interface is.

- A record whose `expires_at` is at or before the clock's `now()` is invisible: `get`, `take`
  and `update` behave as if it were absent, before any purge.
- `take` is an atomic read-and-delete: of two concurrent `take`s of one key, exactly one
  gets the record.
- `update` is an atomic compare-and-swap: no concurrent change is lost. Its function may be
  called more than once on shared backends (it must be pure: compute the new record from
  the one it is given, nothing else).
- Durable backends (`file`, `redis`, `postgres`) return the same records after `close`
  and a fresh open. A write that returned is durable (for `file` with
  `durability = "journal"`: fsynced before it returned).
- `scan` yields every live record once: a record live from the start of the scan to its
  end (not written meanwhile) is yielded exactly once; one added, changed or deleted while
  the scan runs may be yielded or not, in one of its versions, but never twice; a record
  already expired when the scan starts is never yielded. The memory and file backends
  give more: the table as it was at the start (a consistent view).
- A backend that cannot do a write or a read right now raises `Unavailable` (HTTP 503 with
  Retry-After, never a 500). It never half-applies a write it reports as failed, except
  that `file` keeps in memory a change whose fsync failed (see docs/persistence.md).
- `check` (for /readyz) never raises: it reports the backend unhealthy while it cannot
  serve, healthy again by itself once it can, without any other call in between.
- Every write takes `audit=` (`oauthd.audit.Audit`): the event that describes it, or a
  function of the record written (the new one of add/put/update, the removed one of
  take/delete). The record of it is durable with the change, in the same step (the file
  backend's journal batch, the shared backends' transaction): never one without the
  other. A write that changes nothing (update returning its argument, take or delete of
  nothing, a failed add) writes no record. Events without a change go through
  `Store.audit.append`.
- `counters` (`Counters`, the rate limits' fixed windows) are shared by every instance on
  `redis` and `postgres`, in process on `memory` and `file`; see `Counters`.
"""

from __future__ import annotations

import asyncio
import math
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from oauthd.audit import Audit, AuditTrail
from oauthd.model import (
    AccountLink,
    AccountSession,
    AuthCode,
    Client,
    Consent,
    DeviceFlow,
    Grant,
    McpSession,
    PendingAuthorization,
    Record,
    RegistrationGroup,
    SigningKey,
    UsedAssertion,
)

R = TypeVar("R", bound=Record)


def is_live(record: Record, now: float) -> bool:
    """The one expiry rule: a record whose `expires_at` is at or before `now` is gone."""
    return record.expires_at is None or record.expires_at > now


class StoreError(Exception):
    """Base of the errors a store raises on purpose."""


class Conflict(StoreError):
    """`add` found a live record under that key."""


class Unavailable(StoreError):
    """The backend cannot serve this request now; the client should retry later."""

    def __init__(self, reason: str, retry_after: float = 5.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass(slots=True, frozen=True)
class StoreStatus:
    backend: str
    healthy: bool
    detail: str | None = None  # why not healthy (or, while healthy, what is degraded)


T = TypeVar("T")

PROBE_EVERY = 1.0  # seconds a shared backend's health answer is reused (see `Probe`)


async def finish_within(operation: Awaitable[T], seconds: float) -> T:
    """`operation`'s result, or TimeoutError after `seconds`, and really then: the
    operation runs as a task of its own, which is cancelled and left to wind down in the
    background rather than awaited. (A client library's cleanup after a cancellation may
    itself wait on a silent server: psycopg cancels the query server-side and waits up to
    10 s; redis-py sends UNWATCH and waits for the answer. `asyncio.timeout` would wait
    for that too.) Cancelling the caller cancels the operation the same way."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(operation)
    waiter = loop.create_future()  # done when the task is, or at the deadline

    def wake(_: object) -> None:
        if not waiter.done():
            waiter.set_result(None)

    task.add_done_callback(wake)
    timer = loop.call_later(seconds, wake, None)
    try:
        await waiter
    except BaseException:  # the caller was cancelled
        _abandon(task)
        raise
    finally:
        timer.cancel()
        task.remove_done_callback(wake)
    if not task.done():
        _abandon(task)
        raise TimeoutError
    return task.result()


def _abandon(task: asyncio.Future[Any]) -> None:
    task.cancel()
    task.add_done_callback(_ignore_outcome)


def _ignore_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" warning


class Probe:
    """A shared backend's health, found out by pinging its server: at most one ping per
    `every` seconds, shared by concurrent and repeated checks (load balancers poll /readyz
    of every instance often; the backend must not feel it). The ping is bounded by the
    store's own timeout, so a check never waits longer than that."""

    def __init__(self, ping: Callable[[], Awaitable[None]], every: float = PROBE_EVERY) -> None:
        self._ping = ping
        self._every = every
        self._lock = asyncio.Lock()
        self._checked_at = -math.inf
        self._problem: str | None = None

    async def problem(self) -> str | None:
        """None if the server answered the last ping (at most `every` seconds ago), else
        why it did not."""
        async with self._lock:  # a second caller waits for the ping under way, then reuses it
            if time.monotonic() - self._checked_at >= self._every:
                try:
                    await self._ping()
                    self._problem = None
                except Unavailable as exc:
                    self._problem = exc.reason
                self._checked_at = time.monotonic()
            return self._problem


@dataclass(slots=True, frozen=True)
class Count:
    """A counter in its current window."""

    value: int  # events counted in the window (0 when none is open)
    resets_in: float  # seconds until the window ends (0.0 when none is open)


class Counters(ABC):
    """Fixed-window event counters, for rate limits (failed sign-ins, registrations, wrong
    device codes, failed client authentication).

    - `add(key, window)` is atomic: of N concurrent adds to one key, on any number of
      instances sharing the backend, each gets a different count, and the last gets N
      more than before. The first add after a window ended opens a new one of `window`
      seconds by the store's clock, counting from 1.
    - `take_back(key)` undoes one `add` of the current window (an attempt counted before
      it was checked, that turned out not to count): atomic like `add`, never below 0,
      nothing when no window is open (it never opens one).
    - `read` never changes a counter; `reset` ends its window (the next add counts 1).
    - Counters are not records: never journaled or snapshotted (the `file` backend keeps
      them in process: a restart forgetting a rate limit is harmless), never in `scan` or
      `count`. Shared backends delete a counter when its window ends.
    - A backend that cannot count right now raises `Unavailable`, like a table.
    """

    @abstractmethod
    async def add(self, key: str, window: float) -> Count:
        """Count one event under `key`; the window it landed in, this event included."""

    @abstractmethod
    async def take_back(self, key: str) -> None:
        """One event less in `key`'s current window, if one is open and above 0."""

    @abstractmethod
    async def read(self, key: str) -> Count:
        """The count of `key`'s current window, unchanged."""

    @abstractmethod
    async def reset(self, key: str) -> None:
        """End `key`'s window now."""


class Table(ABC, Generic[R]):
    """Records of one kind, by key."""

    kind: str

    @abstractmethod
    async def get(self, key: str) -> R | None:
        """The live record under `key`, or None (absent or expired)."""

    @abstractmethod
    async def add(self, record: R, *, audit: Audit | None = None) -> None:
        """Insert; raise `Conflict` if a live record has that key."""

    @abstractmethod
    async def put(self, record: R, *, audit: Audit | None = None) -> None:
        """Insert or replace whole."""

    async def put_many(self, records: Sequence[R]) -> None:
        """`put` each record, unaudited (`oauthd state copy`). A shared backend writes
        them in one round trip instead of one each; not atomic as a whole."""
        await asyncio.gather(*(self.put(record) for record in records))

    @abstractmethod
    async def take(self, key: str, *, audit: Audit | None = None) -> R | None:
        """Atomically return and delete the live record (single-use codes), or None."""

    @abstractmethod
    async def update(
        self, key: str, change: Callable[[R], R], *, audit: Audit | None = None
    ) -> R | None:
        """Atomically replace the live record with `change(record)` and return the result.

        None when the key is absent or expired (`change` is not called). When `change`
        returns its argument unchanged (the same object), nothing is written. `change`
        must be pure: shared backends may call it again after a concurrent write.
        """

    @abstractmethod
    async def delete(self, key: str, *, audit: Audit | None = None) -> bool:
        """Remove the record; True if a live record was there."""

    @abstractmethod
    def scan(self) -> AsyncIterator[R]:
        """Every live record, in no particular order (`async for record in t.scan()`),
        without blocking the event loop for long: a chunk per turn.

        For listings (the admin socket, a user's connected apps), not for hot paths: it
        walks the whole table. Each record once; see the module docstring for what
        concurrent writes may do to it. A consumer may stop early: nothing stays locked
        (the memory backend gathers its frozen view before handing out the first record).
        """

    @abstractmethod
    async def count(self) -> int:
        """How many records are stored, expired ones not yet purged included."""

    @abstractmethod
    async def purge_expired(self) -> int:
        """Delete this table's expired records; return how many. Never needed for
        correctness (reads filter expiry); a record replaced by a live one meanwhile stays."""


class Store(ABC):
    """All tables of one backend, plus housekeeping."""

    clients: Table[Client]
    consents: Table[Consent]
    pending: Table[PendingAuthorization]
    codes: Table[AuthCode]
    grants: Table[Grant]
    devices: Table[DeviceFlow]
    mcp_sessions: Table[McpSession]
    registration_groups: Table[RegistrationGroup]
    account_sessions: Table[AccountSession]
    signing_keys: Table[SigningKey]
    used_assertions: Table[UsedAssertion]
    account_links: Table[AccountLink]
    counters: Counters
    audit: AuditTrail

    def tables(self) -> tuple[Table[Any], ...]:
        return (
            self.clients,
            self.consents,
            self.pending,
            self.codes,
            self.grants,
            self.devices,
            self.mcp_sessions,
            self.registration_groups,
            self.account_sessions,
            self.signing_keys,
            self.used_assertions,
            self.account_links,
        )

    async def census(self) -> dict[str, int]:
        """How many records each table stores (`count`, expired ones not yet purged
        included), by kind: for monitoring. A shared backend counts them all in one pass."""
        return {table.kind: await table.count() for table in self.tables()}

    async def purge_expired(self) -> int:
        """Delete expired records of every table, one table after the other; return how
        many. Never needed for correctness."""
        total = 0
        for table in self.tables():
            total += await table.purge_expired()
        return total

    @abstractmethod
    async def ping(self) -> None:
        """Raise `Unavailable` unless the backend can serve reads and writes now."""

    def status(self) -> StoreStatus:
        """Backend name and health, without I/O (for logs; for a shared backend it only
        reflects the last call)."""
        return StoreStatus(backend=type(self).__name__, healthy=True)

    async def check(self) -> StoreStatus:
        """Backend name and health now, for /readyz; never raises. The memory and file
        backends know it without I/O (`status`); a shared backend pings its server (within
        its timeout, at most once a second: `Probe`), so that /readyz turns false while the
        server is down and true again by itself once it answers."""
        return self.status()

    @abstractmethod
    async def close(self) -> None:
        """Release the backend (file: final snapshot, unlock). Idempotent."""
