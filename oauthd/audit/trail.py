"""A store's audit trail: where records go, durable with the state.

Every backend has one (`Store.audit`). A change that has an event takes it as the table
write's `audit=` and the backend writes both in one step (the file backend's journal
batch; a Redis MULTI or script; a PostgreSQL transaction); an event without a change
(a failed sign-in, a decision on a tool call) goes through `append`, durable when it
returns. Records never stay in memory beyond a bounded buffer.

Each durable record is also logged once as the line `audit.<event>` (logger
`oauthd.audit`), after it is durable.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable
from typing import Any

from oauthd.audit.chain import Chain
from oauthd.audit.event import AuditEvent
from oauthd.clock import Clock
from oauthd.log import AUDIT_LOGGER, audit_fast
from oauthd.log import audit as audit_line

log = logging.getLogger(__name__)

MEMORY_KEEP = 10_000  # records the memory trail keeps (the newest)
# events whose log line is a warning: someone may be attacking
WARNING_EVENTS = frozenset({"reuse_detected"})
WARNING_RESULTS = frozenset({"failure", "rate_limited"})


def default_chain_name(port: int | None = None) -> str:
    """An instance's chain name when `[audit] chain` is empty: the host name, and the port
    it listens on (two instances on one host share a backend, never a chain)."""
    host = socket.gethostname() or "oauthd"
    return host if port is None else f"{host}:{port}"


# One per forwarded call: logged at debug level only (the access log has a line for each
# request; the record is the account of the call, and a log line each would double the
# proxy's cost per call).
QUIET_EVENTS = frozenset({"call_decided", "call_completed"})
_audit_logger = logging.getLogger(AUDIT_LOGGER)
# One per refresh, the token endpoint's most frequent record: its line (never a warning)
# is written past the logging machinery, as the access log's is (`log.audit_fast`).
FAST_EVENTS = frozenset({"token_refreshed"})


def logs_durable(event: AuditEvent) -> bool:
    """Whether `log_durable(event)` would log anything (a call record is skipped, with no
    callback at all, unless the audit logger is at debug level)."""
    return event.event not in QUIET_EVENTS or _audit_logger.isEnabledFor(logging.DEBUG)


def log_durable(event: AuditEvent) -> None:
    """The log line of a record that is durable now."""
    if event.event in QUIET_EVENTS:
        if not _audit_logger.isEnabledFor(logging.DEBUG):
            return
        quiet: dict[str, Any] = event.fields()
        del quiet["event"]
        audit_line(event.event, event.event.replace("_", " "), level=logging.DEBUG, **quiet)
        return
    fields = event.fields()
    del fields["event"]
    message = str(fields.pop("message", event.event.replace("_", " ")))
    if event.event in FAST_EVENTS:
        audit_fast(event.event, message, dict(fields))
        return
    extra: dict[str, Any] = dict(fields)
    warns = event.event in WARNING_EVENTS or fields.get("result") in WARNING_RESULTS
    audit_line(event.event, message, level=logging.WARNING if warns else logging.INFO, **extra)


class AuditTrail(ABC):
    """Where one store's audit records go. `enabled` False: events are only logged."""

    chain: Chain
    enabled: bool = True

    @abstractmethod
    async def append(self, event: AuditEvent) -> None:
        """Write `event` as a record of its own; return once it is durable (`Unavailable`
        if it cannot be)."""

    def durable(self, event: AuditEvent) -> Awaitable[None]:
        """`append(event)` as an awaitable: where the backend can, `event` is sealed now
        and the awaitable is a future (no coroutine per record); awaiting it raises as
        `append` does. Await the awaitables in the order they were made."""
        return self.append(event)

    def append_soon(self, event: AuditEvent) -> None:
        """Write `event` without waiting for it (the outcome of a call already forwarded,
        a refusal); a failure is logged, never raised. At most MAX_UNWAITED are under way:
        past that (a backend slower than the refusals coming in) the record is dropped and
        logged, so that a flood of bad requests cannot pile up tasks without bound."""
        if unwaited_full():
            return
        track_unwaited(asyncio.get_running_loop().create_task(self.append(event)))

    async def close(self) -> None:
        """Flush what is buffered; idempotent."""
        return None


MAX_UNWAITED = 1024  # `append_soon` records under way at once
COMPLAIN_EVERY = 30.0  # seconds between two log lines about records not written

_pending: set[asyncio.Future[None]] = set()  # records nobody waits for, under way
_complaints = {"at": -COMPLAIN_EVERY, "suppressed": 0.0}


def _complain(message: str) -> None:
    now = time.monotonic()
    if now - _complaints["at"] < COMPLAIN_EVERY:
        _complaints["suppressed"] += 1
        return
    suppressed = int(_complaints["suppressed"])
    _complaints["suppressed"], _complaints["at"] = 0, now
    log.error(message, extra={"event": "audit_failed", "suppressed": suppressed})


def unwaited_full() -> bool:
    """MAX_UNWAITED records nobody waits for are under way: the next one is dropped
    (logged, at most once per COMPLAIN_EVERY)."""
    if len(_pending) < MAX_UNWAITED:
        return False
    _complain(f"audit record dropped: {MAX_UNWAITED} records are waiting already")
    return True


def track_unwaited(durable: asyncio.Future[None]) -> None:
    """Count a record nobody waits for among those `settle_pending` waits for; its
    failure is logged here (at most once per COMPLAIN_EVERY), never raised."""
    _pending.add(durable)
    durable.add_done_callback(_finished)


def _finished(durable: asyncio.Future[None]) -> None:
    _pending.discard(durable)
    if not durable.cancelled() and durable.exception() is not None:
        _complain(f"audit record not written: {durable.exception()}")


async def settle_pending() -> None:
    """Wait for the records `append_soon` started (at shutdown, and in tests)."""
    while _pending:
        await asyncio.gather(*list(_pending), return_exceptions=True)


class MemoryTrail(AuditTrail):
    """The memory backend's trail: sealed records in memory, the newest MEMORY_KEEP."""

    def __init__(self, clock: Clock, name: str = "memory", *, enabled: bool = True) -> None:
        self.chain = Chain(name)
        self.enabled = enabled
        self.lines: deque[bytes] = deque(maxlen=MEMORY_KEEP)
        self._clock = clock

    def note(self, event: AuditEvent) -> None:
        """Seal and keep `event` now (a change's record, in the change's synchronous step)."""
        if self.enabled:
            line, _ = self.chain.seal(event, self._clock.now())
            self.lines.append(line)
        log_durable(event)

    async def append(self, event: AuditEvent) -> None:
        self.note(event)
